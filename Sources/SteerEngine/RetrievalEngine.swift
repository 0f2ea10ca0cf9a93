import Foundation
import SteerCore
import SteerData
import SteerIndex
import SteerModel
import SteerStore

/// Steer's retrieval core: a data directory with an item store (the source of truth) and the current
/// `Generation` (index + encoder). Every call is synchronous and may block on FAISS or RocksDB: call it
/// from worker threads, never from an event loop.
///
/// ## Data directory
/// | path | content |
/// |---|---|
/// | `DIR/steer.json` | dimension, index spec, metric, embedding version, generation id, and after a swap the served generation directory |
/// | `DIR/store/` | the `ItemStore` (RocksDB) |
/// | `DIR/index/index.bin` + `index.json` | the index saved on close (and periodically by `IndexCheckpointer`), and the store sequence it reflects |
/// | `DIR/generations/<id>/` | generation directories written by `steer-index build`; `swap` loads only these |
///
/// On open, a generation directory recorded by `swap` is loaded again (checksums verified) and the
/// store's changes since its manifest's sequence are replayed; when it is gone or invalid, a warning is
/// kept in `openingWarnings` and the engine falls back to its own index. That one is the saved index
/// with the changes since its sequence replayed, or, when it is missing, unreadable or of another spec,
/// an index rebuilt from `ItemStore.scanVectors`.
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
        /// Memory for item records cached for search hydration (`ItemStore.Options.recordCacheBytes`);
        /// 0 reads every hit's title and tags from RocksDB.
        public var recordCacheBytes: Int
        /// all-MiniLM-L6-v2 files for the `DPRModel` that `swap` loads for a `checkpoint`; nil →
        /// `models/all-MiniLM-L6-v2`.
        public var miniLMDirectory: String?
        /// The directory a `swap`'s `checkpoint` must lie inside (`PathRoot` rules); nil refuses every
        /// swap that names a checkpoint.
        public var checkpointRoot: String?
        /// Payload indexes to declare on open (attribute path → kind); those missing are built over the
        /// existing items (`ItemStore.declarePayloadIndex`). Declared ones stay declared.
        public var payloadIndexes: [String: PayloadKind] = [:]
        /// Most events kept per user in the store's histories (`ItemStore.Options.maxEventsPerUser`).
        public var maxEventsPerUser: Int = 200
        /// Mean recall@10 the default ef_search/nprobe of every served generation is calibrated to
        /// (`RecallCalibration`); nil keeps the index's own defaults.
        public var recallTarget: Double? = RecallCalibration.defaultTarget
        /// Most item records one filter may read for attribute leaves without a payload index
        /// (`FilterPlanner.Settings.maxScanRecords`).
        public var maxScanRecords: Int = FilterPlanner.Settings.defaultMaxScanRecords
        /// Runs on the calibration thread before each recall calibration (tests hold a run back with
        /// it to see searches answered meanwhile); nil in servers.
        public var recallCalibrationBeforeRun: (@Sendable () -> Void)? = nil
        /// Memory for resolved filters kept between requests (`FilterCache`); 0 turns the cache off.
        public var filterCacheBytes: Int = FilterCache.defaultCapacityBytes

        public init(dataDirectory: String, dimension: Int? = nil, indexSpec: String? = nil, metric: Metric? = nil,
                    embeddingVersion: String? = nil, syncWrites: Bool = true, maxBatchItems: Int = 10_000,
                    miniLMDirectory: String? = nil, checkpointRoot: String? = nil, recordCacheBytes: Int = Configuration.defaultRecordCacheBytes,
                    payloadIndexes: [String: PayloadKind] = [:],
                    encoderFactory: (@Sendable (ItemStore, String, Int) throws(SteerError) -> (any QueryEncoder)?)? = nil) {
            self.payloadIndexes = payloadIndexes
            self.miniLMDirectory = miniLMDirectory
            self.checkpointRoot = checkpointRoot
            self.dataDirectory = dataDirectory
            self.dimension = dimension
            self.indexSpec = indexSpec
            self.metric = metric
            self.embeddingVersion = embeddingVersion
            self.syncWrites = syncWrites
            self.maxBatchItems = maxBatchItems
            self.recordCacheBytes = recordCacheBytes
            self.encoderFactory = encoderFactory
        }

        /// 256 MiB: the records of about a million items with short titles and a few tags.
        public static let defaultRecordCacheBytes = 256 << 20
    }

    /// What `DIR/steer.json` holds (its owner, fields and checks: `DataDirectoryConfig`).
    typealias DirectoryConfig = DataDirectoryConfig

    /// Vectors per index update while holding the index's writer lock.
    public static let indexChunk = 1024

    public let configuration: Configuration
    public let store: ItemStore
    /// Chooses and counts the plan of every search and recommend (`FilterPlanner`).
    public let filterPlanner = FilterPlanner()
    /// Calibrates the default ef_search/nprobe of the serving generation to `Configuration.recallTarget`.
    public let recallCalibrator: RecallCalibrator
    /// Filters resolved at the store's current sequence, kept for the next request (`FilterCache`).
    public let filterCache: FilterCache
    let current: Locked<Generation>
    let writeLock = NSLock()
    private let closed = Locked(false)
    private let indexDirectory: String
    /// Serialises swaps (loading and catching up happen outside `writeLock`).
    let swapLock = NSLock()
    /// The generation `prepare` loaded and `activate` switches to (`GenerationStaging.swift`); at most one.
    let stagedSlot = Locked<StagedGeneration?>(nil)
    /// What `DIR/steer.json` says now (swaps change the generation, its directory and the version).
    let directoryConfig: Locked<DirectoryConfig>
    /// When a write reached the store but not the live index (an index error after the store commit),
    /// the store sequence before that write: the index holds every write up to it, and the next write,
    /// save or swap replays the rest from the store (`catchUpIndexLocked`). nil while the index is
    /// complete. Changed only under `writeLock`.
    let indexLag = Locked<UInt64?>(nil)
    /// `store.appliedStreamSequence` as last applied (set under `writeLock`); `appliedChanged` is
    /// broadcast after each change, for `waitForApplied`.
    private let applied: Locked<UInt64>
    private let appliedChanged = NSCondition()
    /// Callbacks of `whenApplied` not called yet, by ticket, with the sequence each waits for; read and
    /// changed holding its lock, which `markApplied` takes after it published the new sequence.
    private let appliedWaiters = Locked<(nextTicket: UInt64, waiting: [UInt64: (sequence: UInt64, callback: @Sendable () -> Void)])>(
        (nextTicket: 0, waiting: [:]))
    /// Problems met while opening that the engine recovered from (a recorded generation directory that
    /// is gone or invalid); the server logs them as warnings.
    public let openingWarnings: [String]

    // MARK: Opening

    /// Opens or creates the data directory and builds or loads the index.
    ///
    /// - Throws: `.invalidRequest` for missing/conflicting settings or a bad spec, `.corrupt` for an
    ///   unreadable `steer.json`, store errors.
    public init(configuration: Configuration) throws(SteerError) {
        self.configuration = configuration
        recallCalibrator = RecallCalibrator(target: configuration.recallTarget, beforeRun: configuration.recallCalibrationBeforeRun)
        filterCache = FilterCache(capacityBytes: configuration.filterCacheBytes)
        filterPlanner.settings.withLock { $0.maxScanRecords = max(0, configuration.maxScanRecords) }
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
                                                         maxBatchItems: configuration.maxBatchItems,
                                                         recordCacheBytes: configuration.recordCacheBytes,
                                                         maxEventsPerUser: configuration.maxEventsPerUser))
        for (name, kind) in configuration.payloadIndexes.sorted(by: { $0.key < $1.key }) {
            do {
                try store.declarePayloadIndex(name, kind: kind)
            } catch {
                store.close()
                throw error
            }
        }
        applied = Locked(store.appliedStreamSequence)
        do throws(SteerError) {
            try store.createVersion(config.embeddingVersion, dimension: config.dimension)
            var warnings: [String] = []
            var served: (IndexGeneration, UInt64)?
            if let recorded = config.generationDirectory {
                do {
                    served = try Self.openRecordedGeneration(recorded, store: store, config: config, generations: directory + "/generations")
                } catch {
                    warnings.append("generation directory '\(recorded)' recorded in steer.json cannot be served (\(error.message)); rebuilding the index from the store")
                    config.generationDirectory = nil
                    config.generation = DataDirectoryConfig.ownGeneration
                    try Self.writeConfig(config, directory: directory)
                }
            }
            if served == nil {
                let (built, sequence, warning) = try Self.openIndex(store: store, config: config, spec: spec, indexDirectory: indexDirectory)
                if let warning { warnings.append(warning) }
                served = (try IndexGeneration.unsaved(generationID: config.generation, embeddingVersion: config.embeddingVersion,
                                                      storeSequence: sequence, shards: [built]), sequence)
            }
            guard let (index, sequence) = served else { throw SteerError.internalError("no index was opened") }
            openingWarnings = warnings
            directoryConfig = Locked(config)
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
            // Calibrate the loaded index now, in the background, rather than on the first search.
            recallCalibrator.calibrateIfDue(current.get(), store: store)
        } catch {
            store.close()
            throw error
        }
    }

    private static func resolveConfig(_ configuration: Configuration) throws(SteerError) -> DirectoryConfig {
        if let config = try DataDirectoryConfig.read(dataDirectory: configuration.dataDirectory) {
            if let wanted = configuration.dimension, wanted != config.dimension {
                throw SteerError(.dimensionMismatch, "data directory '\(configuration.dataDirectory)' holds \(config.dimension)-d vectors; --dimension \(wanted) conflicts")
            }
            if let wanted = configuration.metric, wanted != config.metric {
                throw SteerError.invalid("data directory '\(configuration.dataDirectory)' uses metric \(config.metric.rawValue); --metric \(wanted.rawValue) conflicts")
            }
            if let wanted = configuration.embeddingVersion, wanted != config.embeddingVersion {
                throw SteerError.invalid("data directory '\(configuration.dataDirectory)' serves embedding version '\(config.embeddingVersion)'; '\(wanted)' conflicts")
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
                               embeddingVersion: configuration.embeddingVersion ?? "v1")
    }

    static func writeConfig(_ config: DirectoryConfig, directory: String) throws(SteerError) {
        try config.write(dataDirectory: directory)
    }

    private static func writeJSON(_ object: [String: Any], to path: String) throws(SteerError) {
        do {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
            try AtomicFile.write([UInt8](data), to: path)
        } catch let error as SteerError {
            throw error
        } catch {
            throw SteerError(.io, "cannot write '\(path)': \(error.localizedDescription)")
        }
    }

    /// Loads the generation directory a swap recorded and replays the store's changes since its manifest.
    private static func openRecordedGeneration(_ recorded: String, store: ItemStore, config: DirectoryConfig, generations: String) throws(SteerError) -> (IndexGeneration, UInt64) {
        let directory = try PathRoot(generations).resolve(recorded, field: "generation_directory")
        let loaded = try IndexGeneration.load(directory: directory)
        try checkServable(loaded, store: store, dimension: config.dimension, metric: config.metric)
        guard loaded.manifest.embeddingVersion == config.embeddingVersion else {
            throw SteerError.invalid("it indexes embedding version '\(loaded.manifest.embeddingVersion)', steer.json says '\(config.embeddingVersion)'")
        }
        _ = try GenerationCatchUp.replay(store: store, into: loaded)
        return (loaded, loaded.manifest.storeSequence)
    }

    /// The checks every generation passes before it serves: dimension and metric of the data directory,
    /// and an embedding version that exists in the store with that dimension and is completely ingested.
    ///
    /// Then that it was built from this store: a manifest with a `store_id` must name this store's
    /// (`ItemStore.storeID`), and its `store_sequence` may not be ahead of the store's latest sequence
    /// (an index claiming writes the store never made would replay nothing and serve a wrong index).
    /// Both refusals are `.corrupt`. A manifest without `store_id` (written before store ids existed)
    /// passes the sequence bound and the version checks only.
    static func checkServable(_ loaded: IndexGeneration, store: ItemStore, dimension: Int, metric: Metric) throws(SteerError) {
        let manifest = loaded.manifest
        guard manifest.dimension == dimension else {
            throw SteerError(.dimensionMismatch, "generation \(manifest.generationID) has dimension \(manifest.dimension), the data directory holds \(dimension)-d vectors")
        }
        guard manifest.metric == metric else {
            throw SteerError.invalid("generation \(manifest.generationID) uses metric \(manifest.metric.rawValue), the data directory uses \(metric.rawValue)")
        }
        if let built = manifest.storeID, built != store.storeID {
            throw SteerError(.corrupt, "generation \(manifest.generationID) was built from store \(built), this data directory's store is \(store.storeID ?? "unidentified")")
        }
        let latest = store.latestSequence
        guard manifest.storeSequence <= latest else {
            throw SteerError(.corrupt, "generation \(manifest.generationID) claims store sequence \(manifest.storeSequence), ahead of the store's latest \(latest): it was not built from this store")
        }
        guard let version = store.version(named: manifest.embeddingVersion) else {
            throw SteerError.notFound("generation \(manifest.generationID) indexes embedding version '\(manifest.embeddingVersion)', which is not in the store")
        }
        guard version.dimension == dimension else {
            throw SteerError(.dimensionMismatch, "embedding version '\(version.name)' has dimension \(version.dimension), the data directory holds \(dimension)-d vectors")
        }
        if let entry = try VersionRegistry.read(storePath: store.options.path).versions[manifest.embeddingVersion], entry.status != .complete {
            throw SteerError.invalid("embedding version '\(manifest.embeddingVersion)' of generation \(manifest.generationID) is still being ingested (status \(entry.status.rawValue))")
        }
    }

    /// Loads the saved index and replays later changes, or rebuilds from the store.
    ///
    /// `index.json` is trusted only when its `store_id` (when it has one: files written before store ids
    /// existed do not) is this store's and its `sequence` is not ahead of the store's latest sequence;
    /// otherwise the index is rebuilt from the store and a warning returned.
    private static func openIndex(store: ItemStore, config: DirectoryConfig, spec: IndexSpec, indexDirectory: String) throws(SteerError) -> (VectorIndex, UInt64, String?) {
        let metaPath = indexDirectory + "/index.json"
        let indexPath = indexDirectory + "/index.bin"
        let data = FileManager.default.contents(atPath: metaPath)
        let object = data.flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        if let object {
            var distrust: String?
            if let recorded = object["store_id"] as? String, recorded != store.storeID {
                distrust = "it was saved for store \(recorded), this data directory's store is \(store.storeID ?? "unidentified")"
            } else if let number = object["sequence"] as? NSNumber, number.uint64Value > store.latestSequence {
                distrust = "its sequence \(number.uint64Value) is ahead of the store's latest \(store.latestSequence)"
            }
            if let distrust {
                let (index, sequence) = try buildIndex(store: store, config: config, spec: spec)
                return (index, sequence, "corrupt: '\(metaPath)' is not trusted (\(distrust)); the index was rebuilt from the store")
            }
        }
        if let object,
           let sequenceNumber = object["sequence"] as? NSNumber,
           object["index_spec"] as? String == spec.factoryString,
           object["embedding_version"] as? String == config.embeddingVersion,
           let index = try? VectorIndex.load(path: indexPath),
           index.dimension == config.dimension, index.metric == config.metric, index.spec.factoryString == spec.factoryString,
           let changes = try? store.changes(since: sequenceNumber.uint64Value, version: config.embeddingVersion) {
            if !changes.deletes.isEmpty { try index.remove(labels: changes.deletes) }
            try addChunked(index: index, rows: changes.upserts, dimension: config.dimension, metric: config.metric)
            return (index, sequenceNumber.uint64Value, nil)
        }
        let (index, sequence) = try buildIndex(store: store, config: config, spec: spec)
        return (index, sequence, nil)
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
                try addChunked(index: index, labels: labels, vectors: all, dimension: dimension, metric: config.metric)
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
        case .ivfPQ(let lists, _, let bits), .opqIVFPQ(_, _, let lists, _, let bits): return max(lists, 1 << bits)
        case .hnswSQ8: return minimumSQ8TrainingVectors
        case .flat, .hnsw: return 0
        }
    }

    /// Vectors needed before HNSW over SQ8 codes is trained: its per-component ranges come from them,
    /// and components of later items outside those ranges are clipped.
    static let minimumSQ8TrainingVectors = 256

    /// Adds `labels.count` rows of the flat `vectors` in chunks of `indexChunk` (no array per row: a
    /// rebuild of every item would otherwise leave a million small freed blocks in the heap).
    private static func addChunked(index: VectorIndex, labels: [Int64], vectors: [Float], dimension: Int, metric: Metric) throws(SteerError) {
        var start = 0
        while start < labels.count {
            let end = min(labels.count, start + indexChunk)
            var chunk = Array(vectors[(start * dimension)..<(end * dimension)])
            if metric == .cosine { Vectors.normalizeRows(&chunk, dimension: dimension) }
            try index.add(chunk, labels: Array(labels[start..<end]))
            start = end
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
        // A lag (see `indexLag`) is kept: the next write replays it into `next` (idempotent).
        return current.withLock { value in
            let old = value
            value = next
            return old
        }
    }

    /// The directory `swap` and SIGHUP look for generations in: `DIR/generations`.
    public var generationsDirectory: String { configuration.dataDirectory + "/generations" }

    /// Switches to a generation directory written by `steer-index build` (or `reshard`).
    ///
    /// Steps: load it with every check (`IndexGeneration.load`, checksums included); check the data
    /// directory's dimension and metric, and that its embedding version is in the store, of that
    /// dimension and completely ingested; pick the query encoder (below); replay the store writes made
    /// after the manifest's sequence (`GenerationCatchUp`, repeated while much is left); then, holding
    /// the write lock, replay the last writes and switch. Searches that already read the old generation
    /// finish on it (it is freed when the last one lets go). Any failure leaves the old generation serving.
    /// The steps before the lock are `prepare`'s, the rest `activate`'s (`GenerationStaging.swift`), which
    /// a cluster-wide swap runs apart (docs/scaling.md "Cluster-wide swap").
    ///
    /// The encoder: with `checkpoint`, the manifest's checkpoint hash (when it has one) and its embedding
    /// version must be the checkpoint's (`CheckpointHash`), and a new `DPRModel` is loaded from it (MiniLM
    /// files from `Configuration.miniLMDirectory`). Without one, the current encoder is kept when the
    /// embedding version is unchanged; for another version a `MeanHistoryEncoder` is made anew (or none
    /// kept when there was none), and any other encoder (a DPR model) is refused: give its checkpoint.
    ///
    /// After the switch `steer.json` records the directory, so a restart serves it again (see `init`).
    ///
    /// Paths are untrusted: `reference` must resolve inside `DIR/generations/` and `checkpoint` inside
    /// `Configuration.checkpointRoot` (`PathRoot` rules: no `..`, symbolic links resolved; no root
    /// refuses every checkpoint). The generation must come from this store (see `checkServable`).
    ///
    /// - Parameters:
    ///   - reference: the name of a generation under `DIR/generations/`, or a path inside it.
    ///   - checkpoint: a checkpoint directory (inside the checkpoint root) whose model serves
    ///     `recommend`/`encode` with it.
    /// - Throws: `.invalidRequest` (a path outside its root, metric, checkpoint, encoder, incomplete
    ///   version), `.notFound` (directory, manifest, shard file, embedding version), `.corrupt`
    ///   (checksum, size, count, manifest, another store, a sequence ahead of the store),
    ///   `.dimensionMismatch`, `.unavailable` once closed.
    @discardableResult
    public func swap(to reference: String, checkpoint: String? = nil) throws(SteerError) -> SwapResult {
        try requireOpen()
        swapLock.lock()
        defer { swapLock.unlock() }
        // The staged slot of `prepare` is left alone: a direct swap neither uses nor drops it.
        return try activateLocked(try stageLocked(reference, checkpoint: checkpoint))
    }

    /// SIGHUP: swaps to the newest complete generation under `DIR/generations/`
    /// (`GenerationManifest.newest(in:)`), keeping the current encoder rules of `swap`.
    ///
    /// - Returns: nil when that generation is already serving.
    /// - Throws: `.notFound` when there is no generation; what `swap` throws.
    public func swapToNewest() throws(SteerError) -> SwapResult? {
        guard let newest = GenerationManifest.newest(in: generationsDirectory) else {
            throw SteerError.notFound("no complete generation under '\(generationsDirectory)'")
        }
        if let serving = generation.directory,
           (serving as NSString).resolvingSymlinksInPath == (newest as NSString).resolvingSymlinksInPath {
            return nil
        }
        return try swap(to: newest)
    }

    func requireOpen() throws(SteerError) {
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
        try validate(items, for: generation)
        writeLock.lock()
        defer { writeLock.unlock() }
        return try upsertLocked(items, streamSequence: nil)
    }

    /// Dimension, finiteness and (cosine) direction of every item's vector.
    private func validate(_ items: [ItemInput], for generation: Generation) throws(SteerError) {
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
    }

    /// The store write and index add of `upsert`, with the write log's sequence when there is one; call
    /// holding `writeLock`, with validated items.
    private func upsertLocked(_ items: [ItemInput], streamSequence: UInt64?) throws(SteerError) -> Int {
        // Read under the lock: a swap (which holds it to switch) may have changed the embedding version
        // since the caller's checks (never the dimension or metric: swaps keep the data directory's).
        let live = self.generation
        let writes = items.map {
            ItemStore.ItemWrite(id: $0.id, title: $0.title, tags: $0.tags, attributesJSON: $0.attributesJSON,
                                vectors: [live.embeddingVersion: $0.vector])
        }
        catchUpIndexLocked()
        let before = store.latestSequence
        let result = try store.upsert(writes, streamSequence: streamSequence)
        // Durable from here on: an index failure must not turn the answer into an error. The index
        // catches up from the store (`indexLag`).
        if !items.isEmpty {
            do {
                try indexAdd(live, rows: zip(result.internalIDs, items).map { ($0, $1.vector) }, ids: items.map(\.id))
            } catch {
                indexLag.withLock { $0 = $0 ?? before }
            }
            // A write that doubled the index (or first trained it) makes calibration due: start it now.
            recallCalibrator.calibrateIfDue(live, store: store)
        }
        return items.count
    }

    // MARK: Following a write log

    /// The last write-log sequence this engine applied (`ItemStore.appliedStreamSequence`; 0 when it never
    /// followed a stream).
    public var appliedSequence: UInt64 { applied.withLock { $0 } }

    /// Applies one message of a shard's write log (docs/scaling.md, "Following a stream"), in stream
    /// order: the items and `sequence` are stored in one RocksDB batch, so after a crash the store has
    /// either both or neither. A message at or below `appliedSequence` is skipped (a redelivery after a
    /// crash between applying and acknowledging). A message that every replica refuses alike
    /// (`invalid_request`, `dimension_mismatch`, `not_found`, `too_large`) is recorded as applied with no
    /// change to any item, so the replica moves past it. Wakes `waitForApplied` callers.
    ///
    /// - Parameters:
    ///   - sequence: the message's stream sequence; must increase from call to call.
    ///   - operation: the write.
    /// - Returns: what became of it.
    /// - Throws: anything else (`io_error`, `corrupt`, `unavailable`): nothing was applied, and the same
    ///   message must be applied again later.
    public func apply(sequence: UInt64, _ operation: WriteOperation) throws(SteerError) -> ApplyOutcome {
        try apply(batch: [(sequence, .success(operation))])[0]
    }

    /// Records a write-log message that cannot even be decoded as a write (every replica refuses the same
    /// bytes alike) as applied, with no item change; skips one at or below `appliedSequence`.
    ///
    /// - Returns: `.rejected(error)`, or `.alreadyApplied`.
    /// - Throws: `io_error`/`unavailable` from the store: nothing was recorded.
    public func refuse(sequence: UInt64, _ error: SteerError) throws(SteerError) -> ApplyOutcome {
        try apply(batch: [(sequence, .failure(error))])[0]
    }

    /// Applies consecutive messages of a shard's write log in one store batch and one index update
    /// (docs/scaling.md, "Following a stream"): the items of every message and the last message's
    /// sequence are stored in ONE RocksDB batch (`ItemStore.applyStream`), so after a crash the store has
    /// all of them or none. The outcome of each message is what `apply(sequence:_:)` would give it alone,
    /// applied in order: a message at or below `appliedSequence` (or not above the one before it) is
    /// `.alreadyApplied`; one every replica refuses alike (a `.failure` given by the caller, who could not
    /// decode it, or `invalid_request`, `dimension_mismatch`, `not_found`, `too_large`) is `.rejected`,
    /// recorded as applied with no item change, and the others still apply; the same id written twice
    /// ends with the later write. Wakes `waitForApplied` callers once, with the last sequence. A history
    /// message (`events`, `deleteUser`) is applied alone, its change and its sequence in one batch of its
    /// own (`UserHistoryStore.record`/`deleteUser` with `streamSequence`), between the runs of item
    /// messages around it, so the stored sequence still advances in stream order.
    ///
    /// - Parameter messages: sequence and decoded write (or the refusal of its bytes), in stream order.
    /// - Returns: one outcome per message, in order.
    /// - Throws: anything else (`io_error`, `corrupt`, `unavailable`): nothing of the batch was applied,
    ///   and the same messages must be applied again later.
    public func apply(batch messages: [(sequence: UInt64, operation: Result<WriteOperation, SteerError>)]) throws(SteerError) -> [ApplyOutcome] {
        try requireOpen()
        writeLock.lock()
        defer { writeLock.unlock() }
        return try applyLocked(messages, partsShareSequence: false)
    }

    /// `apply(batch:)` for messages of several parts (a batch message of the write log, `WriteLogMessage`):
    /// consecutive entries with the same sequence are the parts of one message. Each part takes effect
    /// as if it were a message of its own, in order, with its own outcome; a message at or below
    /// `appliedSequence` is skipped whole (`.alreadyApplied` for each part). A history part (`events`,
    /// `deleteUser`) in a message of several parts is refused (`.rejected`, `invalid_request`): a history
    /// message is applied alone with its own sequence, so it travels in a message of its own.
    ///
    /// - Parameter parts: sequence and decoded part (or the refusal of its bytes), in stream order.
    /// - Returns: one outcome per part, in order.
    /// - Throws: as `apply(batch:)`.
    public func apply(parts: [(sequence: UInt64, operation: Result<WriteOperation, SteerError>)]) throws(SteerError) -> [ApplyOutcome] {
        try requireOpen()
        var messages = parts
        var start = 0
        while start < messages.count {
            var end = start + 1
            while end < messages.count && messages[end].sequence == messages[start].sequence { end += 1 }
            if end - start > 1 {
                for position in start..<end {
                    if case .success(let operation) = messages[position].operation, operation.isHistory {
                        messages[position].operation = .failure(SteerError.invalid("an event or delete_user in a stream message of several parts (it must be a message of its own)"))
                    }
                }
            }
            start = end
        }
        writeLock.lock()
        defer { writeLock.unlock() }
        return try applyLocked(messages, partsShareSequence: true)
    }

    /// `apply(batch:)`/`apply(parts:)` holding `writeLock`.
    private func applyLocked(_ messages: [(sequence: UInt64, operation: Result<WriteOperation, SteerError>)],
                             partsShareSequence: Bool) throws(SteerError) -> [ApplyOutcome] {
        // Runs of item messages share one store batch; each history message (`events`, `deleteUser`) is
        // one batch of its own with its sequence (`applyHistoryLocked`).
        var outcomes = [ApplyOutcome](repeating: .alreadyApplied, count: messages.count)
        var start = 0
        while start < messages.count {
            if case .success(let operation) = messages[start].operation, operation.isHistory {
                outcomes[start] = try applyHistoryLocked(sequence: messages[start].sequence, operation)
                start += 1
                continue
            }
            var end = start + 1
            while end < messages.count {
                if case .success(let operation) = messages[end].operation, operation.isHistory { break }
                end += 1
            }
            outcomes.replaceSubrange(start..<end, with: try applyItemsLocked(Array(messages[start..<end]), partsShareSequence: partsShareSequence))
            start = end
        }
        return outcomes
    }

    /// Error codes a write-log message is refused with alike on every replica (the message's own fault):
    /// it is recorded as applied with no change.
    static let refusedMessageCodes: Set<SteerError.Code> = [.invalidRequest, .tooLarge, .notFound, .dimensionMismatch]

    /// Applies one history message (events or a user's deletion) with its sequence in the same store batch;
    /// call holding `writeLock`. A message at or below the stored sequence is `.alreadyApplied`; one the
    /// store refuses for its content is recorded as applied with no change (`.rejected`).
    ///
    /// - Throws: store failures (`io_error`, `corrupt`, `unavailable`): nothing was recorded.
    private func applyHistoryLocked(sequence: UInt64, _ operation: WriteOperation) throws(SteerError) -> ApplyOutcome {
        guard sequence > store.appliedStreamSequence else { return .alreadyApplied }
        let outcome: ApplyOutcome
        do throws(SteerError) {
            switch operation {
            case .events(let events): outcome = .recorded(try recordEvents(events, streamSequence: sequence))
            case .deleteUser(let user): outcome = .applied(count: try store.histories.deleteUser(user, streamSequence: sequence))
            case .upsert, .delete: throw SteerError.internalError("an item write is not a history message")
            }
        } catch where Self.refusedMessageCodes.contains(error.code) {
            _ = try store.applyStream([(sequence, .refused)])
            markApplied(sequence)
            return .rejected(error)
        }
        markApplied(sequence)
        return outcome
    }

    /// Applies a run of item messages (no history message) in one store batch and one index update; call
    /// holding `writeLock` (see `apply(batch:)`).
    private func applyItemsLocked(_ messages: [(sequence: UInt64, operation: Result<WriteOperation, SteerError>)],
                                  partsShareSequence: Bool) throws(SteerError) -> [ApplyOutcome] {
        let live = self.generation
        var outcomes = [ApplyOutcome](repeating: .alreadyApplied, count: messages.count)
        var writes: [(sequence: UInt64, write: ItemStore.StreamWrite)] = []
        var positions: [Int] = []
        var refusals: [Int: SteerError] = [:]
        let stored = store.appliedStreamSequence
        var last = stored
        for (position, message) in messages.enumerated()
        where message.sequence > last || (partsShareSequence && message.sequence == last && last > stored) {
            last = message.sequence
            positions.append(position)
            switch message.operation {
            case .failure(let error):
                refusals[position] = error
                writes.append((message.sequence, .refused))
            case .success(.delete(let ids)):
                writes.append((message.sequence, .delete(ids)))
            case .success(.upsert(let items)):
                do throws(SteerError) {
                    try validate(items, for: live)
                } catch {
                    refusals[position] = error
                    writes.append((message.sequence, .refused))
                    continue
                }
                writes.append((message.sequence, .upsert(items.map {
                    ItemStore.ItemWrite(id: $0.id, title: $0.title, tags: $0.tags, attributesJSON: $0.attributesJSON,
                                        vectors: [live.embeddingVersion: $0.vector])
                })))
            case .success(.events), .success(.deleteUser):
                refusals[position] = SteerError.internalError("a history message in a run of item messages")
                writes.append((message.sequence, .refused))
            }
        }
        if writes.isEmpty { return outcomes }
        catchUpIndexLocked()
        let before = store.latestSequence
        let result = try partsShareSequence ? store.applyStream(parts: writes) : store.applyStream(writes)
        // Durable from here on: an index failure must not turn the answer into an error (see `upsert`).
        let rows = result.written.compactMap { written in written.vectors[live.embeddingVersion].map { (written.internalID, $0, written.id) } }
        if !result.removedInternalIDs.isEmpty || !rows.isEmpty {
            do throws(SteerError) {
                let index = live.index
                var start = 0
                let removed = result.removedInternalIDs
                while start < removed.count && index.isTrained {
                    let end = min(removed.count, start + Self.indexChunk)
                    try index.remove(labels: Array(removed[start..<end]))
                    start = end
                }
                if !rows.isEmpty { try indexAdd(live, rows: rows.map { ($0.0, $0.1) }, ids: rows.map(\.2)) }
            } catch {
                indexLag.withLock { $0 = $0 ?? before }
            }
        }
        for (slot, position) in positions.enumerated() {
            if let refusal = refusals[position] {
                outcomes[position] = .rejected(refusal)
                continue
            }
            switch result.outcomes[slot] {
            case .success(let count): outcomes[position] = .applied(count: count)
            case .failure(let error): outcomes[position] = .rejected(error)
            }
        }
        markApplied(last)
        return outcomes
    }

    /// Publishes a new applied sequence to `waitForApplied` callers; call holding `writeLock`.
    private func markApplied(_ sequence: UInt64) {
        applied.withLock { $0 = sequence }
        appliedChanged.lock()
        appliedChanged.broadcast()
        appliedChanged.unlock()
        let due = appliedWaiters.withLock { state -> [@Sendable () -> Void] in
            guard !state.waiting.isEmpty else { return [] }
            var due: [@Sendable () -> Void] = []
            for (ticket, waiter) in state.waiting where waiter.sequence <= sequence {
                due.append(waiter.callback)
                state.waiting[ticket] = nil
            }
            return due
        }
        for callback in due { callback() }
    }

    /// Calls `callback` once `appliedSequence` reaches `sequence`, without holding a thread meanwhile
    /// (a server parks a request's `min_sequence` this way before it takes a worker). The callback runs
    /// on the thread that applied the sequence, holding the writer lock: it must only hand work on
    /// (for example to an event loop), never block or call back into the engine.
    ///
    /// - Returns: nil when `sequence` is already applied (`callback` is not called); else a function that
    ///   forgets the callback (idempotent; after the callback ran it does nothing). Each waiter costs one
    ///   dictionary entry until it is called or forgotten: callers bound how many they register.
    public func whenApplied(_ sequence: UInt64, _ callback: @escaping @Sendable () -> Void) -> (@Sendable () -> Void)? {
        appliedWaiters.withLock { state -> (@Sendable () -> Void)? in
            // Read under the waiters' lock: `markApplied` publishes the sequence before it takes this
            // lock, so either this read sees it or its scan sees this waiter.
            if applied.withLock({ $0 }) >= sequence { return nil }
            let ticket = state.nextTicket
            state.nextTicket &+= 1
            state.waiting[ticket] = (sequence, callback)
            return { [appliedWaiters] in appliedWaiters.withLock { _ = $0.waiting.removeValue(forKey: ticket) } }
        }
    }

    /// Waiters registered with `whenApplied` and not called or forgotten yet.
    public var appliedWaiterCount: Int { appliedWaiters.withLock { $0.waiting.count } }

    /// Blocks the calling (worker) thread until `appliedSequence` reaches `sequence` or the uptime clock
    /// passes `deadlineNanos` (`DispatchTime` uptime nanoseconds).
    ///
    /// - Returns: whether `sequence` was applied in time.
    public func waitForApplied(_ sequence: UInt64, deadlineNanos: UInt64) -> Bool {
        appliedChanged.lock()
        defer { appliedChanged.unlock() }
        while applied.withLock({ $0 }) < sequence {
            let now = DispatchTime.now().uptimeNanoseconds
            if now >= deadlineNanos { return false }
            _ = appliedChanged.wait(until: Date(timeIntervalSinceNow: Double(deadlineNanos - now) / 1e9))
        }
        return true
    }

    /// Replays the store writes the live index missed (see `indexLag`); call holding `writeLock`.
    /// A failure keeps the lag for the next try.
    private func catchUpIndexLocked() {
        guard let since = indexLag.get() else { return }
        do {
            _ = try GenerationCatchUp.replay(store: store, into: generation.index, since: since)
            indexLag.withLock { $0 = nil }
        } catch {
            return
        }
    }

    /// Whether every write the store acknowledged is in the live index (false between an index failure
    /// after a store commit and the catch-up at the next write, save or swap).
    public var indexIsComplete: Bool { indexLag.get() == nil }

    private func indexAdd(_ generation: Generation, rows: [(Int64, [Float])], ids: [ItemID]) throws(SteerError) {
        if generation.index.spec.needsTraining && !generation.index.isTrained {
            // Only the engine's own start-up index (one shard) is ever untrained: generations are built trained.
            guard generation.index.shards.count == 1 else {
                throw SteerError.internalError("generation \(generation.id) has untrained shards")
            }
            let index = generation.index.shards[0]
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
            try Self.addChunked(index: index, labels: labels, vectors: all, dimension: generation.dimension, metric: generation.metric)
            return
        }
        var start = 0
        while start < rows.count {
            let end = min(rows.count, start + Self.indexChunk)
            var vectors: [Float] = []
            vectors.reserveCapacity((end - start) * generation.dimension)
            for row in rows[start..<end] { vectors.append(contentsOf: row.1) }
            if generation.metric == .cosine { Vectors.normalizeRows(&vectors, dimension: generation.dimension) }
            try generation.index.add(vectors, labels: rows[start..<end].map(\.0), ids: Array(ids[start..<end]))
            start = end
        }
    }

    /// Deletes items from the store, then from the index. Unknown ids are ignored.
    ///
    /// - Returns: how many items existed.
    public func delete(_ ids: [ItemID]) throws(SteerError) -> Int {
        try requireOpen()
        writeLock.lock()
        defer { writeLock.unlock() }
        return try deleteLocked(ids, streamSequence: nil)
    }

    /// The store delete and index removal of `delete`; call holding `writeLock`.
    private func deleteLocked(_ ids: [ItemID], streamSequence: UInt64?) throws(SteerError) -> Int {
        catchUpIndexLocked()
        let before = store.latestSequence
        let result = try store.delete(ids, streamSequence: streamSequence)
        let internalIDs = result.deleted.values.sorted()
        if !internalIDs.isEmpty {
            // Durable from here on: see `upsert`.
            do throws(SteerError) {
                let index = generation.index
                var start = 0
                while start < internalIDs.count {
                    let end = min(internalIDs.count, start + Self.indexChunk)
                    if index.isTrained { try index.remove(labels: Array(internalIDs[start..<end])) }
                    start = end
                }
            } catch {
                indexLag.withLock { $0 = $0 ?? before }
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
    ///   - pinned: the generation to search (read `generation` once and pass it, to name the generation
    ///     that answered); nil = the current one.
    /// - Returns: one hit list per query, best first, hydrated with title and tags.
    /// - Throws: `.dimensionMismatch` naming `vector` (one query) or `vectors[i]`; `.invalidRequest` for a bad k.
    public func search(_ queries: [[Float]], options: SearchOptions, in pinned: Generation? = nil) throws(SteerError) -> [[Hit]] {
        try searchExplained(queries, options: options, in: pinned).hits
    }

    /// `search`, and the plan that ran (`SearchPlan`, counted in `filterPlanner`).
    public func searchExplained(_ queries: [[Float]], options: SearchOptions, in pinned: Generation? = nil) throws(SteerError) -> (hits: [[Hit]], plan: SearchPlan) {
        try requireOpen()
        let generation = pinned ?? generation
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
        let resolved = try resolveFilter(options.filter, extraRequired: [], extraExcluded: [])
        let (results, plan) = try searchPlanned(generation, flat, k: options.k, nprobe: options.nprobe, efSearch: options.efSearch,
                                                oversample: options.oversample, filter: resolved)
        return (try hydrate(results), plan)
    }

    func hydrate(_ results: [[ScoredLabel]]) throws(SteerError) -> [[Hit]] {
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

    func encoder(_ generation: Generation) throws(SteerError) -> any QueryEncoder {
        guard let encoder = generation.encoder else {
            throw SteerError(.unavailable, "generation \(generation.id) has no query encoder: recommend and encode are unavailable")
        }
        return encoder
    }

    /// Encodes a history and prompt with the encoder of `pinned` (nil = the current generation).
    public func encode(_ request: RecommendRequest, in pinned: Generation? = nil) throws(SteerError) -> EncodedQuery {
        try requireOpen()
        let request = try withStoredHistory(request)
        return try encoder(pinned ?? generation).encode(history: request.history, prompt: request.prompt)
    }

    /// Recommends items for a history and an optional prompt, with `pinned` (nil = the current generation).
    public func recommend(_ request: RecommendRequest, in pinned: Generation? = nil) throws(SteerError) -> Recommendation {
        try requireOpen()
        let request = try withStoredHistory(request)
        let generation = pinned ?? generation
        if !request.positive.isEmpty || !request.negative.isEmpty { return try recommendFromExamples(request, in: generation) }
        let encoded = try encoder(generation).encode(history: request.history, prompt: request.prompt)
        guard encoded.vector.count == generation.dimension, encoded.baseVector.count == generation.dimension,
              encoded.hybridVector.count == generation.dimension else {
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
        var resolved = try resolveFilter(request.filter, extraRequired: requiredGroups, extraExcluded: excludedTags)
        if request.excludeHistory {
            let unknown = Set(encoded.unknownHistory)
            let known = Set(request.history + request.seen).subtracting(unknown)
            for internalID in try store.internalIDs(of: Array(known)) {
                if let internalID { resolved.excluded.insert(internalID) }
            }
        }
        let vector = switch request.constraints {
        case .hard: encoded.baseVector
        case .hybrid: encoded.hybridVector
        case .soft: encoded.vector
        }
        let (results, plan) = try searchPlanned(generation, vector, k: request.k, nprobe: request.nprobe, efSearch: request.efSearch,
                                                oversample: request.oversample, filter: resolved)
        return Recommendation(hits: try hydrate(results)[0], clauses: encoded.clauses, unknownHistory: encoded.unknownHistory, plan: plan)
    }

    // MARK: Stats and lifecycle

    /// Sets FAISS's OpenMP thread count for the calling thread (libgomp keeps it per thread). The server
    /// calls it once on each worker thread: one OpenMP thread per request, concurrency from the workers
    /// (docs/dependencies.md: two OpenMP threads per single-query search collapse throughput on a busy machine).
    public static func setOpenMPThreadsForCurrentThread(_ count: Int) {
        FaissInfo.setOpenMPThreadsForCurrentThread(count)
    }

    public func stats() -> EngineStats {
        let generation = generation
        var stats = EngineStats(
            generation: generation.id, embeddingVersion: generation.embeddingVersion, dimension: generation.dimension,
            metric: generation.metric, indexSpec: generation.index.spec.factoryString, items: store.count,
            indexed: generation.index.count, tombstones: generation.index.tombstoneCount, storeSequence: store.latestSequence,
            builtAtSequence: generation.builtAtSequence, encoder: generation.encoder.map { String(describing: type(of: $0)) },
            encoderStatistics: generation.encoder?.statistics ?? [],
            faissVersion: FaissInfo.version, openMPMaxThreads: FaissInfo.openMPMaxThreads,
            shards: generation.index.shards.count, generationDirectory: generation.directory)
        stats.storeMemtableBytes = store.memtableBytes
        stats.stagedGeneration = stagedGenerationID
        stats.payloadColumnBytes = store.payloadColumnBytes
        stats.tagPostingBytes = store.tagPostingBytes
        stats.recordCache = store.recordCacheStatistics
        stats.plans = filterPlanner.planCounts
        stats.recallCalibration = recallCalibrator.last
        stats.recallCalibrationState = recallCalibrator.status
        let memory = generation.index.spec.memoryEstimate(dimension: generation.dimension)
        stats.indexBytesEstimate = memory.totalBytes(vectors: stats.indexed)
        stats.indexBytesPerVectorEstimate = stats.indexed > 0 ? stats.indexBytesEstimate / Double(stats.indexed) : memory.bytesPerVector
        return stats
    }

    /// Saves the index with the store sequence it reflects (writes are held off meanwhile), then trims
    /// the store's change log up to that sequence. A generation loaded by `swap` is not re-saved and the
    /// change log is not trimmed: a restart loads its directory again and replays the store's changes
    /// since its manifest's sequence. `IndexCheckpointer` calls it periodically.
    ///
    /// - Returns: the store's latest sequence when the save ended (trimming the change log is a write of
    ///   its own, so this is past the sequence recorded in `index.json`): a store still at it has not
    ///   changed since.
    /// - Throws: `.unavailable` once closed; `.io` when the file cannot be written.
    @discardableResult
    public func saveIndex() throws(SteerError) -> UInt64 {
        writeLock.lock()
        defer { writeLock.unlock() }
        try requireOpen()
        try saveIndexLocked()
        return store.latestSequence
    }

    private func saveIndexLocked() throws(SteerError) {
        catchUpIndexLocked()
        let generation = generation
        if generation.directory != nil { return }
        let index = generation.index.shards[0]
        if index.spec.needsTraining && !index.isTrained { return }
        // An index still behind the store is saved with the sequence it is complete up to.
        let sequence = indexLag.get() ?? store.latestSequence
        do {
            try FileManager.default.createDirectory(atPath: indexDirectory, withIntermediateDirectories: true)
        } catch {
            throw SteerError(.io, "cannot create '\(indexDirectory)': \(error.localizedDescription)")
        }
        // Index first, then the sequence: an index newer than its recorded sequence only replays some
        // changes twice (idempotent); the reverse would lose changes.
        try index.save(to: indexDirectory + "/index.bin")
        try Self.writeJSON(["format": 1, "sequence": NSNumber(value: sequence), "index_spec": index.spec.factoryString,
                            "embedding_version": generation.embeddingVersion, "generation": generation.id,
                            "store_id": store.storeID ?? ""],
                           to: indexDirectory + "/index.json")
        // Generations built while serving (not swapped to yet) replay from their manifest's sequence:
        // keep the change log from the oldest of them.
        var trimTo = sequence
        for name in (try? FileManager.default.contentsOfDirectory(atPath: generationsDirectory)) ?? [] {
            if let manifest = try? GenerationManifest.read(directory: generationsDirectory + "/" + name) {
                trimTo = min(trimTo, manifest.storeSequence)
            }
        }
        try store.trimChangeLog(upTo: trimTo)
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
        defer {
            // No calibration run outlives the store it reads.
            recallCalibrator.waitUntilIdle()
            store.close()
        }
        try saveIndexLocked()
    }
}

extension IndexGeneration {
    /// Whether every shard can be searched (an IVF index built by the engine waits for enough items).
    var isTrained: Bool { shards.allSatisfy(\.isTrained) }
}
