import Foundation
import SteerCore

/// The description of an index generation: what it was built from, how it is sharded, and every shard
/// file's count and checksum. Stored as `manifest.json` in the generation directory (docs/index-builder.md).
///
/// A generation couples one embedding version at one store sequence number (and, optionally, the model
/// checkpoint that produced that version) with the index built from it. Its shards hold disjoint sets of
/// items, chosen by `Sharding`; every shard has the same spec, metric and dimension.
///
/// JSON keys are snake_case. Readers refuse a `format` other than `steer-generation` and a
/// `format_version` newer than `GenerationManifest.formatVersion`.
public struct GenerationManifest: Codable, Sendable, Equatable {
    /// One shard file.
    public struct Shard: Codable, Sendable, Equatable {
        /// The shard number, equal to the position in `shards`.
        public var index: Int
        /// A plain file name inside the generation directory (no path separators).
        public var file: String
        /// Live vectors in the shard.
        public var count: Int
        /// The file's size in bytes.
        public var bytes: Int64
        /// `fnv1a64:` + 16 lower-case hex digits of FNV-1a 64 over the whole file.
        public var checksum: String

        public init(index: Int, file: String, count: Int, bytes: Int64, checksum: String) {
            self.index = index
            self.file = file
            self.count = count
            self.bytes = bytes
            self.checksum = checksum
        }
    }

    /// The sharding function (by name, so a reader can refuse one it does not implement) and shard count.
    public struct ShardingInfo: Codable, Sendable, Equatable {
        public var function: String
        public var shardCount: Int

        public init(function: String = Sharding.functionName, shardCount: Int) {
            self.function = function
            self.shardCount = shardCount
        }

        enum CodingKeys: String, CodingKey {
            case function
            case shardCount = "shard_count"
        }
    }

    /// How the generation was built: informational, not checked on load.
    public struct BuildInfo: Codable, Sendable, Equatable {
        /// The command that wrote it, for example `build` or `reshard`.
        public var command: String
        /// The generation a reshard started from.
        public var parentGeneration: String?
        /// Vectors sampled to train an IVF quantizer (nil when nothing was trained).
        public var trainSample: Int?
        /// Seed of the training sample.
        public var seed: UInt64?
        /// Whether all shards share one trained quantizer (IVF) or nothing was trained.
        public var sharedQuantizer: Bool?
        /// Shards built at the same time.
        public var parallelShards: Int?
        /// Wall-clock seconds per phase (`scan`, `train`, `add`, `save`, `total`, …).
        public var timingsSeconds: [String: Double]
        /// Peak resident memory of the building process (`getrusage` `ru_maxrss`), in bytes.
        public var peakRSSBytes: Int64?
        /// Items of the scanned version skipped because they were deleted between the store snapshot
        /// and reading their ids (their deletes are after `store_sequence`, so a replay removes them anyway).
        public var skippedDeleted: Int?
        /// Where the vectors came from: `store` (scanned) or `generation` (reconstructed from shards).
        public var source: String?

        public init(command: String, parentGeneration: String? = nil, trainSample: Int? = nil, seed: UInt64? = nil,
                    sharedQuantizer: Bool? = nil, parallelShards: Int? = nil, timingsSeconds: [String: Double] = [:],
                    peakRSSBytes: Int64? = nil, skippedDeleted: Int? = nil, source: String? = nil) {
            self.command = command
            self.parentGeneration = parentGeneration
            self.trainSample = trainSample
            self.seed = seed
            self.sharedQuantizer = sharedQuantizer
            self.parallelShards = parallelShards
            self.timingsSeconds = timingsSeconds
            self.peakRSSBytes = peakRSSBytes
            self.skippedDeleted = skippedDeleted
            self.source = source
        }

        enum CodingKeys: String, CodingKey {
            case command
            case parentGeneration = "parent_generation"
            case trainSample = "train_sample"
            case seed
            case sharedQuantizer = "shared_quantizer"
            case parallelShards = "parallel_shards"
            case timingsSeconds = "timings_s"
            case peakRSSBytes = "peak_rss_bytes"
            case skippedDeleted = "skipped_deleted"
            case source
        }
    }

    /// The value of `format`.
    public static let formatName = "steer-generation"
    /// The manifest format this build writes and the newest it reads.
    public static let formatVersion = 1
    /// The manifest's file name inside a generation directory.
    public static let fileName = "manifest.json"
    /// Largest manifest file accepted, in bytes (a manifest with `Sharding.maxShardCount` shards is ~1 MB).
    public static let maxManifestBytes = 4 << 20
    /// Longest generation id, in UTF-8 bytes.
    public static let maxGenerationIDBytes = 128

    public var format: String
    public var formatVersion: Int
    /// Unique name of the generation: letters, digits, `.`, `_`, `-`; reported by every search response.
    public var generationID: String
    /// ISO-8601 UTC time the generation was written.
    public var createdAt: String
    /// `CheckpointHash` of the model checkpoint whose embeddings were indexed, when known.
    public var checkpointHash: String?
    /// The store's embedding version that was indexed.
    public var embeddingVersion: String
    /// The store sequence the index reflects: it holds exactly the version's vectors written at or before
    /// it; replay `ItemStore.changes(since: storeSequence, version:)` to catch up.
    public var storeSequence: UInt64
    /// The index factory string (`IndexSpec.factoryString`).
    public var indexSpec: String
    public var metric: Metric
    public var dimension: Int
    /// Live vectors in all shards together.
    public var count: Int
    public var sharding: ShardingInfo
    public var shards: [Shard]
    /// IVF only: an empty index holding the trained coarse quantizer that every shard was copied from
    /// (`count` 0). `reshard` starts from it, so shards of a resharded generation share the quantizer
    /// without retraining.
    public var trainedIndex: Shard?
    public var build: BuildInfo
    /// `ItemStore.storeID` of the store the generation was built from. A server refuses a generation
    /// whose id is not its store's (`corrupt`); manifests written before store ids existed have none,
    /// and then only the sequence bound and the version checks apply (docs/operations.md).
    public var storeID: String?

    public init(generationID: String, createdAt: String = GenerationManifest.timestamp(), checkpointHash: String?,
                embeddingVersion: String, storeSequence: UInt64, indexSpec: String, metric: Metric, dimension: Int,
                sharding: ShardingInfo, shards: [Shard], trainedIndex: Shard? = nil, build: BuildInfo, storeID: String? = nil) {
        self.format = Self.formatName
        self.formatVersion = Self.formatVersion
        self.generationID = generationID
        self.createdAt = createdAt
        self.checkpointHash = checkpointHash
        self.embeddingVersion = embeddingVersion
        self.storeSequence = storeSequence
        self.indexSpec = indexSpec
        self.metric = metric
        self.dimension = dimension
        self.count = shards.reduce(0) { $0 + $1.count }
        self.sharding = sharding
        self.shards = shards
        self.trainedIndex = trainedIndex
        self.build = build
        self.storeID = storeID
    }

    enum CodingKeys: String, CodingKey {
        case format
        case formatVersion = "format_version"
        case generationID = "generation_id"
        case createdAt = "created_at"
        case checkpointHash = "checkpoint_hash"
        case embeddingVersion = "embedding_version"
        case storeSequence = "store_sequence"
        case indexSpec = "index_spec"
        case metric
        case dimension
        case count
        case sharding
        case shards
        case trainedIndex = "trained_index"
        case build
        case storeID = "store_id"
    }

    // MARK: Validation

    /// The sharding function the manifest names.
    ///
    /// - Throws: `.corrupt` when the function is unknown or the count is out of range.
    public func shardingFunction() throws(SteerError) -> Sharding {
        do {
            return try Sharding(functionName: sharding.function, shardCount: sharding.shardCount)
        } catch {
            throw SteerError(.corrupt, "manifest: sharding: \(error.message)")
        }
    }

    /// Checks every field that can be checked without the shard files.
    ///
    /// - Throws: `.corrupt` naming the first bad field; `.invalidRequest` for a newer format version.
    public func validate() throws(SteerError) {
        func bad(_ message: String) -> SteerError { SteerError(.corrupt, "manifest: \(message)") }
        guard format == Self.formatName else { throw bad("format is '\(format)', expected '\(Self.formatName)'") }
        guard formatVersion >= 1 else { throw bad("format_version \(formatVersion) is not valid") }
        guard formatVersion <= Self.formatVersion else {
            throw SteerError.invalid("manifest: format_version \(formatVersion) is newer than this build reads (\(Self.formatVersion))")
        }
        try Self.validateGenerationID(generationID)
        guard !embeddingVersion.isEmpty else { throw bad("embedding_version is empty") }
        if let checkpointHash, checkpointHash.isEmpty { throw bad("checkpoint_hash is empty (omit it instead)") }
        if let storeID, storeID.isEmpty || storeID.utf8.count > 64 { throw bad("store_id must be 1 to 64 bytes (omit it instead)") }
        guard !indexSpec.isEmpty else { throw bad("index_spec is empty") }
        guard (1...65536).contains(dimension) else { throw bad("dimension \(dimension) is out of range 1...65536") }
        let sharding = try shardingFunction()
        guard shards.count == sharding.shardCount else {
            throw bad("sharding.shard_count is \(sharding.shardCount) but \(shards.count) shards are listed")
        }
        var names = Set<String>()
        var total = 0
        for (position, shard) in shards.enumerated() {
            let label = "shards[\(position)]"
            guard shard.index == position else { throw bad("\(label).index is \(shard.index), expected \(position)") }
            guard Self.isPlainFileName(shard.file), shard.file != Self.fileName else {
                throw bad("\(label).file '\(shard.file)' is not a plain file name")
            }
            guard names.insert(shard.file).inserted else { throw bad("\(label).file '\(shard.file)' is listed twice") }
            guard shard.count >= 0 else { throw bad("\(label).count is negative") }
            guard shard.bytes >= 0 else { throw bad("\(label).bytes is negative") }
            guard ShardChecksum.parse(shard.checksum) != nil else {
                throw bad("\(label).checksum '\(shard.checksum)' is not 'fnv1a64:' followed by 16 hex digits")
            }
            total += shard.count
        }
        guard total == count else { throw bad("count is \(count) but the shards hold \(total)") }
        if let trained = trainedIndex {
            guard Self.isPlainFileName(trained.file), trained.file != Self.fileName, !names.contains(trained.file) else {
                throw bad("trained_index.file '\(trained.file)' is not a plain file name of its own")
            }
            guard trained.count == 0, trained.bytes >= 0, ShardChecksum.parse(trained.checksum) != nil else {
                throw bad("trained_index must have count 0, a size and an 'fnv1a64:' checksum")
            }
        }
    }

    /// Checks a generation id: 1 to `maxGenerationIDBytes` of letters, digits, `.`, `_`, `-`, not starting with `.`.
    public static func validateGenerationID(_ id: String) throws(SteerError) {
        let allowed = id.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
        guard !id.isEmpty, id.utf8.count <= maxGenerationIDBytes, allowed, !id.hasPrefix(".") else {
            throw SteerError(.corrupt, "manifest: generation_id '\(id)' must be 1 to \(maxGenerationIDBytes) letters, digits, '.', '_' or '-'")
        }
    }

    static func isPlainFileName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 255 && !name.hasPrefix(".") && !name.contains("/") && !name.utf8.contains(0)
    }

    // MARK: Reading and writing

    /// Encodes the manifest as pretty-printed JSON with sorted keys (stable output).
    public func encoded() throws(SteerError) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            return try encoder.encode(self)
        } catch {
            throw SteerError.internalError("cannot encode manifest: \(error)")
        }
    }

    /// Decodes and validates a manifest.
    ///
    /// - Parameters:
    ///   - data: the JSON text.
    ///   - source: the file name used in error messages.
    /// - Throws: `.corrupt` naming `source` and the bad field; `.tooLarge` over `maxManifestBytes`.
    public static func decode(_ data: Data, source: String = fileName) throws(SteerError) -> GenerationManifest {
        guard data.count <= maxManifestBytes else {
            throw SteerError(.tooLarge, "\(source): \(data.count) bytes, limit is \(maxManifestBytes)")
        }
        let manifest: GenerationManifest
        do {
            manifest = try JSONDecoder().decode(GenerationManifest.self, from: data)
        } catch let error as DecodingError {
            throw SteerError(.corrupt, "\(source): \(describe(error))")
        } catch {
            throw SteerError(.corrupt, "\(source): \(error)")
        }
        do {
            try manifest.validate()
        } catch {
            throw SteerError(error.code, "\(source): \(error.message)")
        }
        return manifest
    }

    /// Reads and validates `manifest.json` of a generation directory.
    ///
    /// - Throws: `.notFound` when the directory or the manifest is missing; as `decode` otherwise.
    public static func read(directory: String) throws(SteerError) -> GenerationManifest {
        let path = (directory as NSString).appendingPathComponent(fileName)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw SteerError.notFound("generation directory '\(directory)' does not exist")
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw SteerError.notFound("'\(path)' does not exist (not a generation directory, or an unfinished build)")
        }
        let data: Data
        do {
            let url = URL(fileURLWithPath: path)
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            guard size <= maxManifestBytes else {
                throw SteerError(.tooLarge, "'\(path)': \(size) bytes, limit is \(maxManifestBytes)")
            }
            data = try Data(contentsOf: url)
        } catch let error as SteerError {
            throw error
        } catch {
            throw SteerError(.io, "cannot read '\(path)': \(error.localizedDescription)")
        }
        return try decode(data, source: path)
    }

    /// A readable path through the JSON to the problem.
    private static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop { $0 == "." }.description
        }
        switch error {
        case .keyNotFound(let key, let context):
            let at = path(context.codingPath + [key])
            return "missing field '\(at)'"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "field '\(path(context.codingPath))' has the wrong type"
        case .dataCorrupted(let context):
            let at = path(context.codingPath)
            return at.isEmpty ? "not valid JSON" : "field '\(at)' is invalid: \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    /// The current UTC time as ISO-8601 (`2026-11-27T02:00:00Z`).
    public static func timestamp(_ date: Date = Date()) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    /// A new generation id: UTC time plus 8 random hex digits, for example `g20261127T020000Z-3f9a1c2e`.
    public static func newGenerationID(_ date: Date = Date()) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let suffix = String(UInt32.random(in: .min ... .max), radix: 16)
        return "g" + formatter.string(from: date) + "-" + String(repeating: "0", count: 8 - suffix.count) + suffix
    }
}

/// Checksums of generation files: `fnv1a64:` + 16 hex digits of FNV-1a 64 over the whole file.
///
/// FNV-1a detects accidental corruption (truncation, flipped bytes, a wrong file); it is not a defence
/// against someone who can write the generation directory.
public enum ShardChecksum {
    /// Size of the read buffer.
    static let chunkBytes = 1 << 20

    /// The checksum string for a hash value.
    public static func format(_ value: UInt64) -> String { "fnv1a64:" + FNV1a64.hex(value) }

    /// The hash value of a checksum string, or nil when it is malformed.
    public static func parse(_ text: String) -> UInt64? {
        guard text.hasPrefix("fnv1a64:") else { return nil }
        let digits = text.dropFirst("fnv1a64:".count)
        guard digits.count == 16, digits.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else { return nil }
        return UInt64(digits, radix: 16)
    }

    /// Checksums a file and returns its size too.
    ///
    /// - Throws: `.notFound` when the file is missing, `.io` when it cannot be read.
    public static func compute(path: String) throws(SteerError) -> (checksum: String, bytes: Int64) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw SteerError.notFound("'\(path)' does not exist") }
            throw SteerError(.io, "cannot open '\(path)': \(String(cString: strerror(code)))")
        }
        defer { close(fd) }
        var hasher = FNV1a64()
        var total: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let got = read(fd, buffer.baseAddress, chunkBytes)
            if got < 0 {
                if errno == EINTR { continue }
                throw SteerError(.io, "cannot read '\(path)': \(String(cString: strerror(errno)))")
            }
            if got == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
            total += Int64(got)
        }
        return (format(hasher.value), total)
    }
}

/// The identity of a model checkpoint directory (docs/checkpoint-format.md): `fnv1a64:` + 16 hex digits
/// of FNV-1a 64 over the bytes of `model.safetensors` followed by the bytes of `items.jsonl`.
///
/// `steer ingest` names embedding versions after it (`ckpt-` + the 16 hex digits) and records it with the
/// version; `steer-index build` copies it into the manifest; the server compares it with the checkpoint it
/// loads and refuses a generation built from another checkpoint's embeddings.
public enum CheckpointHash {
    /// The files hashed, in order.
    public static let files = ["model.safetensors", "items.jsonl"]

    /// Hashes a checkpoint directory. Each file must be a regular file (a FIFO or a device such as
    /// `/dev/zero` behind a symbolic link would never end), checked on the open descriptor.
    ///
    /// - Throws: `.notFound` naming a missing file, `.corrupt` for one that is not a regular file,
    ///   `.io` when one cannot be read.
    public static func compute(directory: String) throws(SteerError) -> String {
        var hasher = FNV1a64()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ShardChecksum.chunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        for name in files {
            let path = (directory as NSString).appendingPathComponent(name)
            let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
            guard fd >= 0 else {
                let code = errno
                if code == ENOENT { throw SteerError.notFound("checkpoint file '\(path)' does not exist") }
                throw SteerError(.io, "cannot open '\(path)': \(String(cString: strerror(code)))")
            }
            defer { close(fd) }
            var info = stat()
            guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
                throw SteerError(.corrupt, "checkpoint file '\(path)' is not a regular file")
            }
            while true {
                let got = read(fd, buffer.baseAddress, buffer.count)
                if got < 0 {
                    if errno == EINTR { continue }
                    throw SteerError(.io, "cannot read '\(path)': \(String(cString: strerror(errno)))")
                }
                if got == 0 { break }
                hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
            }
        }
        return ShardChecksum.format(hasher.value)
    }

    /// The default embedding-version name for a checkpoint hash: `ckpt-` + its 16 hex digits.
    public static func versionName(for hash: String) -> String {
        "ckpt-" + (hash.hasPrefix("fnv1a64:") ? String(hash.dropFirst("fnv1a64:".count)) : hash)
    }
}
