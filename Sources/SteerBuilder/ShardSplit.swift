import Foundation
import SteerCore
import SteerStore

/// Copies the items one shard of a cluster owns out of one or more stores into another store: the data
/// step of re-sharding across machines (docs/scaling.md). Run it once per new shard, with every old
/// shard's store as a source; every item lands on exactly one new shard because the same `Sharding`
/// decides.
public enum ShardSplit {
    /// What `run` copied.
    public struct Report: Sendable, Equatable {
        /// Items of the version read from the sources.
        public var scanned: Int
        /// Items the target shard owns, written to the target.
        public var copied: Int
    }

    /// Copies every item of `version` whose `sharding.shard(of:)` is `shard` from `sources` into `target`
    /// (title, tags, attributes and that version's vector; an id already in the target is replaced).
    ///
    /// - Parameters:
    ///   - sources: open stores to read (read-only is enough); each is read from one snapshot.
    ///   - version: the embedding version to copy; created in the target with the sources' dimension.
    ///   - sharding: the new cluster's sharding (its shard count).
    ///   - shard: the new shard to fill, `0..<sharding.shardCount`.
    ///   - target: the store to write (the new shard's `DIR/store`).
    ///   - batchSize: items per target write.
    /// - Throws: `.invalidRequest` for a shard out of range; `.notFound` when a source lacks the version;
    ///   `.dimensionMismatch` when sources or target disagree on its dimension; store errors.
    public static func run(sources: [ItemStore], version: String, sharding: Sharding, shard: Int, target: ItemStore,
                           batchSize: Int = 2000) throws(SteerError) -> Report {
        guard (0..<sharding.shardCount).contains(shard) else {
            throw SteerError.invalid("shard \(shard) is not in 0..<\(sharding.shardCount)")
        }
        var dimension: Int?
        for source in sources {
            guard let found = source.version(named: version) else {
                throw SteerError.notFound("store '\(source.options.path)' has no embedding version '\(version)'")
            }
            if let dimension, dimension != found.dimension {
                throw SteerError(.dimensionMismatch, "store '\(source.options.path)' holds '\(version)' with dimension \(found.dimension), another source \(dimension)")
            }
            dimension = found.dimension
        }
        guard let dimension else { throw SteerError.invalid("give at least one source store") }
        if let existing = target.version(named: version), existing.dimension != dimension {
            throw SteerError(.dimensionMismatch, "the target holds '\(version)' with dimension \(existing.dimension), the sources \(dimension)")
        }
        try target.createVersion(version, dimension: dimension)
        var report = Report(scanned: 0, copied: 0)
        var pending: [ItemStore.ItemWrite] = []
        func flush() throws(SteerError) {
            guard !pending.isEmpty else { return }
            _ = try target.upsert(pending)
            report.copied += pending.count
            pending.removeAll(keepingCapacity: true)
        }
        for source in sources {
            do {
                _ = try source.scanVectors(version: version) { internalIDs, vectors in
                    let records = try source.records(internalIDs: internalIDs)
                    for (row, record) in records.enumerated() {
                        guard let record else { continue } // deleted after the scan's snapshot was read
                        report.scanned += 1
                        guard sharding.shard(of: record.id) == shard else { continue }
                        let vector = Array(vectors[(row * dimension)..<((row + 1) * dimension)])
                        pending.append(ItemStore.ItemWrite(id: record.id, title: record.title, tags: record.tags,
                                                           attributesJSON: record.attributesJSON, vectors: [version: vector]))
                        if pending.count >= batchSize { try flush() }
                    }
                }
            } catch let error as SteerError {
                throw error
            } catch {
                throw SteerError(.internal, "splitting '\(source.options.path)': \(error)")
            }
        }
        try flush()
        return report
    }
}
