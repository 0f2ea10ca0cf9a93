import CBLAS
import Foundation
import SteerCore

/// A clause of a prompt after parsing, embedding and tag mapping.
public struct ParsedClause: Sendable, Equatable {
    public let text: String
    public let polarity: Polarity
    /// Indices into `DPRConfiguration.tags` (ascending), empty if the clause maps to no tag.
    public let tagIndices: [Int]
    /// The tag names of `tagIndices`.
    public let tags: [String]
    /// The clause's normalised MiniLM embedding (384 floats).
    public let embedding: [Float]
    /// Whether the embedding came from the cache.
    public let cached: Bool
}

/// Where the time of one encode went, in nanoseconds. `tokenize` and `minilm` cover uncached clauses only.
public struct EncodeTimings: Sendable, Equatable {
    public var parse: UInt64 = 0
    public var tokenize: UInt64 = 0
    public var minilm: UInt64 = 0
    public var tagMapping: UInt64 = 0
    public var backbone: UInt64 = 0
    /// Projection, fusion and experts of every clause.
    public var head: UInt64 = 0
    public var total: UInt64 = 0
}

/// The result of `DPRModel.encode`.
public struct DPRQuery: Sendable {
    /// q ∈ R^D: the vector to search with (inner product over `itemEmbeddings`): `h⁺ + λ · Σ_c Δ_c`.
    public let query: [Float]
    /// The hybrid mode's vector, `h⁺ + β · λ · Σ_c Δ_c` (its inner products are `β · q · V + (1 − β) · h⁺ · V`);
    /// equals `query` when β = 1 and `userVector` when β = 0 or without clauses.
    public let hybridQuery: [Float]
    /// h⁺ ∈ R^D: the backbone's user vector padded with `dAux` zeros (the no-prompt query).
    public let userVector: [Float]
    public let clauses: [ParsedClause]
    /// The history rows the backbone saw (the last `maxLen`).
    public let historyRows: [Int]
    public let timings: EncodeTimings
}

/// One ranked item.
public struct ScoredItem: Sendable, Equatable {
    public let row: Int
    public let id: ItemID
    public let score: Float
}

/// DPR inference: a `steer-dpr` v1 checkpoint (backbone, DPR head, item table, tag embeddings) plus
/// all-MiniLM-L6-v2 and the clause parser. Immutable after `load` except the clause-embedding cache,
/// which is thread-safe, so one instance serves concurrent encodes.
public final class DPRModel: Sendable {
    /// The longest accepted prompt, in UTF-8 bytes.
    public static let maxPromptBytes = 4096

    public let config: DPRConfiguration
    /// The catalog in embedding row order.
    public let catalog: [CatalogItem]
    /// `itemCount × indexDimension`, row-major: the vectors to index (`item_embeddings`).
    public let itemEmbeddings: [Float]
    /// `itemCount × d`: the backbone's input table (`backbone.input_embeddings`).
    public let inputEmbeddings: [Float]
    public let encoder: MiniLMEncoder
    public let tagMapper: TagMapper
    public let checkpointPath: String
    /// λ and β from the checkpoint's optional `steering.json` (identity without it).
    public let steering: DPRSteering
    /// Per row, the indices into `config.tags` of the item's tags (ascending).
    public let itemTagIndices: [[Int]]
    let rowsByID: [ItemID: Int]
    let backbone: any Backbone
    let head: DPRHead
    let cache: EmbeddingCache

    /// Loads and validates a checkpoint directory and the MiniLM folder.
    /// - Parameters:
    ///   - checkpoint: the directory with `config.json`, `model.safetensors`, `items.jsonl`.
    ///   - minilm: the folder with MiniLM's `model.safetensors` and `vocab.txt`.
    ///   - cacheCapacity: clause embeddings kept in the LRU cache (0 disables it).
    /// - Throws: `.notFound` for a missing file, `.corrupt` naming the file and tensor or key that is wrong
    ///   (also for an invalid optional `steering.json`).
    public static func load(checkpoint: String, minilm: String, cacheCapacity: Int = 4096) throws(SteerError) -> DPRModel {
        try DPRModel(checkpoint: checkpoint, encoder: try MiniLMEncoder(directory: minilm), cacheCapacity: cacheCapacity)
    }

    /// Loads a checkpoint sharing an already loaded encoder (MiniLM is 90 MB).
    public init(checkpoint: String, encoder: MiniLMEncoder, cacheCapacity: Int = 4096) throws(SteerError) {
        checkpointPath = checkpoint
        let config = try DPRConfiguration(directory: checkpoint)
        self.config = config
        steering = try DPRSteering(directory: checkpoint)
        self.encoder = encoder
        let itemsPath = checkpoint + "/items.jsonl"
        let catalog = try CatalogItem.parseCatalog(try readFile(itemsPath), path: itemsPath)
        guard catalog.count == config.itemCount else {
            throw SteerError(.corrupt, "\(itemsPath): \(catalog.count) items, config.json says n_items \(config.itemCount)")
        }
        self.catalog = catalog
        var rows: [ItemID: Int] = [:]
        for (row, item) in catalog.enumerated() { rows[item.id] = row }
        rowsByID = rows
        let tagIndex = Dictionary(config.tags.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        itemTagIndices = catalog.map { item in Array(Set(item.tags.compactMap { tagIndex[$0] })).sorted() }

        let file = try SafeTensorsFile(path: checkpoint + "/model.safetensors")
        var expected: Set<String> = ["item_embeddings", "backbone.input_embeddings", "tag_embeddings"]
        switch config.backbone {
        case .sasrec: expected.formUnion(SASRec.tensorNames(layers: config.layerCount))
        case .gru4rec: expected.formUnion(GRU4Rec.tensorNames)
        }
        expected.formUnion(DPRHead.tensorNames(positive: config.positiveExperts, negative: config.negativeExperts))
        for name in expected.sorted() where file.entries[name] == nil {
            throw SteerError(.corrupt, "\(file.path): tensor '\(name)' is missing (\(config.backbone.rawValue) checkpoint)")
        }
        if let extra = file.entries.keys.sorted().first(where: { !expected.contains($0) }) {
            throw SteerError(.corrupt, "\(file.path): unexpected tensor '\(extra)' (config.json describes a different model)")
        }
        itemEmbeddings = try file.floats("item_embeddings", shape: [config.itemCount, config.indexDimension])
        inputEmbeddings = try file.floats("backbone.input_embeddings", shape: [config.itemCount, config.d])
        // The format fixes columns 0..<d of the scoring table to the backbone's input table: a mismatch
        // means the two tensors come from different models.
        let (d, dimension) = (config.d, config.indexDimension)
        for row in 0..<config.itemCount where !itemEmbeddings[(row * dimension)..<(row * dimension + d)].elementsEqual(inputEmbeddings[(row * d)..<(row * d + d)]) {
            throw SteerError(.corrupt, "\(file.path): item_embeddings row \(row), columns 0..<\(d) differ from backbone.input_embeddings")
        }
        let tagEmbeddings = try file.floats("tag_embeddings", shape: [config.tags.count, MiniLMEncoder.dimension])
        tagMapper = TagMapper(tags: config.tags, tagEmbeddings: tagEmbeddings, threshold: config.tagMatchThreshold)
        switch config.backbone {
        case .sasrec: backbone = try SASRec(file, config)
        case .gru4rec: backbone = try GRU4Rec(file, config)
        }
        head = try DPRHead(file, config)
        cache = EmbeddingCache(capacity: cacheCapacity)
    }

    // MARK: Catalog

    /// The embedding row of an item id.
    public func row(of id: ItemID) -> Int? { rowsByID[id] }

    /// Maps ids to rows in order; unknown ids are returned separately (in order) and skipped.
    public func rows(for ids: [ItemID]) -> (rows: [Int], unknown: [ItemID]) {
        var rows: [Int] = []
        var unknown: [ItemID] = []
        for id in ids {
            if let row = rowsByID[id] { rows.append(row) } else { unknown.append(id) }
        }
        return (rows, unknown)
    }

    public var cacheStats: CacheStats { cache.stats }

    // MARK: Encoding

    /// The backbone's user vector h ∈ R^d for history rows (oldest first; only the last `maxLen` are used).
    public func userVector(historyRows: [Int]) throws(SteerError) -> [Float] {
        try checkRows(historyRows)
        return backbone.userVector(rows: Array(historyRows.suffix(config.maxLen)), inputEmbeddings: inputEmbeddings)
    }

    /// The normalised MiniLM embedding of a clause text, from the cache when present.
    public func clauseEmbedding(_ text: String) -> (embedding: [Float], cached: Bool) {
        var timings = EncodeTimings()
        return clauseEmbeddings([text], timings: &timings)[0]
    }

    /// Embeddings of several clause texts: cache hits first, then every distinct miss in one MiniLM pass
    /// (the weights are read once for all of them), stored in the cache.
    func clauseEmbeddings(_ texts: [String], timings: inout EncodeTimings) -> [(embedding: [Float], cached: Bool)] {
        var results: [(embedding: [Float], cached: Bool)?] = texts.map { text in cache.get(text).map { ($0, true) } }
        var missing: [String] = []
        for (i, text) in texts.enumerated() where results[i] == nil && !missing.contains(text) { missing.append(text) }
        guard !missing.isEmpty else { return results.map { $0! } }
        let t0 = monotonicNanoseconds()
        let tokens = missing.map { encoder.tokenizer.encode($0) }
        let t1 = monotonicNanoseconds()
        let embeddings = encoder.embed(batch: tokens)
        let t2 = monotonicNanoseconds()
        timings.tokenize += t1 - t0
        timings.minilm += t2 - t1
        for (text, embedding) in zip(missing, embeddings) { cache.put(text, embedding) }
        for i in texts.indices where results[i] == nil {
            results[i] = (embeddings[missing.firstIndex(of: texts[i])!], false)
        }
        return results.map { $0! }
    }

    /// Parses a prompt into clauses, embeds each clause and maps it to catalog tags.
    public func parseClauses(_ prompt: String?) throws(SteerError) -> [ParsedClause] {
        var timings = EncodeTimings()
        return try parseClauses(prompt, timings: &timings)
    }

    func parseClauses(_ prompt: String?, timings: inout EncodeTimings) throws(SteerError) -> [ParsedClause] {
        if let prompt, prompt.utf8.count > Self.maxPromptBytes {
            throw SteerError(.tooLarge, "prompt is \(prompt.utf8.count) bytes, limit is \(Self.maxPromptBytes)")
        }
        let t0 = monotonicNanoseconds()
        let clauses = Array(ClauseParser.parse(prompt).prefix(config.maxClauses))
        timings.parse += monotonicNanoseconds() - t0
        let embedded = clauseEmbeddings(clauses.map(\.text), timings: &timings)
        return zip(clauses, embedded).map { clause, result in
            let (embedding, cached) = result
            let t1 = monotonicNanoseconds()
            let indices = tagMapper.map(clause.text, embedding: embedding)
            timings.tagMapping += monotonicNanoseconds() - t1
            return ParsedClause(text: clause.text, polarity: clause.polarity, tagIndices: indices,
                                tags: indices.map { config.tags[$0] }, embedding: embedding, cached: cached)
        }
    }

    /// The DPR query for a history and an optional prompt (docs/checkpoint-format.md §1–2).
    /// - Parameters:
    ///   - historyRows: catalog rows, oldest first; only the last `maxLen` are used.
    ///   - prompt: free text; nil, empty or filler-only gives `query == userVector` exactly.
    /// - Throws: `.invalidRequest` for a row outside the catalog, `.tooLarge` for an over-long prompt.
    public func encode(historyRows: [Int], prompt: String?) throws(SteerError) -> DPRQuery {
        let start = monotonicNanoseconds()
        var timings = EncodeTimings()
        try checkRows(historyRows)
        let rows = Array(historyRows.suffix(config.maxLen))
        let clauses = try parseClauses(prompt, timings: &timings)
        let t0 = monotonicNanoseconds()
        let h = backbone.userVector(rows: rows, inputEmbeddings: inputEmbeddings)
        let t1 = monotonicNanoseconds()
        timings.backbone = t1 - t0
        var hPlus = h
        hPlus.append(contentsOf: repeatElement(0, count: config.dAux))
        // λ = 1 adds each Δ to h⁺ in clause order, the computation of a checkpoint without steering.json
        let (lambda, beta) = (steering.softScale, steering.hybridBlend)
        var query = hPlus
        var sum = [Float](repeating: 0, count: hPlus.count)
        for clause in clauses {
            let delta = head.delta(h: h, embedding: clause.embedding, polarity: clause.polarity)
            for c in sum.indices {
                sum[c] += delta[c]
                if lambda == 1 { query[c] += delta[c] }
            }
        }
        if lambda != 1, !clauses.isEmpty {
            for c in query.indices { query[c] += lambda * sum[c] }
        }
        var hybridQuery = hPlus
        if beta == 1 {
            hybridQuery = query
        } else if beta > 0, !clauses.isEmpty {
            for c in hybridQuery.indices { hybridQuery[c] += beta * lambda * sum[c] }
        }
        let t2 = monotonicNanoseconds()
        timings.head = t2 - t1
        timings.total = t2 - start
        return DPRQuery(query: query, hybridQuery: hybridQuery, userVector: hPlus, clauses: clauses, historyRows: rows,
                        timings: timings)
    }

    /// `encode` for external ids, with the `recommend` op's rules: unknown ids are skipped and returned,
    /// and it is an error (`not_found`) only if the history names ids and none of them is known.
    public func encode(history: [ItemID], prompt: String?) throws(SteerError) -> (query: DPRQuery, unknown: [ItemID]) {
        let (rows, unknown) = rows(for: history)
        if rows.isEmpty && !history.isEmpty {
            throw SteerError.notFound("none of the history's \(history.count) item ids is in the model's catalog")
        }
        return (try encode(historyRows: rows, prompt: prompt), unknown)
    }

    private func checkRows(_ rows: [Int]) throws(SteerError) {
        if let bad = rows.first(where: { $0 < 0 || $0 >= config.itemCount }) {
            throw SteerError.invalid("history row \(bad) is outside the catalog (0..<\(config.itemCount))")
        }
    }

    // MARK: Ranking (brute force, for tests and the CLI)

    /// Whether item `row` passes the tag filters of `clauses` (positive: carries one of the clause's tags;
    /// negative: carries none of them; clauses without tags add no filter).
    public func passesFilters(row: Int, clauses: [ParsedClause]) -> Bool {
        let tags = itemTagIndices[row]
        for clause in clauses where !clause.tagIndices.isEmpty {
            let carries = clause.tagIndices.contains { tags.contains($0) }
            if carries != (clause.polarity == .positive) { return false }
        }
        return true
    }

    /// `score_i = q · V[i]` for every row.
    public func scores(query: [Float]) throws(SteerError) -> [Float] {
        guard query.count == config.indexDimension else {
            throw SteerError.dimension(expected: config.indexDimension, got: query.count, field: "query")
        }
        var scores = [Float](repeating: 0, count: config.itemCount)
        itemEmbeddings.withUnsafeBufferPointer { v in
            query.withUnsafeBufferPointer { q in
                scores.withUnsafeMutableBufferPointer { s in
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(config.itemCount), Int32(config.indexDimension), 1,
                                v.baseAddress, Int32(config.indexDimension), q.baseAddress, 1, 0, s.baseAddress, 1)
                }
            }
        }
        return scores
    }

    /// The `k` best rows by `q · V[i]` (ties: lower row first), skipping `excluding` and rows `keep` rejects.
    public func topK(query: [Float], k: Int, excluding: Set<Int> = [], keep: ((Int) -> Bool)? = nil) throws(SteerError) -> [ScoredItem] {
        let scores = try scores(query: query)
        var best: [(row: Int, score: Float)] = []
        best.reserveCapacity(k + 1)
        guard k > 0 else { return [] }
        for (row, score) in scores.enumerated() where !excluding.contains(row) && (keep?(row) ?? true) {
            if best.count == k, let last = best.last, !(score > last.score) { continue }
            var position = best.count
            while position > 0, score > best[position - 1].score { position -= 1 }
            best.insert((row, score), at: position)
            if best.count > k { best.removeLast() }
        }
        return best.map { ScoredItem(row: $0.row, id: catalog[$0.row].id, score: $0.score) }
    }

    /// Encode plus brute-force ranking under a constraint mode.
    public func recommend(historyRows: [Int], prompt: String?, k: Int, excludeHistory: Bool = true,
                          mode: ConstraintMode = .soft) throws(SteerError) -> (hits: [ScoredItem], query: DPRQuery) {
        let encoded = try encode(historyRows: historyRows, prompt: prompt)
        let excluded = excludeHistory ? Set(historyRows) : []
        let clauses = encoded.clauses
        let hits: [ScoredItem]
        switch mode {
        case .soft:
            hits = try topK(query: encoded.query, k: k, excluding: excluded)
        case .hybrid:
            hits = try topK(query: encoded.hybridQuery, k: k, excluding: excluded) { self.passesFilters(row: $0, clauses: clauses) }
        case .hard:
            hits = try topK(query: encoded.userVector, k: k, excluding: excluded) { self.passesFilters(row: $0, clauses: clauses) }
        }
        return (hits, encoded)
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
}
