import SteerCore
import SteerIndex
import SteerStore

/// Which plan answered a filtered (or unfiltered) search, with the numbers it was chosen by
/// (`explain: true` on the wire; docs/protocol.md, "Filter expressions").
public struct SearchPlan: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// No filter: the index alone.
        case unfiltered
        /// Nothing matched the filter: no search ran.
        case empty
        /// Few matches: their float vectors were read from the store and scored exactly (true top k).
        case exact
        /// Many matches: the index searched with the matches as its allowed set, inside the scan,
        /// widening ef_search/nprobe when a query came back short.
        case index
        /// Only exclusions, few of them: the index over-fetched by their number and they were dropped.
        case postFilter = "post_filter"
    }

    public var kind: Kind
    /// Items that pass the filter when it was planned (for `postFilter`: live items minus exclusions,
    /// an upper bound); nil when unfiltered.
    public var matches: Int?
    /// Live items in the store when it was planned.
    public var items: Int
    /// Plans with at most this many matches run `exact`.
    public var exactThreshold: Int
    /// Times ef_search/nprobe were doubled for short queries (index plan).
    public var widenings: Int
    /// Queries the index plan still answered short at the widening cap, answered exactly instead.
    public var exactFallbacks: Int
    /// Item records read to evaluate attribute leaves, or to list the live items for a large complement
    /// (0 when postings and payload indexes answered the filter; the in-memory path lists the live items
    /// from memory, `ItemStore.liveBits`).
    public var scannedRecords: Int
    /// Quantized index: candidates fetched per result (k × oversample fetched, then rescored); 1 otherwise.
    public var oversample: Int = 1
    /// Candidates rescored with float vectors from the store (quantized indexes).
    public var rescored: Int = 0
    /// The filter's match set came from `FilterCache` (resolved by an earlier request at this store sequence).
    public var cachedFilter = false

    public init(kind: Kind, matches: Int?, items: Int, exactThreshold: Int, widenings: Int = 0, exactFallbacks: Int = 0,
                scannedRecords: Int = 0) {
        self.kind = kind
        self.matches = matches
        self.items = items
        self.exactThreshold = exactThreshold
        self.widenings = widenings
        self.exactFallbacks = exactFallbacks
        self.scannedRecords = scannedRecords
    }

    /// The share of items that pass (matches ÷ items), nil when unfiltered.
    public var selectivity: Double? {
        guard let matches else { return nil }
        return items > 0 ? Double(matches) / Double(items) : 0
    }

    public static let unfiltered = SearchPlan(kind: .unfiltered, matches: nil, items: 0, exactThreshold: 0)
}

/// The planner's thresholds and its counters (one per engine, `RetrievalEngine.filterPlanner`).
///
/// A filter is resolved to the exact set of matching items first (from the in-memory payload columns
/// and tag postings as a bitset when every attribute leaf has a payload index, `resolveFilterBits`;
/// otherwise tag postings, payload-index reads, set algebra, and a scan of the item records for
/// attribute leaves), so the planner's "estimate" is that count. With at most
/// `exactThreshold(items:)` matches the search is exact over their float vectors from the store; with
/// more, the index searches with the matches as its allowed set (the filter inside the HNSW beam or the
/// IVF scan) and short queries are retried with doubled ef_search/nprobe up to `maxWidenedEfSearch` and
/// every IVF list, then answered exactly.
///
/// Thread-safe: settings and counters are `Locked`.
public final class FilterPlanner: Sendable {
    public struct Settings: Sendable, Equatable {
        /// Exact whenever matches are at most this many.
        public var exactMinimum: Int
        /// Exact while matches are at most this share of the items (between the minimum and maximum).
        public var exactFraction: Double
        /// Never exact above this many matches (the exact plan reads every match's vector from the store).
        public var exactMaximum: Int
        /// Widening stops doubling ef_search here.
        public var maxWidenedEfSearch: Int
        /// Quantized indexes: candidates fetched per wanted result when a request names no `oversample`.
        public var defaultOversample: Int
        /// Most item records one filter may read to evaluate attribute leaves that no payload index
        /// answers; a filter that would read more is refused (`too_large`) before it reads any.
        public var maxScanRecords: Int
        /// Resolve filters whose attribute leaves all have payload indexes on the store's in-memory
        /// columns, to a bitset (`resolveFilterBits`); false resolves every filter from RocksDB (the
        /// differential tests and the before/after benchmark compare the two).
        public var inMemoryFilters: Bool = true

        /// Default `maxScanRecords`: about a second of one worker reading records.
        public static let defaultMaxScanRecords = 1_000_000

        public init(exactMinimum: Int = 1024, exactFraction: Double = 0.01, exactMaximum: Int = 32_768, maxWidenedEfSearch: Int = 4096,
                    defaultOversample: Int = 4, maxScanRecords: Int = Settings.defaultMaxScanRecords) {
            self.defaultOversample = defaultOversample
            self.maxScanRecords = maxScanRecords
            self.exactMinimum = exactMinimum
            self.exactFraction = exactFraction
            self.exactMaximum = exactMaximum
            self.maxWidenedEfSearch = maxWidenedEfSearch
        }

        /// min(exactMaximum, max(exactMinimum, items × exactFraction)).
        public func exactThreshold(items: Int) -> Int {
            let share = Double(items) * exactFraction
            let scaled = share.isFinite ? Int(min(share, Double(Int32.max))) : 0
            return min(exactMaximum, max(exactMinimum, scaled))
        }
    }

    /// Items per store read of the exact plan (bounds its memory to this many vectors).
    public static let exactReadChunk = 4096

    public let settings: Locked<Settings>
    private let counts = Locked<[SearchPlan.Kind: Int]>([:])

    public init(settings: Settings = Settings()) { self.settings = Locked(settings) }

    func record(_ plan: SearchPlan) { counts.withLock { $0[plan.kind, default: 0] += 1 } }

    /// Requests answered by each plan since the engine opened, in `SearchPlan.Kind` order.
    public var planCounts: [(kind: SearchPlan.Kind, count: Int)] {
        let snapshot = counts.get()
        return SearchPlan.Kind.allCases.map { ($0, snapshot[$0] ?? 0) }
    }
}

/// A filter resolved against the store: the items required (nil: no requirement) and excluded, and
/// (from `FilterCache`) the sorted labels of required minus excluded, dropped whenever either changes.
/// The in-memory path (`resolveFilterBits`) states its requirement as `requiredBits` instead; the
/// allowed labels are then requiredBits ∩ required (when a caller adds one) − excluded. When it
/// requires nothing, it states its exclusions as `excludedBits` (callers may still add ids to `excluded`:
/// the items excluded are then both).
struct ResolvedFilter {
    var required: Set<Int64>? { didSet { allowed = nil } }
    var excluded: Set<Int64> { didSet { allowed = nil } }
    var scannedRecords: Int
    /// required − excluded, sorted or as bits; nil when not computed (or no requirement).
    var allowed: AllowedLabels? = nil
    /// The requirement as bits (in-memory path), already without the filter's own exclusions.
    var requiredBits: LabelBitset? = nil { didSet { allowed = nil } }
    /// The exclusions as bits (in-memory path, only when nothing is required), beside `excluded`.
    var excludedBits: LabelBitset? = nil

    /// Everything excluded as bits (`excludedBits` ∪ `excluded`), nil when `excludedBits` is.
    func allExcludedBits() -> LabelBitset? {
        guard var bits = excludedBits else { return nil }
        for label in excluded { bits.insert(label) }
        return bits
    }

    /// Whether anything is required (the plan is then `empty`, `exact` or `index`).
    var hasRequirement: Bool { required != nil || requiredBits != nil }

    /// The allowed labels: requiredBits ∩ required − excluded, or required − excluded; nil when nothing
    /// is required.
    func computeAllowed() -> AllowedLabels? {
        if var bits = requiredBits {
            if let required { bits.formIntersection(LabelBitset(required)) }
            for label in excluded { bits.remove(label) }
            return AllowedLabels(bitset: bits)
        }
        return required.map { AllowedLabels(sortedLabels: $0.subtracting(excluded).sorted()) }
    }
    /// Whether it came from `FilterCache` (nothing was resolved for this request).
    var cached = false
}

/// A set of internal ids or its complement: tag-only expressions are evaluated on postings with this.
private enum LabelSet {
    case only(Set<Int64>)
    case allBut(Set<Int64>)

    func and(_ other: LabelSet) -> LabelSet {
        switch (self, other) {
        case (.only(let a), .only(let b)): return .only(a.count <= b.count ? a.intersection(b) : b.intersection(a))
        case (.only(let a), .allBut(let b)), (.allBut(let b), .only(let a)): return .only(a.subtracting(b))
        case (.allBut(let a), .allBut(let b)): return .allBut(a.union(b))
        }
    }

    func or(_ other: LabelSet) -> LabelSet {
        switch (self, other) {
        case (.only(let a), .only(let b)): return .only(a.union(b))
        case (.only(let a), .allBut(let b)), (.allBut(let b), .only(let a)): return .allBut(b.subtracting(a))
        case (.allBut(let a), .allBut(let b)): return .allBut(a.intersection(b))
        }
    }

    var negated: LabelSet {
        switch self {
        case .only(let a): return .allBut(a)
        case .allBut(let a): return .only(a)
        }
    }
}

extension RetrievalEngine {
    /// Declares a payload index (`ItemStore.declarePayloadIndex`): built over the existing items, then
    /// kept by every write, and used by filters from the next request on.
    ///
    /// - Returns: the index entries written (0 when it was already declared with this kind).
    /// - Throws: `.invalidRequest` for a bad path or too many declarations; `.unavailable` once closed.
    @discardableResult
    public func declarePayloadIndex(_ name: String, kind: PayloadKind) throws(SteerError) -> Int {
        try store.declarePayloadIndex(name, kind: kind)
    }

    // MARK: Resolving filters

    /// Resolves the tag lists (plus clause constraints) and the expression of `filter` against the store,
    /// or takes it from `filterCache` when it was resolved at the store's current sequence.
    func resolveFilter(_ filter: TagFilter, extraRequired: [[String]], extraExcluded: [String]) throws(SteerError) -> ResolvedFilter {
        if filter.tagsAny.isEmpty && filter.tagsNone.isEmpty && filter.tagGroups.isEmpty && filter.expression == nil
            && extraRequired.isEmpty && extraExcluded.isEmpty {
            return ResolvedFilter(required: nil, excluded: [], scannedRecords: 0)
        }
        let key = FilterCache.Key(filter: filter, extraRequired: extraRequired, extraExcluded: extraExcluded)
        // A written batch not yet replayed onto the in-memory postings and columns: resolve, but neither
        // look up nor keep (an entry filed under the new sequence could miss that batch).
        guard let sequence = store.replayedSequence else {
            return try resolveFilterUncached(filter, extraRequired: extraRequired, extraExcluded: extraExcluded)
        }
        if var hit = filterCache.lookup(key, sequence: sequence) {
            hit.scannedRecords = 0
            hit.cached = true
            return hit
        }
        return filterCache.store(key, sequence: sequence, try resolveFilterUncached(filter, extraRequired: extraRequired, extraExcluded: extraExcluded))
    }

    private func resolveFilterUncached(_ filter: TagFilter, extraRequired: [[String]], extraExcluded: [String]) throws(SteerError) -> ResolvedFilter {
        if filterPlanner.settings.get().inMemoryFilters,
           let resolved = try resolveFilterBits(filter, extraRequired: extraRequired, extraExcluded: extraExcluded) {
            return resolved
        }
        var required: Set<Int64>?
        var groups = extraRequired + filter.tagGroups
        if !filter.tagsAny.isEmpty { groups.append(filter.tagsAny) }
        for group in groups {
            var union = Set<Int64>()
            for tag in group { union.formUnion(try store.internalIDs(withTag: tag)) }
            required = required.map { $0.intersection(union) } ?? union
        }
        var excluded = Set<Int64>()
        for tag in filter.tagsNone + extraExcluded { excluded.formUnion(try store.internalIDs(withTag: tag)) }
        var scanned = 0
        if let expression = filter.expression {
            let (set, visited) = try evaluate(expression, within: required)
            scanned = visited
            switch set {
            case .only(let matching): required = required.map { $0.intersection(matching) } ?? matching
            case .allBut(let failing): excluded.formUnion(failing)
            }
        }
        return ResolvedFilter(required: required, excluded: excluded, scannedRecords: scanned)
    }

    /// The items meeting `expression` (those outside `within`, when given, may be left out) and the
    /// number of records read.
    ///
    /// An expression whose every leaf is a tag or an attribute leaf a payload index answers
    /// (`indexedSet`) uses postings, payload indexes and set algebra, and reads no record. Otherwise item
    /// records are read: only the candidates when the tag lists and the indexed children of a top-level
    /// `and` narrow them to at most a quarter of the items, else every record (`ItemStore.scanRecords`).
    private func evaluate(_ expression: FilterExpression, within: Set<Int64>?) throws(SteerError) -> (LabelSet, Int) {
        let payloads = store.payloadIndexes
        if let set = try indexedSet(expression, payloads) { return (set, 0) }
        var candidates = within.map(LabelSet.only)
        var rest = [expression]
        if case .and(let children) = expression {
            rest = []
            for child in children {
                if let set = try indexedSet(child, payloads) {
                    candidates = candidates.map { $0.and(set) } ?? set
                } else {
                    rest.append(child)
                }
            }
        }
        let remaining: FilterExpression = rest.count == 1 ? rest[0] : .and(rest)
        let limit = filterPlanner.settings.get().maxScanRecords
        /// Refuses, before reading any record, a filter that would read more than `limit` of them.
        func bound(_ records: Int) throws(SteerError) {
            guard records > limit else { return }
            let names = Set(remaining.attributeNames.filter { payloads[$0] == nil }).sorted().prefix(4).map { "'\($0)'" }.joined(separator: ", ")
            throw SteerError(.tooLarge, "filter would read \(records) item records to evaluate attribute\(names.contains(",") ? "s" : "") \(names) (no payload index), more than max_scan_records \(limit); declare a payload index (declare_index) or narrow the filter with tags or indexed attributes")
        }
        if case .only(let ids)? = candidates, ids.count <= max(1, store.count / 4) {
            try bound(ids.count)
            var matching = Set<Int64>()
            let sorted = ids.sorted()
            var start = 0
            while start < sorted.count {
                let chunk = Array(sorted[start..<min(sorted.count, start + FilterPlanner.exactReadChunk)])
                for record in try store.records(internalIDs: chunk) {
                    guard let record else { continue }
                    var attributes = FilterAttributes(json: record.attributesJSON)
                    if remaining.matches(tags: record.tags, attributes: &attributes) { matching.insert(record.internalID) }
                }
                start += chunk.count
            }
            return (.only(matching), sorted.count)
        }
        try bound(store.count)
        var matching = Set<Int64>()
        let visited = try store.scanRecords { (id, tags, attributesJSON) throws(SteerError) in
            var attributes = FilterAttributes(json: attributesJSON)
            if expression.matches(tags: tags, attributes: &attributes) { matching.insert(id) }
        }
        return (.only(matching), visited)
    }

    /// The items meeting `expression` from tag postings and payload indexes alone; nil when some
    /// attribute leaf has no payload index that answers it.
    private func indexedSet(_ expression: FilterExpression, _ payloads: [String: PayloadKind]) throws(SteerError) -> LabelSet? {
        switch expression {
        case .tag(let tag): return .only(Set(try store.internalIDs(withTag: tag)))
        case .not(let child): return try indexedSet(child, payloads)?.negated
        case .and(let children):
            var result = LabelSet.allBut([])
            for child in children {
                guard let set = try indexedSet(child, payloads) else { return nil }
                result = result.and(set)
            }
            return result
        case .or(let children):
            var result = LabelSet.only([])
            for child in children {
                guard let set = try indexedSet(child, payloads) else { return nil }
                result = result.or(set)
            }
            return result
        case .attribute(let predicate):
            guard let kind = payloads[predicate.name] else { return nil }
            var result = LabelSet.allBut([])
            for condition in predicate.conditions {
                guard let set = try payloadSet(predicate.name, kind, condition) else { return nil }
                result = result.and(set)
            }
            return result
        }
    }

    /// One condition of an attribute leaf from its payload index (the same semantics as
    /// `AttributePredicate.matches`); nil when the index's kind cannot answer it.
    private func payloadSet(_ name: String, _ kind: PayloadKind, _ condition: AttributePredicate.Condition) throws(SteerError) -> LabelSet? {
        func ids(_ query: PayloadQuery) throws(SteerError) -> LabelSet? {
            try store.internalIDs(payload: name, query).map { .only(Set($0)) }
        }
        switch condition {
        case .eq(let value): return try ids(.values([value]))
        case .in(let values): return try ids(.values(values))
        case .ne(let value): return try ids(.values([value]))?.negated
        case .nin(let values): return try ids(.values(values))?.negated
        case .exists(let wanted):
            guard kind == .keyword else { return nil }
            let set = try ids(.any)
            return wanted ? set : set?.negated
        case .gt(let bound): return try ids(.range(lower: bound, lowerInclusive: false, upper: nil, upperInclusive: false))
        case .gte(let bound): return try ids(.range(lower: bound, lowerInclusive: true, upper: nil, upperInclusive: false))
        case .lt(let bound): return try ids(.range(lower: nil, lowerInclusive: false, upper: bound, upperInclusive: false))
        case .lte(let bound): return try ids(.range(lower: nil, lowerInclusive: false, upper: bound, upperInclusive: true))
        }
    }

    // MARK: Planning and searching

    /// Searches `queries` (row-major) under a resolved filter with the plan the planner picks (see
    /// `FilterPlanner`), and counts the plan.
    ///
    /// - Returns: one list per query, best first, at most k long, and the plan.
    /// - Throws: `invalid_request`/`too_large` for k; `unavailable` for an untrained index; store and
    ///   index errors.
    func searchPlanned(_ generation: Generation, _ queries: [Float], k: Int, nprobe: Int?, efSearch: Int?, oversample: Int? = nil,
                       filter: ResolvedFilter) throws(SteerError) -> ([[ScoredLabel]], SearchPlan) {
        guard k >= 1 else { throw SteerError.invalid("k must be at least 1, got \(k)") }
        guard k <= VectorIndex.maxK else { throw SteerError(.tooLarge, "k is \(k), limit is \(VectorIndex.maxK)") }
        let count = queries.count / max(generation.dimension, 1)
        let index = generation.index
        if !index.isTrained {
            throw SteerError(.unavailable, "index \(index.spec) is not trained yet: it needs \(Self.minimumTrainingVectors(index.spec)) items, the store has \(store.count)")
        }
        recallCalibrator.calibrateIfDue(generation, store: store)
        var prepared = queries
        if generation.metric == .cosine { Vectors.normalizeRows(&prepared, dimension: generation.dimension) }
        let settings = filterPlanner.settings.get()
        let items = store.count
        var plan = SearchPlan(kind: .unfiltered, matches: nil, items: items, exactThreshold: settings.exactThreshold(items: items),
                              scannedRecords: filter.scannedRecords)
        plan.cachedFilter = filter.cached
        defer { filterPlanner.record(plan) }
        // Quantized indexes (PQ, SQ8 codes) fetch k × oversample candidates and rescore them with the
        // float vectors from the store.
        let quantized = index.spec.isQuantized
        let factor = quantized ? max(1, oversample ?? settings.defaultOversample) : 1
        if quantized { plan.oversample = factor }
        func indexSearch(_ rows: [Float], k wanted: Int, _ parameters: SearchParameters) throws(SteerError) -> [[ScoredLabel]] {
            let fetch = min(VectorIndex.maxK, max(wanted, wanted * factor))
            let raw = try index.search(rows, k: fetch, parameters: parameters)
            guard quantized else { return raw }
            plan.rescored += raw.reduce(0) { $0 + $1.count }
            return try rescore(generation, rows, raw, k: wanted)
        }
        var resolved = filter
        let excluded = filter.excluded
        let excludedBits = filter.hasRequirement ? nil : filter.allExcludedBits()
        let excludedCount = excludedBits?.count ?? excluded.count
        if !filter.hasRequirement && excludedCount > 0 {
            let upperBound = max(0, items - excludedCount)
            if k + excludedCount <= VectorIndex.maxK && upperBound > plan.exactThreshold {
                plan.kind = .postFilter
                plan.matches = upperBound
                let raw = try indexSearch(prepared, k: k + excludedCount, SearchParameters(nprobe: nprobe, efSearch: efSearch))
                if let excludedBits {
                    return (raw.map { list in Array(list.lazy.filter { !excludedBits.contains($0.label) }.prefix(k)) }, plan)
                }
                return (raw.map { list in Array(list.lazy.filter { !excluded.contains($0.label) }.prefix(k)) }, plan)
            }
            // A large exclusion: the live items minus it, from memory on the in-memory path.
            if let excludedBits, var live = store.liveBits() {
                live.subtract(excludedBits)
                resolved.requiredBits = live
            } else {
                let live = try store.liveInternalIDs()
                plan.scannedRecords += live.count
                resolved.required = Set(live)
                if let excludedBits { resolved.excluded.formUnion(excludedBits.labels) }
            }
        }
        guard let allowedLabels = resolved.allowed ?? resolved.computeAllowed() else {
            return (try indexSearch(prepared, k: k, SearchParameters(nprobe: nprobe, efSearch: efSearch)), plan)
        }
        plan.matches = allowedLabels.count
        if allowedLabels.count == 0 {
            plan.kind = .empty
            return (Array(repeating: [], count: count), plan)
        }
        if allowedLabels.count <= plan.exactThreshold {
            plan.kind = .exact
            return (try exactSearch(generation, prepared, count: count, k: k, labels: allowedLabels.sortedLabels), plan)
        }
        plan.kind = .index
        var results = try indexSearch(prepared, k: k, SearchParameters(
            nprobe: nprobe, efSearch: efSearch, allowed: allowedLabels, exactFilterThreshold: 0))
        let wanted = min(k, allowedLabels.count)
        var short = results.indices.filter { results[$0].count < wanted }
        if short.isEmpty { return (results, plan) }
        let shard = index.shards[0]
        var ef = max(efSearch ?? shard.defaultEfSearch, k)
        var probes = nprobe ?? shard.defaultNprobe
        let lists = index.spec.lists ?? 0
        while !short.isEmpty && (ef < settings.maxWidenedEfSearch || probes < lists) {
            ef = min(settings.maxWidenedEfSearch, ef * 2)
            probes = min(max(lists, 1), probes * 2)
            plan.widenings += 1
            var subset: [Float] = []
            subset.reserveCapacity(short.count * generation.dimension)
            for query in short {
                subset.append(contentsOf: prepared[(query * generation.dimension)..<((query + 1) * generation.dimension)])
            }
            let retried = try indexSearch(subset, k: k, SearchParameters(
                nprobe: probes, efSearch: ef, allowed: allowedLabels, exactFilterThreshold: 0))
            for (position, query) in short.enumerated() { results[query] = retried[position] }
            short = short.filter { results[$0].count < wanted }
        }
        let allowed = short.isEmpty ? [] : allowedLabels.sortedLabels
        for query in short {
            plan.exactFallbacks += 1
            let row = Array(prepared[(query * generation.dimension)..<((query + 1) * generation.dimension)])
            results[query] = try exactSearch(generation, row, count: 1, k: k, labels: allowed)[0]
        }
        return (results, plan)
    }

    /// Re-ranks each query's candidates exactly with their float vectors from the store (one read for
    /// every candidate of the batch) and keeps the best k.
    ///
    /// - Parameter queries: one row per list, already normalised for cosine.
    func rescore(_ generation: Generation, _ queries: [Float], _ candidates: [[ScoredLabel]], k: Int) throws(SteerError) -> [[ScoredLabel]] {
        let dimension = generation.dimension
        let labels = Array(Set(candidates.flatMap { $0.map(\.label) })).sorted()
        var vectors: [Int64: [Float]] = [:]
        vectors.reserveCapacity(labels.count)
        var start = 0
        while start < labels.count {
            let chunk = Array(labels[start..<min(labels.count, start + FilterPlanner.exactReadChunk)])
            for (label, stored) in zip(chunk, try store.vectors(internalIDs: chunk, version: generation.embeddingVersion)) {
                guard var vector = stored, vector.count == dimension else { continue }
                if generation.metric == .cosine { Vectors.normalizeRows(&vector, dimension: dimension) }
                vectors[label] = vector
            }
            start += chunk.count
        }
        return queries.withUnsafeBufferPointer { q in
            candidates.enumerated().map { query, list in
                let row = UnsafeBufferPointer(rebasing: q[(query * dimension)..<((query + 1) * dimension)])
                var top = TopK(k: k)
                for candidate in list {
                    // An item deleted since the index answered has no vector: dropped, like hydration does.
                    guard let vector = vectors[candidate.label] else { continue }
                    let score = vector.withUnsafeBufferPointer { generation.metric.score(row, $0) }
                    top.offer(ScoredLabel(label: candidate.label, score: score))
                }
                return top.sorted()
            }
        }
    }

    /// The true top k among `labels` for each query: their float vectors of the generation's embedding
    /// version are read from the store (in chunks of `FilterPlanner.exactReadChunk`) and scored with
    /// the generation's metric. Items without a vector of that version (or deleted meanwhile) are skipped.
    ///
    /// - Parameter queries: `count` rows, already normalised for cosine.
    func exactSearch(_ generation: Generation, _ queries: [Float], count: Int, k: Int, labels: [Int64]) throws(SteerError) -> [[ScoredLabel]] {
        let dimension = generation.dimension
        var heaps = (0..<count).map { _ in TopK(k: k) }
        var start = 0
        while start < labels.count {
            let chunk = Array(labels[start..<min(labels.count, start + FilterPlanner.exactReadChunk)])
            let vectors = try store.vectors(internalIDs: chunk, version: generation.embeddingVersion)
            for (label, stored) in zip(chunk, vectors) {
                guard var vector = stored, vector.count == dimension else { continue }
                if generation.metric == .cosine { Vectors.normalizeRows(&vector, dimension: dimension) }
                vector.withUnsafeBufferPointer { v in
                    queries.withUnsafeBufferPointer { q in
                        for query in 0..<count {
                            let row = UnsafeBufferPointer(rebasing: q[(query * dimension)..<((query + 1) * dimension)])
                            heaps[query].offer(ScoredLabel(label: label, score: generation.metric.score(row, v)))
                        }
                    }
                }
            }
            start += chunk.count
        }
        return heaps.map { $0.sorted() }
    }
}

private extension FilterExpression {
    /// Attribute names of the attribute leaves, in tree order (for error messages).
    var attributeNames: [String] {
        switch self {
        case .and(let children), .or(let children): return children.flatMap(\.attributeNames)
        case .not(let child): return child.attributeNames
        case .tag: return []
        case .attribute(let predicate): return [predicate.name]
        }
    }
}
