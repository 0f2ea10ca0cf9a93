import CFaissShim
import SteerCore

/// A vector index over faiss 1.7.3: Flat, HNSW, IVF-Flat, IVF-PQ or IVF-SQ8 with int64 labels.
///
/// Thread-safe: any number of concurrent searches; add/remove/train/reset are serialised against
/// searches by an internal reader-writer lock. HNSW compaction is built aside: the live rows are copied
/// under the shared lock, the new graph is built holding no lock (searches and writes go on), and it is
/// switched in under the exclusive lock after the labels written meanwhile are replayed into it. Scores: higher is better (inner product,
/// cosine similarity, or the negated squared L2 distance). See docs/index.md.
///
/// `@unchecked Sendable`: the native handle is only touched under `lock` (shared for searches and
/// getters, exclusive for mutations), and the native search is safe to run concurrently.
public final class VectorIndex: @unchecked Sendable {
    /// The largest `k` a search accepts.
    public static let maxK = 10_000
    /// The most result slots (queries × k) one search call may ask for: bounds the result buffers
    /// (12 bytes per slot, 600 MB at the limit).
    public static let maxResultSlots = 50_000_000
    /// The largest dimension accepted.
    public static let maxDimension = 65_536
    /// Default IVF lists probed per query (clamped to the list count).
    public static let standardNprobe = 16
    /// Default HNSW level-0 beam width.
    public static let standardEfSearch = 64
    /// Allowed-label sets up to this size are searched exactly (see `exactFilterThreshold`).
    public static let standardExactFilterThreshold = 1024
    /// HNSW compacts itself when tombstones exceed this share of its rows.
    public static let standardAutoCompactFraction = 0.2

    public let spec: IndexSpec
    public let dimension: Int
    public let metric: Metric

    private let lock = ReadWriteLock(preferWriters: true)
    private let handle: OpaquePointer
    private var settings: Settings

    private struct Settings {
        var nprobe = VectorIndex.standardNprobe
        var efSearch = VectorIndex.standardEfSearch
        var exactFilterThreshold = VectorIndex.standardExactFilterThreshold
        var autoCompactFraction = VectorIndex.standardAutoCompactFraction
        /// A compaction is being built aside (set and cleared under the exclusive lock).
        var compacting = false
    }

    /// Creates an empty index.
    /// - Throws: `invalid_request` for a dimension outside 1...65536 or a spec that does not fit it
    ///   (PQ subquantizers must divide the dimension).
    public init(spec: IndexSpec, dimension: Int, metric: Metric) throws(SteerError) {
        guard (1...Self.maxDimension).contains(dimension) else {
            throw SteerError.invalid("dimension must be in 1...\(Self.maxDimension), got \(dimension)")
        }
        try spec.validate(dimension: dimension)
        var created: OpaquePointer?
        var error: UnsafeMutablePointer<CChar>?
        let status = steer_index_create(
            spec.faissFactory, Int64(dimension), metric.faissCode, Int64(spec.efConstruction), &created, &error)
        try Native.check(status, error, "creating index \(spec)")
        guard let created else { throw SteerError.internalError("creating index \(spec) returned no handle") }
        self.handle = created
        self.spec = spec
        self.dimension = dimension
        self.metric = metric
        self.settings = Settings()
    }

    /// Wraps a handle read from a file (see `load(path:memoryMapped:)`).
    init(handle: OpaquePointer, spec: IndexSpec, dimension: Int, metric: Metric, nprobe: Int, efSearch: Int) {
        self.handle = handle
        self.spec = spec
        self.dimension = dimension
        self.metric = metric
        self.settings = Settings(nprobe: nprobe, efSearch: efSearch)
    }

    deinit { steer_index_free(handle) }

    // MARK: - Properties

    /// Live vectors (excludes tombstones).
    public var count: Int { lock.withReadLock { Int(steer_index_count(handle)) } }
    /// HNSW rows deleted but still in the graph (always 0 for other families).
    public var tombstoneCount: Int { lock.withReadLock { Int(steer_index_tombstones(handle)) } }
    /// Whether vectors can be added: always true except for an IVF index before `train`.
    public var isTrained: Bool { lock.withReadLock { steer_index_is_trained(handle) != 0 } }
    /// Whether the IVF lists are memory-mapped from the file this index was loaded from. The first
    /// mutation copies them into memory (the file is never written).
    public var isMemoryMapped: Bool { lock.withReadLock { steer_index_is_mapped(handle) != 0 } }

    /// IVF lists probed when a search does not say (>= 1; clamped to the list count). Default 16.
    public var defaultNprobe: Int {
        get { lock.withReadLock { settings.nprobe } }
        set { lock.withWriteLock { settings.nprobe = max(1, newValue) } }
    }

    /// HNSW beam width when a search does not say (>= 1; raised to k per search). Default 64.
    public var defaultEfSearch: Int {
        get { lock.withReadLock { settings.efSearch } }
        set { lock.withWriteLock { settings.efSearch = max(1, newValue) } }
    }

    /// Allowed-label sets of at most this many labels are searched exactly: by label lookup for Flat
    /// and HNSW, by probing every IVF list with the filter. Larger sets filter inside the ANN scan.
    /// Default 1024; 0 always filters inside the scan.
    public var exactFilterThreshold: Int {
        get { lock.withReadLock { settings.exactFilterThreshold } }
        set { lock.withWriteLock { settings.exactFilterThreshold = max(0, newValue) } }
    }

    /// HNSW compacts itself after an add or remove that leaves more tombstones than this share of its
    /// rows. Default 0.2; 1 or more turns automatic compaction off.
    public var autoCompactFraction: Double {
        get { lock.withReadLock { settings.autoCompactFraction } }
        set { lock.withWriteLock { settings.autoCompactFraction = newValue.isNaN ? Self.standardAutoCompactFraction : max(0, newValue) } }
    }

    /// 1 when `label` is live.
    public func contains(label: Int64) -> Bool { lock.withReadLock { steer_index_contains(handle, label) != 0 } }

    // MARK: - Mutation

    /// Trains an IVF index (k-means for the lists, plus PQ or SQ codebooks) or the SQ8 ranges of
    /// `HNSW<M>,SQ8`. Flat and float HNSW: no-op.
    /// - Parameter vectors: `n * dimension` floats, n at least the list count (PQ with b bits also needs
    ///   2^b vectors).
    /// - Throws: `dimension_mismatch`, `invalid_request` for non-finite values, too few vectors, or an
    ///   index that already holds vectors.
    public func train(_ vectors: [Float]) throws(SteerError) {
        let prepared = try prepare(vectors, field: "training vectors")
        let n = prepared.count / dimension
        guard spec.needsTraining else { return }
        if let lists = spec.lists, n < lists {
            throw SteerError.invalid("index \(spec) needs at least \(lists) training vectors, got \(n)")
        }
        try lock.withWriteLock { () throws(SteerError) in
            guard steer_index_count(handle) == 0 else {
                throw SteerError.invalid("index \(spec) already holds vectors; reset it before training again")
            }
            var error: UnsafeMutablePointer<CChar>?
            let status = prepared.withUnsafeBufferPointer { steer_index_train(handle, Int64(n), $0.baseAddress, &error) }
            try Native.check(status, error, "training index \(spec)")
        }
    }

    /// Adds vectors. A label that is already live is replaced.
    /// - Parameters:
    ///   - vectors: `labels.count * dimension` floats (cosine: normalised here; zero vectors rejected).
    ///   - labels: one per vector, >= 0, no duplicates within one call.
    /// - Throws: `dimension_mismatch`; `invalid_request` for a count mismatch, non-finite values,
    ///   negative or duplicate labels, or an untrained IVF index.
    public func add(_ vectors: [Float], labels: [Int64]) throws(SteerError) {
        let prepared = try prepare(vectors, field: "vectors")
        let n = prepared.count / dimension
        guard labels.count == n else {
            throw SteerError.invalid("labels has \(labels.count) entries but vectors has \(n) rows")
        }
        guard n > 0 else { return }
        let compact = try lock.withWriteLock { () throws(SteerError) -> Bool in
            guard steer_index_is_trained(handle) != 0 else {
                throw SteerError.invalid("index \(spec) is not trained; call train before adding vectors")
            }
            var error: UnsafeMutablePointer<CChar>?
            let status = prepared.withUnsafeBufferPointer { v in
                labels.withUnsafeBufferPointer { l in steer_index_add(handle, Int64(n), v.baseAddress, l.baseAddress, &error) }
            }
            try Native.check(status, error, "adding to index \(spec)")
            return claimCompactionIfNeeded()
        }
        if compact { try compactAside() }
    }

    /// Removes labels (unknown labels are ignored). HNSW keeps tombstones until compaction.
    /// - Returns: how many of the labels were live.
    @discardableResult
    public func remove(labels: [Int64]) throws(SteerError) -> Int {
        guard !labels.isEmpty else { return 0 }
        let (removed, compact) = try lock.withWriteLock { () throws(SteerError) -> (Int, Bool) in
            var removed: Int64 = 0
            var error: UnsafeMutablePointer<CChar>?
            let status = labels.withUnsafeBufferPointer { steer_index_remove(handle, Int64($0.count), $0.baseAddress, &removed, &error) }
            try Native.check(status, error, "removing from index \(spec)")
            return (Int(removed), claimCompactionIfNeeded())
        }
        if compact { try compactAside() }
        return removed
    }

    /// HNSW: rebuilds the graph from the live vectors, dropping every tombstone (O(n log n)), aside:
    /// searches and other mutations go on meanwhile (see the type's notes). When a compaction is
    /// already being built, this one rebuilds under the exclusive lock instead. Other families have no
    /// tombstones: no-op.
    public func compact() throws(SteerError) {
        let claimed = lock.withWriteLock { () -> Bool in
            if settings.compacting { return false }
            settings.compacting = true
            return true
        }
        if claimed { return try compactAside() }
        try lock.withWriteLock { () throws(SteerError) in try compactLocked() }
    }

    /// Builds the compacted graph aside and switches it in; the caller claimed `settings.compacting`.
    private func compactAside() throws(SteerError) {
        var job: OpaquePointer?
        var error: UnsafeMutablePointer<CChar>?
        do {
            let status = lock.withReadLock { steer_compaction_begin(handle, &job, &error) }
            try Native.check(status, error, "compacting index \(spec)")
        } catch {
            lock.withWriteLock { settings.compacting = false }
            throw error
        }
        guard let job else {
            lock.withWriteLock { settings.compacting = false }
            return
        }
        let built = steer_compaction_build(job, &error)
        do {
            try Native.check(built, error, "compacting index \(spec)")
        } catch {
            lock.withWriteLock {
                steer_compaction_abort(handle, job)
                settings.compacting = false
            }
            throw error
        }
        try lock.withWriteLock { () throws(SteerError) in
            defer { settings.compacting = false }
            var replayed: Int64 = 0
            let status = steer_compaction_finish(handle, job, &replayed, &error)
            try Native.check(status, error, "compacting index \(spec)")
        }
    }

    /// Removes every vector; IVF training is kept.
    public func reset() {
        lock.withWriteLock {
            var error: UnsafeMutablePointer<CChar>?
            let status = steer_index_reset(handle, &error)
            let message = error.map { String(cString: $0) } ?? ""
            steer_faiss_free(error)
            precondition(status == STEER_FAISS_OK, "resetting index \(spec) failed: \(message)")
        }
    }

    private func compactLocked() throws(SteerError) {
        var error: UnsafeMutablePointer<CChar>?
        let status = steer_index_compact(handle, &error)
        try Native.check(status, error, "compacting index \(spec)")
    }

    /// Called with the write lock held: whether tombstones exceed `autoCompactFraction` of the rows and
    /// no compaction is running; if so it is claimed (`settings.compacting`) for the caller to run
    /// `compactAside()` once the lock is released.
    private func claimCompactionIfNeeded() -> Bool {
        let tombstones = Double(steer_index_tombstones(handle))
        guard tombstones > 0, settings.autoCompactFraction < 1, !settings.compacting else { return false }
        guard tombstones > settings.autoCompactFraction * Double(steer_index_rows(handle)) else { return false }
        settings.compacting = true
        return true
    }

    // MARK: - Search

    /// Searches `n` queries.
    /// - Parameters:
    ///   - queries: `n * dimension` floats (cosine: normalised here; zero vectors rejected).
    ///   - k: 1...`maxK` results per query.
    ///   - parameters: per-call nprobe, efSearch and allowed labels.
    /// - Returns: n lists, each at most k long, best first, only live (and allowed) labels. A list is
    ///   shorter than k only when fewer than k live allowed labels exist.
    /// - Throws: `invalid_request` (k < 1, nprobe or efSearch < 1, non-finite values, untrained IVF),
    ///   `too_large` (k > maxK, or queries × k > maxResultSlots), `dimension_mismatch`.
    public func search(_ queries: [Float], k: Int, parameters: SearchParameters = .init()) throws(SteerError) -> [[ScoredLabel]] {
        guard k >= 1 else { throw SteerError.invalid("k must be at least 1, got \(k)") }
        guard k <= Self.maxK else { throw SteerError(.tooLarge, "k is \(k), limit is \(Self.maxK)") }
        if let nprobe = parameters.nprobe, nprobe < 1 { throw SteerError.invalid("nprobe must be at least 1, got \(nprobe)") }
        if let ef = parameters.efSearch, ef < 1 { throw SteerError.invalid("efSearch must be at least 1, got \(ef)") }
        let prepared = try prepare(queries, field: "queries")
        let n = prepared.count / dimension
        if n == 0 { return [] }
        guard n <= Self.maxResultSlots / k else {
            throw SteerError(.tooLarge, "\(n) queries × k \(k) exceeds \(Self.maxResultSlots) result slots; split the batch")
        }
        let bits = parameters.allowed?.bitset
        let allowed = bits == nil ? parameters.allowed?.sortedLabels : nil
        return try lock.withReadLock { () throws(SteerError) -> [[ScoredLabel]] in
            guard steer_index_is_trained(handle) != 0 else {
                throw SteerError.invalid("index \(spec) is not trained; call train before searching")
            }
            var scores = [Float](repeating: 0, count: n * k)
            var labels = [Int64](repeating: -1, count: n * k)
            var error: UnsafeMutablePointer<CChar>?
            let status = prepared.withUnsafeBufferPointer { q in
                scores.withUnsafeMutableBufferPointer { s in
                    labels.withUnsafeMutableBufferPointer { l in
                        Self.withOptionalPointer(allowed) { a in
                            Self.withOptionalWords(bits) { words in
                                var native = steer_search_params(
                                    nprobe: Int64(parameters.nprobe ?? settings.nprobe),
                                    ef_search: Int64(parameters.efSearch ?? settings.efSearch),
                                    allowed: a, allowed_count: Int64(parameters.allowed?.count ?? 0),
                                    allowed_bits: words.baseAddress, allowed_bits_words: Int64(words.count),
                                    exact_filter_threshold: Int64(max(0, parameters.exactFilterThreshold ?? settings.exactFilterThreshold)))
                                return steer_index_search(handle, Int64(n), q.baseAddress, Int64(k), &native, s.baseAddress, l.baseAddress, &error)
                            }
                        }
                    }
                }
            }
            try Native.check(status, error, "searching index \(spec)")
            return Self.results(scores: scores, labels: labels, n: n, k: k)
        }
    }

    static func results(scores: [Float], labels: [Int64], n: Int, k: Int) -> [[ScoredLabel]] {
        var out: [[ScoredLabel]] = []
        out.reserveCapacity(n)
        for q in 0..<n {
            var row: [ScoredLabel] = []
            row.reserveCapacity(k)
            for i in (q * k)..<((q + 1) * k) where labels[i] >= 0 {
                row.append(ScoredLabel(label: labels[i], score: scores[i]))
            }
            out.append(row)
        }
        return out
    }

    /// The bitset's words (an empty set still filters: a valid pointer with 0 words), or nil words.
    private static func withOptionalWords<R>(_ bits: LabelBitset?, _ body: (UnsafeBufferPointer<UInt64>) -> R) -> R {
        guard let bits else { return body(UnsafeBufferPointer(start: nil, count: 0)) }
        return bits.withUnsafeWords { words in
            if words.baseAddress != nil { return body(words) }
            var dummy: UInt64 = 0
            return withUnsafePointer(to: &dummy) { body(UnsafeBufferPointer(start: $0, count: 0)) }
        }
    }

    private static func withOptionalPointer<R>(_ array: [Int64]?, _ body: (UnsafePointer<Int64>?) -> R) -> R {
        guard let array else { return body(nil) }
        return array.withUnsafeBufferPointer { buffer in
            // An empty allowed set must still filter: hand over a valid pointer with count 0.
            if let base = buffer.baseAddress { return body(base) }
            var dummy: Int64 = 0
            return withUnsafePointer(to: &dummy) { body($0) }
        }
    }

    // MARK: - Input checks

    /// Checks shape and values; normalises for cosine.
    private func prepare(_ values: [Float], field: String) throws(SteerError) -> [Float] {
        guard values.count % dimension == 0 else {
            throw SteerError(.dimensionMismatch,
                             "\(field) has \(values.count) floats, not a multiple of the index dimension \(dimension)")
        }
        let bad: Int? = values.withUnsafeBufferPointer { buffer in
            for i in 0..<buffer.count where !buffer[i].isFinite { return i }
            return nil
        }
        if let bad {
            throw SteerError.invalid("\(field) row \(bad / dimension) component \(bad % dimension) is not a finite number")
        }
        guard metric == .cosine else { return values }
        var normalised = values
        let zero: Int? = normalised.withUnsafeBufferPointer { buffer in
            var row = 0
            while row * dimension < buffer.count {
                var norm: Float = 0
                for i in (row * dimension)..<((row + 1) * dimension) { norm += buffer[i] * buffer[i] }
                if !(norm > 0) || !norm.isFinite { return row }
                row += 1
            }
            return nil
        }
        if let zero {
            throw SteerError.invalid("\(field) row \(zero) has zero (or overflowing) length; cosine needs a nonzero vector")
        }
        Vectors.normalizeRows(&normalised, dimension: dimension)
        return normalised
    }

    // MARK: - Access for the file format

    func withHandleForSave<R>(_ body: (OpaquePointer, Int, Int) throws(SteerError) -> R) throws(SteerError) -> R {
        try lock.withReadLock { () throws(SteerError) -> R in try body(handle, settings.nprobe, settings.efSearch) }
    }

    /// Test hook: faiss's HNSW (M, efConstruction), (0, 0) for other families.
    var nativeHNSWParameters: (m: Int, efConstruction: Int) {
        lock.withReadLock { (Int(steer_index_hnsw_m(handle)), Int(steer_index_ef_construction(handle))) }
    }

    /// Test hook: faiss's own HNSW search with SearchParametersHNSW (ignores efSearch in 1.7.3).
    func faissNaiveHNSWSearch(_ queries: [Float], k: Int, efSearch: Int) throws(SteerError) -> [[ScoredLabel]] {
        let prepared = try prepare(queries, field: "queries")
        let n = prepared.count / dimension
        return try lock.withReadLock { () throws(SteerError) -> [[ScoredLabel]] in
            var scores = [Float](repeating: 0, count: n * k)
            var labels = [Int64](repeating: -1, count: n * k)
            var error: UnsafeMutablePointer<CChar>?
            let status = prepared.withUnsafeBufferPointer { q in
                scores.withUnsafeMutableBufferPointer { s in
                    labels.withUnsafeMutableBufferPointer { l in
                        steer_test_faiss_hnsw_search(handle, Int64(n), q.baseAddress, Int64(k), Int64(efSearch), s.baseAddress, l.baseAddress, &error)
                    }
                }
            }
            try Native.check(status, error, "naive faiss HNSW search")
            return Self.results(scores: scores, labels: labels, n: n, k: k)
        }
    }

    /// Test hook: adds new, distinct labels through faiss's own IndexHNSW::add on one OpenMP thread (the
    /// reference for Steer's insertion, which `add` uses when OpenMP runs one thread).
    func faissReferenceHNSWAdd(_ vectors: [Float], labels: [Int64]) throws(SteerError) {
        let prepared = try prepare(vectors, field: "vectors")
        try lock.withWriteLock { () throws(SteerError) in
            var error: UnsafeMutablePointer<CChar>?
            let status = prepared.withUnsafeBufferPointer { v in
                labels.withUnsafeBufferPointer { l in
                    steer_test_hnsw_add_with_faiss(handle, Int64(labels.count), v.baseAddress, l.baseAddress, &error)
                }
            }
            try Native.check(status, error, "reference HNSW add")
        }
    }

    /// Test hook: rows linked by Steer's HNSW insertion in this process so far.
    static var steerInsertedRows: UInt64 { steer_test_hnsw_steer_inserted() }

    /// Test hook: IndexIDMap2::search with SearchParameters (rejected by faiss 1.7.3).
    func faissNaiveIDMap2Search(_ query: [Float], k: Int, allowed: AllowedLabels) throws(SteerError) {
        try lock.withReadLock { () throws(SteerError) in
            var error: UnsafeMutablePointer<CChar>?
            let status = query.withUnsafeBufferPointer { q in
                allowed.sortedLabels.withUnsafeBufferPointer { a in
                    steer_test_idmap2_search_with_params(handle, q.baseAddress, Int64(k), a.baseAddress, Int64(a.count), &error)
                }
            }
            try Native.check(status, error, "naive IndexIDMap2 search")
        }
    }
}

/// faiss build information.
public enum FaissInfo {
    /// faiss's version from its headers, for example "1.7.3".
    public static var version: String { String(cString: steer_faiss_version()) }
    /// OpenMP's maximum thread count for the calling thread.
    public static var openMPMaxThreads: Int { Int(steer_faiss_omp_max_threads()) }
    /// Sets OpenMP's thread count for the calling thread only (libgomp keeps it per thread); n >= 1.
    public static func setOpenMPThreadsForCurrentThread(_ n: Int) { steer_faiss_set_omp_threads(Int32(clamping: max(1, n))) }
}

/// Maps shim status codes to SteerError.
enum Native {
    static func check(_ status: Int32, _ error: UnsafeMutablePointer<CChar>?, _ context: String) throws(SteerError) {
        let message = error.map { String(cString: $0) } ?? "no detail"
        steer_faiss_free(error)
        switch status {
        case STEER_FAISS_OK: return
        case STEER_FAISS_INVALID: throw SteerError.invalid("\(context): \(message)")
        case STEER_FAISS_CORRUPT: throw SteerError(.corrupt, "\(context): \(message)")
        case STEER_FAISS_IO: throw SteerError(.io, "\(context): \(message)")
        default: throw SteerError.internalError("\(context): \(message)")
        }
    }

    /// One exported faiss test entry point: IndexIDMap2 around IVF, remove, count self matches.
    static func idmapIVFRemoveSelfMatches(factory: String, dimension: Int, vectors: [Float], labels: [Int64], removed: [Int64]) throws(SteerError) -> Int {
        var matches: Int64 = 0
        var error: UnsafeMutablePointer<CChar>?
        let status = vectors.withUnsafeBufferPointer { v in
            labels.withUnsafeBufferPointer { l in
                removed.withUnsafeBufferPointer { r in
                    steer_test_idmap_ivf_remove(factory, Int64(dimension), Int64(labels.count), v.baseAddress, l.baseAddress,
                                                Int64(r.count), r.baseAddress, &matches, &error)
                }
            }
        }
        try check(status, error, "naive IndexIDMap2 over IVF")
        return Int(matches)
    }
}

extension Metric {
    /// The shim's metric code (cosine is inner product over normalised vectors).
    var faissCode: Int32 { self == .l2 ? STEER_METRIC_L2 : STEER_METRIC_INNER_PRODUCT }
}
