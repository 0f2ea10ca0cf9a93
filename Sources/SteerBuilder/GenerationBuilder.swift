import Dispatch
import Foundation
import SteerCore
import SteerData
import SteerIndex
import SteerStore

/// Builds, reshards and verifies index generations (`steer-index`; docs/index-builder.md).
///
/// A build reads one embedding version from a store snapshot (`ItemStore.scanVectors`), places every
/// item on `Sharding.shard(of: externalID)`, trains an IVF quantizer once on a seeded sample and copies
/// the trained, empty index into every shard (so all shards share one quantizer), adds each shard's
/// vectors (shards in parallel, at most `parallelShards` at a time), saves the shard files, checksums
/// them and writes the manifest. Everything is written into `<out>.partial-<pid>` and renamed to `<out>`
/// only when complete, so a crash never leaves a directory that looks like a generation.
///
/// The store must be open in this process (RocksDB allows one writer process): run the CLI while the
/// server is stopped, or call this library from the server process.
public enum GenerationBuilder {
    /// What to build.
    public struct Options: Sendable {
        public var version: String
        public var spec: IndexSpec
        public var metric: Metric
        public var shardCount: Int
        /// Vectors sampled to train an IVF quantizer; nil = `defaultTrainSample(lists:count:)`.
        public var trainSample: Int?
        public var seed: UInt64
        /// Shards built at the same time; nil = the number of active processors.
        public var parallelShards: Int?
        /// Recorded in the manifest; nil takes it from the store's version registry (`steer ingest`).
        public var checkpointHash: String?
        /// nil = `GenerationManifest.newGenerationID()`.
        public var generationID: String?
        /// Build from a version whose ingest is marked in progress (normally refused).
        public var allowIncomplete: Bool
        /// Print progress bars on standard error.
        public var showProgress: Bool

        public init(version: String, spec: IndexSpec, metric: Metric, shardCount: Int, trainSample: Int? = nil, seed: UInt64 = 42,
                    parallelShards: Int? = nil, checkpointHash: String? = nil, generationID: String? = nil,
                    allowIncomplete: Bool = false, showProgress: Bool = false) {
            self.version = version
            self.spec = spec
            self.metric = metric
            self.shardCount = shardCount
            self.trainSample = trainSample
            self.seed = seed
            self.parallelShards = parallelShards
            self.checkpointHash = checkpointHash
            self.generationID = generationID
            self.allowIncomplete = allowIncomplete
            self.showProgress = showProgress
        }
    }

    /// Rows added to an index per `add` call.
    public static let addChunkRows = 65_536
    /// File name of shard `i`.
    public static func shardFileName(_ i: Int) -> String { "shard-" + String(format: "%04d", i) + ".index" }
    /// File name of the trained, empty IVF index.
    public static let trainedFileName = "trained.index"

    /// faiss asks for at least 39 training points per list; we sample 40 per list, at most all vectors.
    public static func defaultTrainSample(lists: Int, count: Int) -> Int { min(count, 40 * lists) }

    /// HNSW over SQ8 codes trains per-component ranges: a larger sample than one list's 40 vectors, so
    /// rare extremes are inside the ranges (components outside are clipped).
    public static let sq8TrainSample = 100_000

    /// The number of IVF lists of a spec, or nil when it needs no training.
    static func lists(of spec: IndexSpec) -> Int? {
        switch spec.family {
        case .flat, .hnsw, .hnswSQ8: return nil
        case .ivfFlat(let lists), .ivfSQ8(let lists): return lists
        case .ivfPQ(let lists, _, _), .opqIVFPQ(_, _, let lists, _, _): return lists
        }
    }

    // MARK: Scanning

    /// A version's vectors from one store snapshot, with each row's shard.
    struct Scan {
        var labels: [Int64] = []
        var vectors: [Float] = []
        var ids: [ItemID] = []
        var sequence: UInt64 = 0
        var skippedDeleted = 0
    }

    static func scan(store: ItemStore, version: String, showProgress: Bool) throws(SteerError) -> Scan {
        guard let info = store.version(named: version) else {
            throw SteerError.notFound("the store has no embedding version '\(version)' (versions: \(store.versions().map(\.name).joined(separator: ", ")))")
        }
        var result = Scan()
        result.labels.reserveCapacity(store.count)
        result.vectors.reserveCapacity(store.count * info.dimension)
        result.ids.reserveCapacity(store.count)
        let bar = ProgressLine("scan \(version)", total: store.count, enabled: showProgress)
        let dimension = info.dimension
        do {
            result.sequence = try store.scanVectors(version: version, batchSize: 8192) { labels, vectors in
                // Records are read after the snapshot: an item deleted since has none; its delete is after
                // the snapshot's sequence, so a replay removes it anyway and skipping it is exact.
                let records = try store.records(internalIDs: labels)
                for (row, record) in records.enumerated() {
                    guard let record else {
                        result.skippedDeleted += 1
                        continue
                    }
                    result.labels.append(labels[row])
                    result.ids.append(record.id)
                    result.vectors.append(contentsOf: vectors[(row * dimension)..<((row + 1) * dimension)])
                }
                bar.update(result.labels.count + result.skippedDeleted)
            }
        } catch let error as SteerError {
            throw error
        } catch {
            throw SteerError.internalError("scanning version '\(version)': \(error)")
        }
        bar.update(store.count)
        return result
    }

    // MARK: Building

    /// Builds a generation from a store into `output` (which must not exist).
    ///
    /// - Parameters:
    ///   - store: the open store.
    ///   - storePath: its directory, for the version registry (nil: no registry lookup).
    ///   - options: spec, metric, shards, training.
    ///   - output: the generation directory to create.
    ///   - trainedTemplate: an existing trained, empty index to copy into every shard instead of training
    ///     (reshard); its spec, metric and dimension must match.
    ///   - command: recorded in the manifest's build info (`build`, `reshard`).
    ///   - parentGeneration: recorded in the manifest.
    ///   - log: one line per phase.
    /// - Returns: the manifest written.
    /// - Throws: `.notFound` (version), `.invalidRequest` (output exists, version still being ingested,
    ///   bad options), errors of the index and the store. Nothing is left at `output` on failure.
    public static func build(store: ItemStore, storePath: String?, options: Options, output: String,
                             trainedTemplate: String? = nil, command: String = "build", parentGeneration: String? = nil,
                             log: (String) -> Void = { _ in }) throws(SteerError) -> GenerationManifest {
        let started = Date()
        let sharding = try Sharding(shardCount: options.shardCount)
        guard !FileManager.default.fileExists(atPath: output) else {
            throw SteerError.invalid("output '\(output)' already exists; generations are never overwritten")
        }
        var checkpointHash = options.checkpointHash
        if let storePath {
            let registry = try VersionRegistry.read(storePath: storePath)
            if let entry = registry.versions[options.version] {
                if entry.status != .complete && !options.allowIncomplete {
                    throw SteerError.invalid("embedding version '\(options.version)' is still being ingested (or its ingest was interrupted): re-run steer ingest first")
                }
                if let given = checkpointHash, given != entry.checkpointHash {
                    throw SteerError.invalid("--checkpoint-hash \(given) disagrees with the store's record \(entry.checkpointHash) for version '\(options.version)'")
                }
                checkpointHash = entry.checkpointHash
            }
        }
        guard let dimension = store.version(named: options.version)?.dimension else {
            throw SteerError.notFound("the store has no embedding version '\(options.version)'")
        }
        var timings: [String: Double] = [:]
        var phase = Date()
        func lap(_ name: String) {
            timings[name] = Date().timeIntervalSince(phase)
            phase = Date()
        }

        // 1. Scan.
        let scan = try Self.scan(store: store, version: options.version, showProgress: options.showProgress)
        let n = scan.labels.count
        lap("scan")
        log("scanned \(n) vectors of '\(options.version)' (dimension \(dimension)) at store sequence \(scan.sequence) in \(format(timings["scan"]!))")
        var rowsByShard = [[Int32]](repeating: [], count: sharding.shardCount)
        for (row, id) in scan.ids.enumerated() { rowsByShard[sharding.shard(of: id)].append(Int32(row)) }

        // 2. Temporary directory.
        let parent = (output as NSString).deletingLastPathComponent
        if !parent.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            } catch {
                throw SteerError(.io, "cannot create '\(parent)': \(error.localizedDescription)")
            }
        }
        let temp = output + GenerationManifest.partialSuffix + "-\(getpid())"
        try? FileManager.default.removeItem(atPath: temp)
        do {
            try FileManager.default.createDirectory(atPath: temp, withIntermediateDirectories: false)
        } catch {
            throw SteerError(.io, "cannot create '\(temp)': \(error.localizedDescription)")
        }
        var succeeded = false
        defer { if !succeeded { try? FileManager.default.removeItem(atPath: temp) } }

        // 3. Train once (IVF), or reuse a trained template.
        var trainSampleUsed: Int?
        var templatePath: String?
        if options.spec.needsTraining {
            let trainedPath = (temp as NSString).appendingPathComponent(trainedFileName)
            if let trainedTemplate {
                let template = try loadIndex(trainedTemplate)
                guard template.spec == options.spec, template.metric == options.metric, template.dimension == dimension, template.isTrained else {
                    throw SteerError(.corrupt, "trained index '\(trainedTemplate)' is \(template.spec) \(template.metric.rawValue) d=\(template.dimension), not a trained \(options.spec) \(options.metric.rawValue) d=\(dimension)")
                }
                if template.count > 0 { template.reset() }
                try template.save(to: trainedPath)
                log("reused the trained quantizer of \(parentGeneration ?? trainedTemplate) (no retraining)")
            } else {
                let lists = lists(of: options.spec) ?? 1
                let defaultSample = Self.lists(of: options.spec) == nil ? min(n, sq8TrainSample) : defaultTrainSample(lists: lists, count: n)
                let sampleSize = min(n, options.trainSample ?? defaultSample)
                guard sampleSize >= lists else {
                    throw SteerError.invalid("\(options.spec) needs at least \(lists) training vectors, the version has \(n) (sample \(sampleSize))")
                }
                let sample = seededSample(count: n, size: sampleSize, seed: options.seed)
                var trainVectors: [Float] = []
                trainVectors.reserveCapacity(sampleSize * dimension)
                for row in sample { trainVectors.append(contentsOf: scan.vectors[(row * dimension)..<((row + 1) * dimension)]) }
                let template = try VectorIndex(spec: options.spec, dimension: dimension, metric: options.metric)
                try template.train(trainVectors)
                try template.save(to: trainedPath)
                trainSampleUsed = sampleSize
                lap("train")
                log("trained \(options.spec) on \(sampleSize) sampled vectors (seed \(options.seed)) in \(format(timings["train"]!))")
            }
            templatePath = trainedPath
        }

        // 4. Shards in parallel.
        let jobs = max(1, min(options.parallelShards ?? ProcessInfo.processInfo.activeProcessorCount, sharding.shardCount))
        let bar = ProgressLine("add", total: n, enabled: options.showProgress)
        let state = BuildState(shardCount: sharding.shardCount)
        let vectors = scan.vectors
        let labels = scan.labels
        let spec = options.spec
        let metric = options.metric
        let template = templatePath
        let shardRows = rowsByShard
        DispatchQueue.concurrentPerform(iterations: jobs) { _ in
            while let shard = state.nextShard() {
                do throws(SteerError) {
                    let index: VectorIndex
                    if let template {
                        index = try loadIndex(template)
                    } else {
                        index = try VectorIndex(spec: spec, dimension: dimension, metric: metric)
                    }
                    let rows = shardRows[shard]
                    var start = 0
                    while start < rows.count {
                        let end = min(rows.count, start + addChunkRows)
                        var chunk: [Float] = []
                        chunk.reserveCapacity((end - start) * dimension)
                        var chunkLabels: [Int64] = []
                        chunkLabels.reserveCapacity(end - start)
                        for row in rows[start..<end] {
                            let r = Int(row)
                            chunk.append(contentsOf: vectors[(r * dimension)..<((r + 1) * dimension)])
                            chunkLabels.append(labels[r])
                        }
                        try index.add(chunk, labels: chunkLabels)
                        bar.advance(by: end - start)
                        start = end
                    }
                    let file = shardFileName(shard)
                    let path = (temp as NSString).appendingPathComponent(file)
                    try index.save(to: path)
                    let (checksum, bytes) = try ShardChecksum.compute(path: path)
                    state.finish(shard, GenerationManifest.Shard(index: shard, file: file, count: index.count, bytes: bytes, checksum: checksum))
                } catch {
                    state.fail(SteerError(error.code, "shard \(shard): \(error.message)"))
                }
            }
        }
        if let failure = state.failure { throw failure }
        lap("add_save")
        let shards = state.shards.map { $0! }
        log("built \(sharding.shardCount) shard\(sharding.shardCount == 1 ? "" : "s") (\(jobs) at a time) in \(format(timings["add_save"]!)): \(shards.map { String($0.count) }.joined(separator: " + ")) vectors")

        // 5. Manifest, then rename into place.
        var trainedEntry: GenerationManifest.Shard?
        if let templatePath {
            let (checksum, bytes) = try ShardChecksum.compute(path: templatePath)
            trainedEntry = GenerationManifest.Shard(index: 0, file: trainedFileName, count: 0, bytes: bytes, checksum: checksum)
        }
        timings["total"] = Date().timeIntervalSince(started)
        let peak = FileIO.peakRSSBytes()
        let manifest = GenerationManifest(
            generationID: options.generationID ?? GenerationManifest.newGenerationID(), checkpointHash: checkpointHash,
            embeddingVersion: options.version, storeSequence: scan.sequence, indexSpec: options.spec.factoryString,
            metric: options.metric, dimension: dimension, sharding: .init(shardCount: sharding.shardCount), shards: shards,
            trainedIndex: trainedEntry,
            build: .init(command: command, parentGeneration: parentGeneration, trainSample: trainSampleUsed,
                         seed: options.spec.needsTraining && trainedTemplate == nil ? options.seed : nil,
                         sharedQuantizer: options.spec.needsTraining ? true : nil, parallelShards: jobs,
                         timingsSeconds: timings, peakRSSBytes: peak, skippedDeleted: scan.skippedDeleted, source: "store"),
            storeID: store.storeID)
        try manifest.validate()
        try AtomicFile.write([UInt8](try manifest.encoded()), to: (temp as NSString).appendingPathComponent(GenerationManifest.fileName))
        for shard in shards { try AtomicFile.syncFile((temp as NSString).appendingPathComponent(shard.file)) }
        try AtomicFile.publishDirectory(temp, as: output)
        succeeded = true
        log("wrote generation \(manifest.generationID) to \(output) in \(format(timings["total"]!)), peak memory \(GenerationSummary.formatBytes(peak))")
        return manifest
    }

    /// Reshards a generation: the same version, spec and metric into `shardCount` shards, reading the
    /// vectors from the store at its current snapshot (the new manifest records that sequence) and, for
    /// IVF, reusing the parent's trained quantizer instead of training again.
    ///
    /// The index API has no way to read vectors back out of a shard, so the store is the source; items
    /// written since the parent's sequence are included (the new manifest's `store_sequence` says so).
    ///
    /// - Throws: what `GenerationManifest.read`, `IndexGeneration.verifyFiles` and `build` throw.
    public static func reshard(from source: String, store: ItemStore, storePath: String?, shardCount: Int, output: String,
                               parallelShards: Int? = nil, generationID: String? = nil, showProgress: Bool = false,
                               log: (String) -> Void = { _ in }) throws(SteerError) -> GenerationManifest {
        let parent = try GenerationManifest.read(directory: source)
        try IndexGeneration.verifyFiles(parent, directory: source)
        let spec: IndexSpec
        do {
            spec = try IndexSpec(parsing: parent.indexSpec)
        } catch {
            throw SteerError(.corrupt, "\(source): index_spec '\(parent.indexSpec)': \(error.message)")
        }
        let template = parent.trainedIndex.map { (source as NSString).appendingPathComponent($0.file) }
        if spec.needsTraining && template == nil {
            throw SteerError(.corrupt, "\(source): an IVF generation without trained_index; rebuild it with steer-index build")
        }
        let options = Options(version: parent.embeddingVersion, spec: spec, metric: parent.metric, shardCount: shardCount,
                              parallelShards: parallelShards, checkpointHash: parent.checkpointHash, generationID: generationID,
                              allowIncomplete: true, showProgress: showProgress)
        let reader = store.version(named: parent.embeddingVersion)
        guard reader?.dimension == parent.dimension else {
            throw SteerError(.dimensionMismatch, "the store's version '\(parent.embeddingVersion)' has dimension \(reader.map { String($0.dimension) } ?? "(missing)"), the generation \(parent.dimension)")
        }
        return try build(store: store, storePath: storePath, options: options, output: output, trainedTemplate: template,
                         command: "reshard", parentGeneration: parent.generationID, log: log)
    }

    // MARK: Helpers

    static func loadIndex(_ path: String) throws(SteerError) -> VectorIndex {
        do {
            return try VectorIndex.load(path: path)
        } catch {
            throw SteerError(error.code, "'\(path)': \(error.message)")
        }
    }

    /// `size` distinct rows of `0..<count`, chosen by a seeded partial Fisher–Yates shuffle, ascending.
    public static func seededSample(count: Int, size: Int, seed: UInt64) -> [Int] {
        let size = max(0, min(size, count))
        if size == count { return Array(0..<count) }
        var rng = SeededGenerator(seed: seed)
        var swapped: [Int: Int] = [:]
        var picked: [Int] = []
        picked.reserveCapacity(size)
        for i in 0..<size {
            let j = i + Int(rng.next() % UInt64(count - i))
            let atJ = swapped[j] ?? j
            swapped[j] = swapped[i] ?? i
            picked.append(atJ)
        }
        return picked.sorted()
    }

    static func format(_ seconds: Double) -> String { String(format: "%.2fs", seconds) }
}

/// Work distribution and results of a parallel shard build. `@unchecked Sendable`: every field is
/// guarded by `lock`.
private final class BuildState: @unchecked Sendable {
    private let lock = NSLock()
    private var next = 0
    private let shardCount: Int
    private(set) var shards: [GenerationManifest.Shard?]
    private(set) var failure: SteerError?

    init(shardCount: Int) {
        self.shardCount = shardCount
        shards = Array(repeating: nil, count: shardCount)
    }

    func nextShard() -> Int? {
        lock.withLock {
            guard failure == nil, next < shardCount else { return nil }
            defer { next += 1 }
            return next
        }
    }

    func finish(_ shard: Int, _ entry: GenerationManifest.Shard) { lock.withLock { shards[shard] = entry } }

    func fail(_ error: SteerError) { lock.withLock { if failure == nil { failure = error } } }
}
