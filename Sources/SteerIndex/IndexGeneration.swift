import Foundation
import SteerCore

/// A loaded, validated index generation: every shard of a generation directory, searched as one index.
///
/// Labels are the store's internal ids (`ItemStore` internal ids), as the builder adds them; hydrate hits
/// with `ItemStore.records(internalIDs:)`. Items are placed by `Sharding` on their *external* id, so an
/// item stays on one shard for its whole life and an upsert of an existing item replaces it in place.
///
/// Thread safety: `@unchecked Sendable` is safe because every stored property is immutable after `load`
/// and `VectorIndex` is itself thread-safe (concurrent searches; add/remove serialised internally).
/// A search that runs while a replayed write is applied may see the write on one shard and not yet on
/// another; each shard is consistent.
public final class IndexGeneration: @unchecked Sendable {
    /// The validated manifest.
    public let manifest: GenerationManifest
    /// The directory it was loaded from.
    public let directory: String
    /// The parsed `manifest.indexSpec`.
    public let spec: IndexSpec
    /// The sharding function (`manifest.sharding`).
    public let sharding: Sharding
    /// One index per shard, in shard order.
    public let shards: [VectorIndex]

    /// `manifest.generationID`: every search and recommend response names it.
    public var generationID: String { manifest.generationID }
    public var dimension: Int { manifest.dimension }
    public var metric: Metric { manifest.metric }
    /// Live vectors in all shards now (changes as writes are replayed).
    public var count: Int { shards.reduce(0) { $0 + $1.count } }

    /// Wraps already-open shard indexes (the builder's and the tests' entry point; `load` for files).
    ///
    /// - Throws: `.invalidRequest` when the shards disagree with the manifest (count of shards, spec,
    ///   dimension, metric).
    public init(manifest: GenerationManifest, directory: String, shards: [VectorIndex]) throws(SteerError) {
        try manifest.validate()
        let spec: IndexSpec
        do {
            spec = try IndexSpec(parsing: manifest.indexSpec)
        } catch {
            throw SteerError(.corrupt, "manifest: index_spec '\(manifest.indexSpec)' is not valid: \(error.message)")
        }
        let sharding = try manifest.shardingFunction()
        guard shards.count == sharding.shardCount else {
            throw SteerError.invalid("generation \(manifest.generationID): \(shards.count) shard indexes for \(sharding.shardCount) shards")
        }
        for (position, shard) in shards.enumerated() {
            let file = manifest.shards[position].file
            guard shard.dimension == manifest.dimension else {
                throw SteerError(.dimensionMismatch, "'\(file)' has dimension \(shard.dimension), the manifest says \(manifest.dimension)")
            }
            guard shard.metric == manifest.metric else {
                throw SteerError(.corrupt, "'\(file)' uses metric \(shard.metric.rawValue), the manifest says \(manifest.metric.rawValue)")
            }
            guard shard.spec == spec else {
                throw SteerError(.corrupt, "'\(file)' is a \(shard.spec.factoryString) index, the manifest says \(spec.factoryString)")
            }
        }
        self.manifest = manifest
        self.directory = directory
        self.spec = spec
        self.sharding = sharding
        self.shards = shards
    }

    /// A generation of indexes built in this process and not saved (for example, the index a server
    /// builds from the store at start-up), so one code path serves both. Its manifest lists the shards
    /// with `bytes` 0, a zero checksum and `build.command` `in-memory`; `directory` is empty.
    ///
    /// - Parameters:
    ///   - shards: one index per shard, placed with `Sharding(shardCount: shards.count)` on external ids.
    /// - Throws: `.invalidRequest` for no shards or shards that disagree on spec, dimension or metric.
    public static func unsaved(generationID: String, embeddingVersion: String, storeSequence: UInt64, checkpointHash: String? = nil,
                               shards: [VectorIndex]) throws(SteerError) -> IndexGeneration {
        guard let first = shards.first else { throw SteerError.invalid("a generation needs at least one shard") }
        let entries = shards.enumerated().map { position, shard in
            GenerationManifest.Shard(index: position, file: "unsaved-shard-\(position)", count: shard.count, bytes: 0,
                                     checksum: ShardChecksum.format(0))
        }
        let manifest = GenerationManifest(
            generationID: generationID, checkpointHash: checkpointHash, embeddingVersion: embeddingVersion,
            storeSequence: storeSequence, indexSpec: first.spec.factoryString, metric: first.metric, dimension: first.dimension,
            sharding: .init(shardCount: shards.count), shards: entries, build: .init(command: "in-memory"))
        do {
            return try IndexGeneration(manifest: manifest, directory: "", shards: shards)
        } catch {
            throw SteerError.invalid("unsaved generation \(generationID): \(error.message)")
        }
    }

    // MARK: Loading

    /// Loads and validates a generation directory.
    ///
    /// Checks, in order: the manifest (`GenerationManifest.read`), then for every shard that the file
    /// exists, has the manifest's size and checksum, loads, and has the manifest's spec, metric,
    /// dimension and count. Nothing is returned unless everything matches.
    ///
    /// - Parameters:
    ///   - directory: the generation directory.
    ///   - memoryMapped: passed to `VectorIndex.load`.
    ///   - verifyChecksums: hash every shard file (reads each file once more; on by default).
    /// - Throws: `.notFound` naming the missing directory, manifest or shard file; `.corrupt` naming the
    ///   file whose checksum, size, count, spec or metric disagrees; `.dimensionMismatch`.
    /// - Complexity: reads every shard file (twice with `verifyChecksums`).
    public static func load(directory: String, memoryMapped: Bool = false, verifyChecksums: Bool = true) throws(SteerError) -> IndexGeneration {
        let manifest = try GenerationManifest.read(directory: directory)
        try verifyFiles(manifest, directory: directory, checksums: verifyChecksums)
        var shards: [VectorIndex] = []
        shards.reserveCapacity(manifest.shards.count)
        for shard in manifest.shards {
            let path = (directory as NSString).appendingPathComponent(shard.file)
            let index: VectorIndex
            do {
                index = try VectorIndex.load(path: path, memoryMapped: memoryMapped)
            } catch {
                throw SteerError(error.code == .notFound ? .notFound : .corrupt, "shard file '\(path)': \(error.message)")
            }
            guard index.count == shard.count else {
                throw SteerError(.corrupt, "shard file '\(path)' holds \(index.count) vectors, the manifest says \(shard.count)")
            }
            shards.append(index)
        }
        do {
            return try IndexGeneration(manifest: manifest, directory: directory, shards: shards)
        } catch {
            throw SteerError(error.code, "generation '\(directory)': \(error.message)")
        }
    }

    /// Checks that every shard file exists and has the manifest's size and (optionally) checksum.
    ///
    /// - Throws: `.notFound` or `.corrupt` naming the file.
    public static func verifyFiles(_ manifest: GenerationManifest, directory: String, checksums: Bool = true) throws(SteerError) {
        for shard in manifest.shards + (manifest.trainedIndex.map { [$0] } ?? []) {
            let path = (directory as NSString).appendingPathComponent(shard.file)
            var info = stat()
            guard stat(path, &info) == 0 else {
                throw SteerError.notFound("\(shard == manifest.trainedIndex ? "trained-index" : "shard") file '\(path)' is missing")
            }
            guard Int64(info.st_size) == shard.bytes else {
                throw SteerError(.corrupt, "shard file '\(path)' is \(info.st_size) bytes, the manifest says \(shard.bytes)")
            }
            if checksums {
                let actual = try ShardChecksum.compute(path: path).checksum
                guard actual == shard.checksum else {
                    throw SteerError(.corrupt, "shard file '\(path)' has checksum \(actual), the manifest says \(shard.checksum)")
                }
            }
        }
    }

    /// Refuses a generation that does not fit what the server serves with it.
    ///
    /// - Parameters:
    ///   - checkpointHash: `CheckpointHash` of the model checkpoint to serve, or nil to skip the check.
    ///     A manifest without a checkpoint hash passes only when this is nil.
    ///   - dimension: the query vector dimension of the model.
    ///   - embeddingVersion: the version the server expects, or nil.
    /// - Throws: `.dimensionMismatch`, or `.invalidRequest` naming the mismatching field.
    public func requireCompatible(checkpointHash: String?, dimension: Int, embeddingVersion: String? = nil) throws(SteerError) {
        guard dimension == manifest.dimension else {
            throw SteerError(.dimensionMismatch, "generation \(generationID) has dimension \(manifest.dimension), the model's queries have \(dimension)")
        }
        if let checkpointHash, manifest.checkpointHash != checkpointHash {
            throw SteerError.invalid("generation \(generationID) was built from checkpoint \(manifest.checkpointHash ?? "(unknown)"), not \(checkpointHash)")
        }
        if let embeddingVersion, manifest.embeddingVersion != embeddingVersion {
            throw SteerError.invalid("generation \(generationID) indexes embedding version '\(manifest.embeddingVersion)', not '\(embeddingVersion)'")
        }
    }

    // MARK: Searching

    /// Searches every shard with the same parameters and merges the results by score.
    ///
    /// - Parameters:
    ///   - queries: `n * dimension` floats.
    ///   - k: results per query, 0 to `VectorIndex.maxK`.
    ///   - parameters: passed to every shard unchanged (nprobe, efSearch and the allowed labels).
    /// - Returns: n lists, each at most k results, best first; equal scores are ordered by the lower label.
    ///   - fanOut: the gate that says how many other threads the shards may use now (`ShardFanOut`):
    ///     while cores are idle the shards are searched side by side, else one after another here.
    /// - Throws: what `VectorIndex.search` throws (dimension, k).
    /// - Complexity: one search per shard, then an O(shards × k × log k) merge per query.
    public func search(_ queries: [Float], k: Int, parameters: SearchParameters = .init(),
                       fanOut: ShardFanOut = .shared) throws(SteerError) -> [[ScoredLabel]] {
        if shards.count == 1 { return try shards[0].search(queries, k: k, parameters: parameters) }
        let granted = fanOut.enter(wanted: shards.count - 1)
        defer { fanOut.leave(granted: granted) }
        var perShard: [[[ScoredLabel]]] = []
        if granted == 0 {
            perShard.reserveCapacity(shards.count)
            for shard in shards { perShard.append(try shard.search(queries, k: k, parameters: parameters)) }
        } else {
            // granted + 1 threads (this one included), each taking every (granted + 1)-th shard.
            let results = Locked<[Result<[[ScoredLabel]], SteerError>?]>(Array(repeating: nil, count: shards.count))
            let width = granted + 1
            let shards = self.shards
            DispatchQueue.concurrentPerform(iterations: width) { lane in
                for position in stride(from: lane, to: shards.count, by: width) {
                    let result = Result { () throws(SteerError) in try shards[position].search(queries, k: k, parameters: parameters) }
                    results.withLock { $0[position] = result }
                }
            }
            for result in results.withLock({ $0 }) {
                guard let result else { throw SteerError(.internal, "a shard search did not run") }
                perShard.append(try result.get())
            }
        }
        let n = perShard.first?.count ?? 0
        var merged: [[ScoredLabel]] = []
        merged.reserveCapacity(n)
        for query in 0..<n {
            var top = TopK(k: k)
            for lists in perShard { for hit in lists[query] { top.offer(hit) } }
            merged.append(top.sorted())
        }
        return merged
    }

    // MARK: Replaying writes

    /// The shard an item belongs to.
    public func shard(of id: ItemID) -> Int { sharding.shard(of: id) }

    /// Adds or replaces vectors, each on the shard of its external id.
    ///
    /// - Parameters:
    ///   - vectors: `labels.count * dimension` floats.
    ///   - labels: the items' internal ids (index labels).
    ///   - ids: the items' external ids, one per label (they choose the shard).
    /// - Throws: `.invalidRequest` when the counts differ; what `VectorIndex.add` throws.
    public func add(_ vectors: [Float], labels: [Int64], ids: [ItemID]) throws(SteerError) {
        guard ids.count == labels.count else {
            throw SteerError.invalid("add: \(labels.count) labels but \(ids.count) item ids")
        }
        guard vectors.count == labels.count * dimension else {
            throw SteerError(.dimensionMismatch, "add: \(vectors.count) floats for \(labels.count) vectors of dimension \(dimension)")
        }
        if shards.count == 1 {
            try shards[0].add(vectors, labels: labels)
            return
        }
        var groupedVectors = [[Float]](repeating: [], count: shards.count)
        var groupedLabels = [[Int64]](repeating: [], count: shards.count)
        for (row, id) in ids.enumerated() {
            let shard = sharding.shard(of: id)
            groupedLabels[shard].append(labels[row])
            groupedVectors[shard].append(contentsOf: vectors[(row * dimension)..<((row + 1) * dimension)])
        }
        for shard in shards.indices where !groupedLabels[shard].isEmpty {
            try shards[shard].add(groupedVectors[shard], labels: groupedLabels[shard])
        }
    }

    /// Removes labels from every shard (a deleted item's external id is no longer known, so the removal
    /// is broadcast; removing an absent label is a no-op).
    ///
    /// - Returns: how many labels were live.
    @discardableResult
    public func remove(labels: [Int64]) throws(SteerError) -> Int {
        if labels.isEmpty { return 0 }
        var removed = 0
        for shard in shards { removed += try shard.remove(labels: labels) }
        return removed
    }

    /// Whether any shard holds `label`.
    public func contains(label: Int64) -> Bool { shards.contains { $0.contains(label: label) } }

    /// Removed-but-not-yet-compacted vectors in all shards (HNSW).
    public var tombstoneCount: Int { shards.reduce(0) { $0 + $1.tombstoneCount } }

    /// Compacts every shard (`VectorIndex.compact`), one at a time.
    public func compact() throws(SteerError) {
        for shard in shards { try shard.compact() }
    }
}

extension GenerationManifest {
    /// Suffix of the temporary directory a generation is written into before it is renamed into place.
    public static let partialSuffix = ".partial"

    /// The newest complete generation directory directly inside `parent` (the one SIGHUP swaps to): the
    /// subdirectory whose manifest reads and validates and has the latest `created_at`, ties broken by
    /// the larger generation id. Temporary `.partial` directories are skipped.
    ///
    /// - Returns: the directory's path, or nil when there is none.
    public static func newest(in parent: String) -> String? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: parent) else { return nil }
        var best: (GenerationManifest, String)?
        for name in names where !name.hasPrefix(".") && !name.contains(partialSuffix) {
            let path = (parent as NSString).appendingPathComponent(name)
            guard let manifest = try? read(directory: path) else { continue }
            if let current = best {
                let newer = (manifest.createdAt, manifest.generationID) > (current.0.createdAt, current.0.generationID)
                if newer { best = (manifest, path) }
            } else {
                best = (manifest, path)
            }
        }
        return best?.1
    }
}
