import Foundation
import SteerData
import SteerCore
import SteerIndex
import SteerStore

/// What one `ingestVectors` chunk did.
public struct VersionIngestResult: Sendable, Equatable {
    /// Items written by this chunk.
    public var written: Int
    /// Items of the version written by every chunk so far, a re-sent chunk counted again (the registry's `rows`).
    public var total: Int
    /// True once the version is marked complete.
    public var complete: Bool
    /// The store sequence after the chunk.
    public var sequence: UInt64
}

/// Ingestion of a new embedding version into a running server, streamed by the client in chunks
/// (`ingest_vectors`, docs/operations.md "The retraining loop"): the live counterpart of `steer ingest`,
/// which needs the store to itself.
///
/// Each chunk is one store batch written under the engine's writer lock, so it is ordered with client
/// upserts and deletes (an item deleted meanwhile is never brought back by a later read-modify-write)
/// and searches never wait for it: a version other than the generation's touches no live index. The
/// version is recorded `in_progress` in `steer-versions.json` (`VersionRegistry`) at the first chunk and
/// `complete` by the chunk that says so; `steer-index build` refuses it until then. Re-sending a chunk
/// writes the same values again (idempotent), so a client resumes by sending again from any chunk.
extension RetrievalEngine {
    /// Writes one chunk of a version's vectors (see the extension's notes).
    ///
    /// - Parameters:
    ///   - version: the embedding version; not the serving generation's.
    ///   - dimension: its dimension (created with it; must match an existing version).
    ///   - checkpointHash: recorded in the registry (the source checkpoint's hash, or any label).
    ///   - items: at most `Configuration.maxBatchItems`; finite vectors of `dimension` floats. An item not
    ///     in the catalog is created with the given title and tags.
    ///   - complete: mark the version completely ingested after this chunk.
    /// - Throws: `.invalidRequest` for the serving version, a version registered from another source, or
    ///   a bad name; `.dimensionMismatch`; store errors.
    public func ingestVectors(version: String, dimension: Int, checkpointHash: String, items: [VersionItem],
                              complete: Bool) throws(SteerError) -> VersionIngestResult {
        try requireOpen()
        guard version != generation.embeddingVersion else {
            throw SteerError.invalid("embedding version '\(version)' is the one serving: ingest a new version, build a generation of it and swap")
        }
        for (index, item) in items.enumerated() {
            guard item.vector.count == dimension else {
                throw SteerError.dimension(expected: dimension, got: item.vector.count, field: "items[\(index)].vector")
            }
            try Vectors.requireFinite(item.vector, field: "items[\(index)].vector")
        }
        let storePath = store.options.path
        writeLock.lock()
        defer { writeLock.unlock() }
        var registry = try VersionRegistry.read(storePath: storePath)
        if let entry = registry.versions[version] {
            guard entry.checkpointHash == checkpointHash else {
                throw SteerError.invalid("embedding version '\(version)' was ingested from \(entry.checkpointHash), not \(checkpointHash)")
            }
        } else if store.version(named: version) != nil {
            throw SteerError.invalid("embedding version '\(version)' exists and was not ingested by ingest_vectors or steer ingest; choose another name")
        }
        try store.createVersion(version, dimension: dimension)
        var entry = registry.versions[version]
            ?? VersionRegistry.Entry(status: .inProgress, checkpointHash: checkpointHash, dimension: dimension, rows: 0,
                                     source: "ingest_vectors", startedAt: GenerationManifest.timestamp())
        if entry.status == .complete && !items.isEmpty {
            // New vectors after completion: the version is being re-ingested.
            entry.status = .inProgress
            entry.completedAt = nil
        }
        var sequence = store.latestSequence
        if !items.isEmpty {
            let existing = try store.get(items.map(\.id))
            let writes = zip(items, existing).map { item, old in
                ItemStore.ItemWrite(id: item.id, title: item.title ?? old?.title, tags: item.tags ?? old?.tags ?? [],
                                    attributesJSON: old?.attributesJSON, vectors: [version: item.vector])
            }
            sequence = try store.upsert(writes).sequence
            entry.rows += items.count
        }
        if complete {
            entry.status = .complete
            entry.completedAt = GenerationManifest.timestamp()
            entry.sequence = sequence
        }
        registry.versions[version] = entry
        try registry.write(storePath: storePath)
        return VersionIngestResult(written: items.count, total: entry.rows, complete: entry.status == .complete, sequence: sequence)
    }
}
