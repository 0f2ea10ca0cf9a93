import SteerCore
import SteerIndex

/// `recommend` with example items (`positive`/`negative`, docs/protocol.md "Recommend from examples"):
/// Qdrant's Recommend API strategies over the generation's embedding version.
extension RetrievalEngine {
    /// Candidates per positive for `best_score` (`ExampleStrategy.bestScoreCandidates`).
    public static func bestScoreCandidates(k: Int) -> Int { min(VectorIndex.maxK, ExampleStrategy.bestScoreCandidates(k: k)) }

    /// Ranks with the examples (see `ExampleStrategy`). The encoder's query (from `history`/`prompt`,
    /// when the request has either) is one more positive; the tag filter, the prompt's clause
    /// constraints and `excludeHistory` apply as for any `recommend`; the examples themselves never
    /// appear in the hits.
    ///
    /// `best_score` is computed exactly over a candidate set: the union of the index's top
    /// `bestScoreCandidates(k:)` items for every positive. With an exact index (Flat) an item is missed
    /// only when more than that many items rank above it for every positive and lose to a negative.
    ///
    /// - Throws: `.notFound` naming an example that is not in the store or has no vector of the
    ///   generation's embedding version; `.invalidRequest` when there is no positive at all (no positive
    ///   example, no history and no prompt); what the encoder and the index throw.
    func recommendFromExamples(_ request: RecommendRequest, in generation: Generation) throws(SteerError) -> Recommendation {
        let dimension = generation.dimension
        var positives: [[Float]] = []
        var clauses: [QueryClause] = []
        var unknownHistory: [ItemID] = []
        if !request.history.isEmpty || request.prompt != nil {
            let encoded = try encoder(generation).encode(history: request.history, prompt: request.prompt)
            guard encoded.vector.count == dimension, encoded.baseVector.count == dimension else {
                throw SteerError.internalError("query encoder returned \(encoded.vector.count)-d vector, expected \(dimension)")
            }
            positives.append(request.constraints == .hard ? encoded.baseVector : encoded.vector)
            clauses = encoded.clauses
            unknownHistory = encoded.unknownHistory
        }
        let examples = request.positive + request.negative
        let exampleIDs = try store.internalIDs(of: examples)
        var exampleLabels: [Int64] = []
        for (id, internalID) in zip(examples, exampleIDs) {
            guard let internalID else { throw SteerError.notFound("example item \(id) is not in the catalog") }
            exampleLabels.append(internalID)
        }
        let vectors = try store.vectors(internalIDs: exampleLabels, version: generation.embeddingVersion)
        var negatives: [[Float]] = []
        for (position, vector) in vectors.enumerated() {
            guard let vector, vector.count == dimension else {
                throw SteerError.notFound("example item \(examples[position]) has no vector of embedding version '\(generation.embeddingVersion)'")
            }
            if position < request.positive.count { positives.append(vector) } else { negatives.append(vector) }
        }
        guard !positives.isEmpty else {
            throw SteerError.invalid("recommend with examples needs a positive: give 'positive' ids, a history, a user or a prompt")
        }
        if generation.metric == .cosine {
            for index in positives.indices { Vectors.normalizeRows(&positives[index], dimension: dimension) }
            for index in negatives.indices { Vectors.normalizeRows(&negatives[index], dimension: dimension) }
        }

        var requiredGroups: [[String]] = []
        var excludedTags: [String] = []
        if request.constraints != .soft {
            for clause in clauses where !clause.tags.isEmpty {
                switch clause.polarity {
                case .positive: requiredGroups.append(clause.tags)
                case .negative: excludedTags.append(contentsOf: clause.tags)
                }
            }
        }
        var resolved = try resolveFilter(request.filter, extraRequired: requiredGroups, extraExcluded: excludedTags)
        resolved.excluded.formUnion(exampleLabels)
        if request.excludeHistory {
            let unknown = Set(unknownHistory)
            for internalID in try store.internalIDs(of: Array(Set(request.history + request.seen).subtracting(unknown))) {
                if let internalID { resolved.excluded.insert(internalID) }
            }
        }

        let ranked: [ScoredLabel]
        var plan = SearchPlan.unfiltered
        switch request.strategy {
        case .averageVector:
            let query = Self.averageVector(positives: positives, negatives: negatives, dimension: dimension)
            try Vectors.requireFinite(query, field: "the examples' average vector")
            let (lists, ran) = try searchPlanned(generation, query, k: request.k, nprobe: request.nprobe, efSearch: request.efSearch,
                                                 oversample: request.oversample, filter: resolved)
            ranked = lists[0]
            plan = ran
        case .bestScore:
            let fetch = Self.bestScoreCandidates(k: request.k)
            let (lists, ran) = try searchPlanned(generation, positives.flatMap { $0 }, k: fetch, nprobe: request.nprobe,
                                                 efSearch: request.efSearch, oversample: request.oversample, filter: resolved)
            plan = ran
            var seen = Set<Int64>()
            let candidates = lists.flatMap { $0.map(\.label) }.filter { seen.insert($0).inserted }
            let candidateVectors = try store.vectors(internalIDs: candidates, version: generation.embeddingVersion)
            var scored: [ScoredLabel] = []
            scored.reserveCapacity(candidates.count)
            for (label, stored) in zip(candidates, candidateVectors) {
                guard var vector = stored, vector.count == dimension else { continue }
                if generation.metric == .cosine { Vectors.normalizeRows(&vector, dimension: dimension) }
                scored.append(ScoredLabel(label: label, score: Self.bestScore(vector, positives: positives, negatives: negatives,
                                                                              metric: generation.metric)))
            }
            scored.sort { $0.score != $1.score ? $0.score > $1.score : $0.label < $1.label }
            ranked = Array(scored.prefix(request.k))
        }
        return Recommendation(hits: try hydrate([ranked])[0], clauses: clauses, unknownHistory: unknownHistory, plan: plan)
    }

    /// `2·mean(positives) − mean(negatives)`, or `mean(positives)` without negatives (Qdrant's
    /// `average_vector`); sums in example order.
    public static func averageVector(positives: [[Float]], negatives: [[Float]], dimension: Int) -> [Float] {
        func mean(_ rows: [[Float]]) -> [Float] {
            var sum = [Float](repeating: 0, count: dimension)
            for row in rows { for index in 0..<dimension { sum[index] += row[index] } }
            return sum.map { $0 / Float(rows.count) }
        }
        let positive = mean(positives)
        guard !negatives.isEmpty else { return positive }
        let negative = mean(negatives)
        return (0..<dimension).map { positive[$0] + positive[$0] - negative[$0] }
    }

    /// Qdrant's `best_score` of one candidate: `p` (its best score against a positive) when it beats
    /// `n` (its best against a negative), else `−n²`; `p` alone without negatives.
    public static func bestScore(_ candidate: [Float], positives: [[Float]], negatives: [[Float]], metric: Metric) -> Float {
        candidate.withUnsafeBufferPointer { item in
            func best(_ rows: [[Float]]) -> Float {
                var top = -Float.infinity
                for row in rows { top = max(top, row.withUnsafeBufferPointer { metric.score(item, $0) }) }
                return top
            }
            let positive = best(positives)
            guard !negatives.isEmpty else { return positive }
            let negative = best(negatives)
            return positive > negative ? positive : -(negative * negative)
        }
    }
}
