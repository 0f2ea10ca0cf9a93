import Foundation
import SteerCore
import SteerIndex
import SteerStore

/// Steer's retrieval core: a data directory with an item store (the source of truth) and the current
/// `Generation` (index + encoder). Every call is synchronous and may block on FAISS or RocksDB: call it
/// from worker threads, never from an event loop.
///
/// ## Data directory
/// | path | content |
/// |---|---|
/// | `DIR/steer.json` | dimension, index spec, metric, embedding version, generation id (written when DIR is new) |
/// | `DIR/store/` | the `ItemStore` (RocksDB) |
/// | `DIR/index/index.bin` + `index.json` | the index saved on close, and the store sequence it reflects |
///
/// On open the saved index is loaded and the store's changes since its sequence are replayed; when it
/// is missing, unreadable or of another spec, the index is rebuilt from `ItemStore.scanVectors`.
///
/// ## Writes
/// Upserts and deletes go to the store first (durable once they return when `syncWrites` is on, see
/// `ItemStore`), then to the live index, under one writer lock, so they are visible to every search that
/// starts after they return. The index is updated in chunks of `indexChunk` vectors, so a search waits
/// at most for one chunk.
public final class RetrievalEngine: Sendable {
    /// Settings of an engine.
    public struct Configuration: Sendable {
        /// The data directory (created when missing).
        public var dataDirectory: String
        /// Floats per vector; required when the directory is new, checked otherwise.
        public var dimension: Int?
        /// FAISS-style index spec ("Flat", "HNSW32", "IVF256,Flat"); default "Flat" for a new directory.
        /// Given for an existing directory with another spec, the index is rebuilt with it and the new
        /// spec recorded.
        public var indexSpec: String?
        /// Default `ip` for a new directory; must match otherwise.
        public var metric: Metric?
        /// Default "v1" for a new directory.
        public var embeddingVersion: String?
        /// Fsync the store's WAL on every write (see `ItemStore`).
        public var syncWrites: Bool
        /// Makes the query encoder of the generation; nil → `MeanHistoryEncoder`. Return nil for none.
        public var encoderFactory: (@Sendable (ItemStore, _ embeddingVersion: String, _ dimension: Int) throws(SteerError) -> (any QueryEncoder)?)?
        /// Most items per upsert/delete.
        public var maxBatchItems: Int

        public init(dataDirectory: String, dimension: Int? = nil, indexSpec: String? = nil, metric: Metric? = nil,
                    embeddingVersion: String? = nil, syncWrites: Bool = true, maxBatchItems: Int = 10_000,
                    encoderFactory: (@Sendable (ItemStore, String, Int) throws(SteerError) -> (any QueryEncoder)?)? = nil) {
            self.dataDirectory = dataDirectory
            self.dimension = dimension
            self.indexSpec = indexSpec
            self.metric = metric
            self.embeddingVersion = embeddingVersion
            self.syncWrites = syncWrites
            self.maxBatchItems = maxBatchItems
            self.encoderFactory = encoderFactory
        }
    }

    /// What `DIR/steer.json` holds.
    struct DirectoryConfig: Equatable {
        var dimension: Int
        var indexSpec: String
        var metric: Metric
        var embeddingVersion: String
        var generation: String
    }

    /// Vectors per index update while holding the index's writer lock.
    public static let indexChunk = 1024

    public let configuration: Configuration
    public let store: ItemStore
    private let current: Locked<Generation>
    private let writeLock = NSLock()
    private let closed = Locked(false)
    private let indexDirectory: String

    // MARK: Opening

    /// Opens or creates the data directory and builds or loads the index.
    ///
    /// - Throws: `.invalidRequest` for missing/conflicting settings or a bad spec, `.corrupt` for an
    ///   unreadable `steer.json`, store errors.
    public init(configuration: Configuration) throws(SteerError) {
        self.configuration = configuration
        let directory = configuration.dataDirectory
        guard !directory.isEmpty else { throw SteerError.invalid("data directory must not be empty") }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw SteerError(.io, "cannot create data directory '\(directory)': \(error.localizedDescription)")
        }
        indexDirectory = directory + "/index"
        var config = try Self.resolveConfig(configuration)
        let specChanged = configuration.indexSpec.map { (try? IndexSpec(parsing: $0).factoryString) != config.indexSpec } ?? false
        let spec = try IndexSpec(parsing: configuration.indexSpec ?? config.indexSpec)
        if specChanged { config.indexSpec = spec.factoryString }
        try Self.writeConfig(config, directory: directory)

        store = try ItemStore(options: ItemStore.Options(path: directory + "/store", syncWrites: configuration.syncWrites,
                                                         maxBatchItems: configuration.maxBatchItems))
        do throws(SteerError) {
            try store.createVersion(config.embeddingVersion, dimension: config.dimension)
            let (index, sequence) = try Self.openIndex(store: store, config: config, spec: spec, indexDirectory: indexDirectory)
            let encoder: (any QueryEncoder)?
            if let factory = configuration.encoderFactory {
                encoder = try factory(store, config.embeddingVersion, config.dimension)
            } else {
                encoder = MeanHistoryEncoder(store: store, embeddingVersion: config.embeddingVersion, dimension: config.dimension)
            }
            if let encoder, encoder.dimension != config.dimension {
                throw SteerError(.dimensionMismatch, "query encoder produces \(encoder.dimension)-d vectors, the data directory holds \(config.dimension)-d vectors")
            }
            current = Locked(Generation(id: config.generation, embeddingVersion: config.embeddingVersion, dimension: config.dimension,
                                        metric: config.metric, index: index, encoder: encoder, builtAtSequence: sequence))
        } catch {
            store.close()
            throw error
        }
    }

    private static func resolveConfig(_ configuration: Configuration) throws(SteerError) -> DirectoryConfig {
        let path = configuration.dataDirectory + "/steer.json"
        if FileManager.default.fileExists(atPath: path) {
            guard let data = FileManager.default.contents(atPath: path),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let dimension = object["dimension"] as? Int, let spec = object["index_spec"] as? String,
                  let metricText = object["metric"] as? String, let metric = try? Metric(parsing: metricText),
                  let version = object["embedding_version"] as? String
            else {
                throw SteerError(.corrupt, "'\(path)' is not a valid Steer data-directory config (dimension, index_spec, metric, embedding_version)")
            }
            let config = DirectoryConfig(dimension: dimension, indexSpec: spec, metric: metric, embeddingVersion: version,
                                         generation: object["generation"] as? String ?? "g1")
            if let wanted = configuration.dimension, wanted != dimension {
                throw SteerError(.dimensionMismatch, "data directory '\(configuration.dataDirectory)' holds \(dimension)-d vectors; --dimension \(wanted) conflicts")
            }
            if let wanted = configuration.metric, wanted != metric {
                throw SteerError.invalid("data directory '\(configuration.dataDirectory)' uses metric \(metric.rawValue); --metric \(wanted.rawValue) conflicts")
            }
            if let wanted = configuration.embeddingVersion, wanted != version {
                throw SteerError.invalid("data directory '\(configuration.dataDirectory)' serves embedding version '\(version)'; '\(wanted)' conflicts")
            }
            return config
        }
        guard let dimension = configuration.dimension else {
            throw SteerError.invalid("data directory '\(configuration.dataDirectory)' is new: give its dimension (--dimension)")
        }
        guard (1...ItemStore.maxDimension).contains(dimension) else {
            throw SteerError.invalid("dimension must be 1 to \(ItemStore.maxDimension), got \(dimension)")
        }
        let spec = try IndexSpec(parsing: configuration.indexSpec ?? "Flat")
        return DirectoryConfig(dimension: dimension, indexSpec: spec.factoryString, metric: configuration.metric ?? .innerProduct,
                               embeddingVersion: configuration.embeddingVersion ?? "v1", generation: "g1")
    }

    private static func writeConfig(_ config: DirectoryConfig, directory: String) throws(SteerError) {
        let object: [String: Any] = [
            "format": 1, "dimension": config.dimension, "index_spec": config.indexSpec, "metric": config.metric.rawValue,
            "embedding_version": config.embeddingVersion, "generation": config.generation,
        ]
        try writeJSON(object, to: directory + "/steer.json")
    }

    private static func writeJSON(_ object: [String: Any], to path: String) throws(SteerError) {
        do {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw SteerError(.io, "cannot write '\(path)': \(error.localizedDescription)")
        }
    }

    /// Loads the saved index and replays later changes, or rebuilds from the store.
    private static func openIndex(store: ItemStore, config: DirectoryConfig, spec: IndexSpec, indexDirectory: String) throws(SteerError) -> (VectorIndex, UInt64) {
        let metaPath = indexDirectory + "/index.json"
        let indexPath = indexDirectory + "/index.bin"
        if let data = FileManager.default.contents(atPath: metaPath),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
           let sequenceNumber = object["sequence"] as? NSNumber,
           object["index_spec"] as? String == spec.factoryString,
           object["embedding_version"] as? String == config.embeddingVersion,
           let index = try? VectorIndex.load(path: indexPath),
           index.dimension == config.dimension, index.metric == config.metric, index.spec.factoryString == spec.factoryString,
           let changes = try? store.changes(since: sequenceNumber.uint64Value, version: config.embeddingVersion) {
            if !changes.deletes.isEmpty { try index.remove(labels: changes.deletes) }
            try addChunked(index: index, rows: changes.upserts, dimension: config.dimension, metric: config.metric)
            return (index, sequenceNumber.uint64Value)
        }
        return try buildIndex(store: store, config: config, spec: spec)
    }

    /// Builds an index from every vector of the version in the store (training first when the spec needs it).
    private static func buildIndex(store: ItemStore, config: DirectoryConfig, spec: IndexSpec) throws(SteerError) -> (VectorIndex, UInt64) {
        let index = try VectorIndex(spec: spec, dimension: config.dimension, metric: config.metric)
        let dimension = config.dimension
        if spec.needsTraining {
            // Training needs the vectors first; small stores stay untrained until enough items arrive.
            var all: [Float] = []
            var labels: [Int64] = []
            let sequence = try runScan(store: store, version: config.embeddingVersion) { (ids, vectors) throws(SteerError) in
                labels.append(contentsOf: ids)
                all.append(contentsOf: vectors)
            }
            if labels.count >= minimumTrainingVectors(spec) {
                var prepared = all
                if config.metric == .cosine { Vectors.normalizeRows(&prepared, dimension: dimension) }
                try index.train(prepared)
                try addChunked(index: index, rows: zip(labels, stride(from: 0, to: all.count, by: dimension)).map { ($0, Array(all[$1..<($1 + dimension)])) },
                               dimension: dimension, metric: config.metric)
            }
            return (index, sequence)
        }
        let sequence = try runScan(store: store, version: config.embeddingVersion) { (ids, vectors) throws(SteerError) in
            var prepared = vectors
            if config.metric == .cosine { Vectors.normalizeRows(&prepared, dimension: dimension) }
            try index.add(prepared, labels: ids)
        }
        return (index, sequence)
    }

    private static func runScan(store: ItemStore, version: String, _ body: (_ ids: [Int64], _ vectors: [Float]) throws(SteerError) -> Void) throws(SteerError) -> UInt64 {
        do {
            return try store.scanVectors(version: version) { ids, vectors in try body(ids, vectors) }
        } catch let error as SteerError {
            throw error
        } catch {
            throw SteerError.internalError("index build failed: \(error)")
        }
    }

    /// Vectors needed before an IVF index is trained: one per list at least (faiss warns below 39 per list).
    static func minimumTrainingVectors(_ spec: IndexSpec) -> Int {
        switch spec.family {
        case .ivfFlat(let lists), .ivfSQ8(let lists): return max(lists, 1)
        case .ivfPQ(let lists, _, let bits): return max(lists, 1 << bits)
        case .flat, .hnsw: return 0
        }
    }

    private static func addChunked(index: VectorIndex, rows: [(Int64, [Float])], dimension: Int, metric: Metric) throws(SteerError) {
        var start = 0
        while start < rows.count {
            let end = min(rows.count, start + indexChunk)
            var vectors: [Float] = []
            vectors.reserveCapacity((end - start) * dimension)
            var labels: [Int64] = []
            labels.reserveCapacity(end - start)
            for row in rows[start..<end] {
                labels.append(row.0)
                vectors.append(contentsOf: row.1)
            }
            if metric == .cosine { Vectors.normalizeRows(&vectors, dimension: dimension) }
            try index.add(vectors, labels: labels)
            start = end
        }
    }

    // MARK: Generations

    /// The generation serving now.
    public var generation: Generation { current.get() }

    /// Replaces the generation atomically; searches that started keep the one they read. Writes are
    /// held off during the swap. The new generation must already contain the store's current state.
    ///
    /// - Returns: the generation that was replaced.
    @discardableResult
    public func replaceGeneration(_ next: Generation) -> Generation {
        writeLock.lock()
        defer { writeLock.unlock() }
        return current.withLock { value in
            let old = value
            value = next
            return old
        }
    }

    private func requireOpen() throws(SteerError) {
        if closed.get() { throw SteerError(.unavailable, "the engine is shut down") }
    }

    // MARK: Writes

    /// Inserts or replaces items: store first, then the live index.
    ///
    /// - Returns: the number of items written.
    /// - Throws: `.dimensionMismatch` naming `items[i].vector`, `.invalidRequest` for non-finite values or
    ///   duplicates, store limits; nothing is written when any item is invalid.
    public func upsert(_ items: [ItemInput]) throws(SteerError) -> Int {
        try requireOpen()
        if items.isEmpty { return 0 }
        let generation = generation
        let dimension = generation.dimension
        for (position, item) in items.enumerated() {
            guard item.vector.count == dimension else {
                throw SteerError.dimension(expected: dimension, got: item.vector.count, field: "items[\(position)].vector")
            }
            try Vectors.requireFinite(item.vector, field: "items[\(position)].vector")
            if generation.metric == .cosine && item.vector.allSatisfy({ $0 == 0 }) {
                throw SteerError.invalid("items[\(position)].vector is all zeros, which has no direction for the cosine metric")
            }
        }
        let writes = items.map {
            ItemStore.ItemWrite(id: $0.id, title: $0.title, tags: $0.tags, attributesJSON: $0.attributesJSON,
                                vectors: [generation.embeddingVersion: $0.vector])
        }
        writeLock.lock()
        defer { writeLock.unlock() }
        let live = self.generation
        let result = try store.upsert(writes)
        try indexAdd(live, rows: zip(result.internalIDs, items).map { ($0, $1.vector) })
        return items.count
    }

    private func indexAdd(_ generation: Generation, rows: [(Int64, [Float])]) throws(SteerError) {
        let index = generation.index
        if index.spec.needsTraining && !index.isTrained {
            guard store.count >= Self.minimumTrainingVectors(index.spec) else { return }
            // Enough items: train on everything stored and add it all (this batch included).
            var all: [Float] = []
            var labels: [Int64] = []
            _ = try Self.runScan(store: store, version: generation.embeddingVersion) { (ids, vectors) throws(SteerError) in
                labels.append(contentsOf: ids)
                all.append(contentsOf: vectors)
            }
            var prepared = all
            if generation.metric == .cosine { Vectors.normalizeRows(&prepared, dimension: generation.dimension) }
            try index.train(prepared)
            let dimension = generation.dimension
            try Self.addChunked(index: index, rows: labels.enumerated().map { ($1, Array(all[($0 * dimension)..<(($0 + 1) * dimension)])) },
                                dimension: dimension, metric: generation.metric)
            return
        }
        try Self.addChunked(index: index, rows: rows, dimension: generation.dimension, metric: generation.metric)
    }

    /// Deletes items from the store, then from the index. Unknown ids are ignored.
    ///
    /// - Returns: how many items existed.
    public func delete(_ ids: [ItemID]) throws(SteerError) -> Int {
        try requireOpen()
        writeLock.lock()
        defer { writeLock.unlock() }
        let result = try store.delete(ids)
        let internalIDs = result.deleted.values.sorted()
        if !internalIDs.isEmpty {
            let index = generation.index
            var start = 0
            while start < internalIDs.count {
                let end = min(internalIDs.count, start + Self.indexChunk)
                if !index.spec.needsTraining || index.isTrained { try index.remove(labels: Array(internalIDs[start..<end])) }
                start = end
            }
        }
        return result.deleted.count
    }

    // MARK: Reads

    /// Items by external id, in input order; nil for unknown ids.
    public func get(_ ids: [ItemID]) throws(SteerError) -> [ItemOutput?] {
        try requireOpen()
        let generation = generation
        let records = try store.get(ids)
        let found = records.compactMap { $0?.internalID }
        let vectors = found.isEmpty ? [] : try store.vectors(internalIDs: found, version: generation.embeddingVersion)
        var next = 0
        return records.map { record in
            guard let record else { return nil }
            let vector = vectors[next]
            next += 1
            return ItemOutput(id: record.id, title: record.title, tags: record.tags, attributesJSON: record.attributesJSON, vector: vector)
        }
    }

    /// Searches one or more query vectors.
    ///
    /// - Parameters:
    ///   - queries: each `dimension` floats.
    ///   - options: k, index knobs, tag filter.
    /// - Returns: one hit list per query, best first, hydrated with title and tags.
    /// - Throws: `.dimensionMismatch` naming `vector` (one query) or `vectors[i]`; `.invalidRequest` for a bad k.
    public func search(_ queries: [[Float]], options: SearchOptions) throws(SteerError) -> [[Hit]] {
        try requireOpen()
        let generation = generation
        var flat: [Float] = []
        flat.reserveCapacity(queries.count * generation.dimension)
        for (position, query) in queries.enumerated() {
            let field = queries.count == 1 ? "vector" : "vectors[\(position)]"
            guard query.count == generation.dimension else {
                throw SteerError.dimension(expected: generation.dimension, got: query.count, field: field)
            }
            try Vectors.requireFinite(query, field: field)
            flat.append(contentsOf: query)
        }
        let (required, excluded) = try resolveFilter(options.filter, extraRequired: [], extraExcluded: [])
        let results = try searchLabels(generation, flat, k: options.k, nprobe: options.nprobe, efSearch: options.efSearch,
                                       required: required, excluded: excluded)
        return try hydrate(results)
    }

    /// Turns a tag filter (plus clause constraints) into a required label set (nil: no requirement) and
    /// an excluded label set.
    private func resolveFilter(_ filter: TagFilter, extraRequired: [[String]], extraExcluded: [String]) throws(SteerError) -> (Set<Int64>?, Set<Int64>) {
        var required: Set<Int64>?
        var groups = extraRequired
        if !filter.tagsAny.isEmpty { groups.append(filter.tagsAny) }
        for group in groups {
            var union = Set<Int64>()
            for tag in group { union.formUnion(try store.internalIDs(withTag: tag)) }
            required = required.map { $0.intersection(union) } ?? union
        }
        var excluded = Set<Int64>()
        for tag in filter.tagsNone + extraExcluded { excluded.formUnion(try store.internalIDs(withTag: tag)) }
        return (required, excluded)
    }

    /// Searches with a required set (searched through `AllowedLabels`) and an excluded set (subtracted from
    /// the required set, or over-fetched by its size and post-filtered when there is no required set).
    private func searchLabels(_ generation: Generation, _ queries: [Float], k: Int, nprobe: Int?, efSearch: Int?,
                              required: Set<Int64>?, excluded: Set<Int64>) throws(SteerError) -> [[ScoredLabel]] {
        guard k >= 1 else { throw SteerError.invalid("k must be at least 1, got \(k)") }
        guard k <= VectorIndex.maxK else { throw SteerError(.tooLarge, "k is \(k), limit is \(VectorIndex.maxK)") }
        let count = queries.count / max(generation.dimension, 1)
        let index = generation.index
        if index.spec.needsTraining && !index.isTrained {
            throw SteerError(.unavailable, "index \(index.spec) is not trained yet: it needs \(Self.minimumTrainingVectors(index.spec)) items, the store has \(store.count)")
        }
        var parameters = SearchParameters(nprobe: nprobe, efSearch: efSearch)
        var fetch = k
        if let required {
            let allowed = required.subtracting(excluded)
            if allowed.isEmpty { return Array(repeating: [], count: count) }
            parameters.allowed = AllowedLabels(sortedLabels: allowed.sorted())
        } else if !excluded.isEmpty {
            fetch = min(VectorIndex.maxK, k + excluded.count)
        }
        var prepared = queries
        if generation.metric == .cosine { Vectors.normalizeRows(&prepared, dimension: generation.dimension) }
        let raw = try index.search(prepared, k: fetch, parameters: parameters)
        if fetch == k || excluded.isEmpty { return raw }
        return raw.map { list in Array(list.lazy.filter { !excluded.contains($0.label) }.prefix(k)) }
    }

    private func hydrate(_ results: [[ScoredLabel]]) throws(SteerError) -> [[Hit]] {
        let labels = results.flatMap { $0.map(\.label) }
        if labels.isEmpty { return results.map { _ in [] } }
        let records = try store.records(internalIDs: labels)
        var position = 0
        return results.map { list in
            var hits: [Hit] = []
            hits.reserveCapacity(list.count)
            for scored in list {
                // A hit whose item was deleted between the search and this read is dropped.
                if let record = records[position] {
                    hits.append(Hit(id: record.id, score: scored.score, title: record.title, tags: record.tags))
                }
                position += 1
            }
            return hits
        }
    }

    // MARK: Recommend and encode

    private func encoder(_ generation: Generation) throws(SteerError) -> any QueryEncoder {
        guard let encoder = generation.encoder else {
            throw SteerError(.unavailable, "generation \(generation.id) has no query encoder: recommend and encode are unavailable")
        }
        return encoder
    }

    /// Encodes a history and prompt with the generation's encoder.
    public func encode(_ request: RecommendRequest) throws(SteerError) -> EncodedQuery {
        try requireOpen()
        return try encoder(generation).encode(history: request.history, prompt: request.prompt)
    }

    /// Recommends items for a history and an optional prompt.
    public func recommend(_ request: RecommendRequest) throws(SteerError) -> Recommendation {
        try requireOpen()
        let generation = generation
        let encoded = try encoder(generation).encode(history: request.history, prompt: request.prompt)
        guard encoded.vector.count == generation.dimension, encoded.baseVector.count == generation.dimension else {
            throw SteerError.internalError("query encoder returned \(encoded.vector.count)-d vector, expected \(generation.dimension)")
        }
        var requiredGroups: [[String]] = []
        var excludedTags: [String] = []
        if request.constraints != .soft {
            for clause in encoded.clauses where !clause.tags.isEmpty {
                switch clause.polarity {
                case .positive: requiredGroups.append(clause.tags)
                case .negative: excludedTags.append(contentsOf: clause.tags)
                }
            }
        }
        var (required, excluded) = try resolveFilter(request.filter, extraRequired: requiredGroups, extraExcluded: excludedTags)
        if request.excludeHistory {
            let unknown = Set(encoded.unknownHistory)
            let known = request.history.filter { !unknown.contains($0) }
            for record in try store.get(known) {
                if let record { excluded.insert(record.internalID) }
            }
        }
        let vector = request.constraints == .hard ? encoded.baseVector : encoded.vector
        let results = try searchLabels(generation, vector, k: request.k, nprobe: request.nprobe, efSearch: request.efSearch,
                                       required: required, excluded: excluded)
        return Recommendation(hits: try hydrate(results)[0], clauses: encoded.clauses, unknownHistory: encoded.unknownHistory)
    }

    // MARK: Stats and lifecycle

    /// Sets FAISS's OpenMP thread count for the calling thread (libgomp keeps it per thread). The server
    /// calls it once on each worker thread: one OpenMP thread per request, concurrency from the workers
    /// (FINDINGS.md: two OpenMP threads per single-query search collapse throughput on a busy machine).
    public static func setOpenMPThreadsForCurrentThread(_ count: Int) {
        FaissInfo.setOpenMPThreadsForCurrentThread(count)
    }

    public func stats() -> EngineStats {
        let generation = generation
        return EngineStats(
            generation: generation.id, embeddingVersion: generation.embeddingVersion, dimension: generation.dimension,
            metric: generation.metric, indexSpec: generation.index.spec.factoryString, items: store.count,
            indexed: generation.index.count, tombstones: generation.index.tombstoneCount, storeSequence: store.latestSequence,
            builtAtSequence: generation.builtAtSequence, encoder: generation.encoder.map { String(describing: type(of: $0)) },
            encoderStatistics: generation.encoder?.statistics ?? [],
            faissVersion: FaissInfo.version, openMPMaxThreads: FaissInfo.openMPMaxThreads)
    }

    /// Saves the index with the store sequence it reflects (writes are held off meanwhile), then trims
    /// the store's change log up to that sequence.
    public func saveIndex() throws(SteerError) {
        writeLock.lock()
        defer { writeLock.unlock() }
        try saveIndexLocked()
    }

    private func saveIndexLocked() throws(SteerError) {
        let generation = generation
        let index = generation.index
        if index.spec.needsTraining && !index.isTrained { return }
        let sequence = store.latestSequence
        do {
            try FileManager.default.createDirectory(atPath: indexDirectory, withIntermediateDirectories: true)
        } catch {
            throw SteerError(.io, "cannot create '\(indexDirectory)': \(error.localizedDescription)")
        }
        // Index first, then the sequence: an index newer than its recorded sequence only replays some
        // changes twice (idempotent); the reverse would lose changes.
        try index.save(to: indexDirectory + "/index.bin")
        try Self.writeJSON(["format": 1, "sequence": NSNumber(value: sequence), "index_spec": index.spec.factoryString,
                            "embedding_version": generation.embeddingVersion, "generation": generation.id],
                           to: indexDirectory + "/index.json")
        try store.trimChangeLog(upTo: sequence)
    }

    /// Saves the index and closes the store. Later calls fail with `.unavailable`. Idempotent.
    public func close() throws(SteerError) {
        writeLock.lock()
        defer { writeLock.unlock() }
        let wasClosed = closed.withLock { value in
            let was = value
            value = true
            return was
        }
        if wasClosed { return }
        defer { store.close() }
        try saveIndexLocked()
    }
}
