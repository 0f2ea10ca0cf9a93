import Foundation
import SteerCore
import SteerIndex
import SteerStore

/// Brings a loaded generation up to date with the store: replays the writes of its embedding version
/// made after a sequence number (the manifest's `store_sequence` the first time), so writes made during
/// a build are visible once the generation serves. The server calls this before it swaps (and may call
/// it again, with the returned sequence, until little is left, then once more under its swap lock).
public enum GenerationCatchUp {
    public struct Result: Sendable, Equatable {
        /// Pass as `since` next time.
        public var sequence: UInt64
        /// Vectors added or replaced.
        public var added: Int
        /// Labels that were live and were removed.
        public var removed: Int

        public init(sequence: UInt64, added: Int, removed: Int) {
            self.sequence = sequence
            self.added = added
            self.removed = removed
        }
    }

    /// Replays `store.changes(since:version:)` into `generation`.
    ///
    /// - Parameters:
    ///   - store: the store the generation was built from.
    ///   - generation: the generation to update (its embedding version is read from the manifest).
    ///   - since: the sequence to replay after; nil = `generation.manifest.storeSequence`.
    /// - Returns: the sequence reached and what changed.
    /// - Throws: `.notFound` when the change log was trimmed past `since` (rebuild instead), store and
    ///   index errors.
    public static func replay(store: ItemStore, into generation: IndexGeneration, since: UInt64? = nil) throws(SteerError) -> Result {
        let start = since ?? generation.manifest.storeSequence
        let changes = try store.changes(since: start, version: generation.manifest.embeddingVersion)
        var removed = 0
        if !changes.deletes.isEmpty { removed += try generation.remove(labels: changes.deletes) }
        var added = 0
        let batch = 8192
        var offset = 0
        while offset < changes.upserts.count {
            let slice = changes.upserts[offset..<min(changes.upserts.count, offset + batch)]
            let records = try store.records(internalIDs: slice.map(\.0))
            var labels: [Int64] = []
            var ids: [ItemID] = []
            var vectors: [Float] = []
            var gone: [Int64] = []
            for ((label, vector), record) in zip(slice, records) {
                // No record: deleted after `changes` read its snapshot; the next replay sees the delete.
                guard let record else {
                    gone.append(label)
                    continue
                }
                guard vector.count == generation.dimension else {
                    throw SteerError(.dimensionMismatch, "store vector of internal id \(label) has \(vector.count) dimensions, the generation \(generation.dimension)")
                }
                labels.append(label)
                ids.append(record.id)
                vectors.append(contentsOf: vector)
            }
            if !gone.isEmpty { removed += try generation.remove(labels: gone) }
            try generation.add(vectors, labels: labels, ids: ids)
            added += labels.count
            offset += batch
        }
        return Result(sequence: changes.sequence, added: added, removed: removed)
    }
}
