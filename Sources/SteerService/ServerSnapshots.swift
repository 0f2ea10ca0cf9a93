import SteerCore
import SteerProtocol

/// Takes snapshots of a running server for the admin op `snapshot` (docs/operations.md, "Backup and
/// restore"): `steer serve --snapshot-dir DIR` installs one that writes `Snapshot`s into `DIR` only.
/// Without one, `snapshot` is `invalid_request`.
public protocol ServerSnapshots: Sendable {
    /// Writes a snapshot of the server's collections (the default one, and the named ones with their
    /// catalog) under `name` (already checked by
    /// `Request.validateSnapshotName`) in the snapshot directory. Blocks the calling worker thread while
    /// it copies.
    ///
    /// - Returns: what was written.
    /// - Throws: `.alreadyExists` when `name` exists; `.unavailable` while another snapshot is being
    ///   written; `.io` and the store's errors (nothing is left under `name`).
    func take(name: String) throws(SteerError) -> TakenSnapshot
}

/// What `ServerSnapshots.take` wrote.
public struct TakenSnapshot: Sendable {
    /// The snapshot's directory.
    public var path: String
    /// FNV-1a-64 of its manifest (`snapshot.json`, which lists every file's size and checksum).
    public var checksum: String
    /// The write-log sequence the snapshot's store contains (0 when it never followed a stream).
    public var appliedSequence: UInt64
    /// The generation directory it holds, if any.
    public var generation: String?
    /// Files and bytes copied (the manifest not counted).
    public var files: Int
    public var bytes: Int64

    public init(path: String, checksum: String, appliedSequence: UInt64, generation: String?, files: Int, bytes: Int64) {
        self.path = path
        self.checksum = checksum
        self.appliedSequence = appliedSequence
        self.generation = generation
        self.files = files
        self.bytes = bytes
    }
}

extension RequestHandler {
    /// Runs `snapshot` and writes its fields: `path`, `checksum`, `applied_sequence`, `generation`,
    /// `files`, `bytes`.
    ///
    /// - Throws: `.invalidRequest` without a snapshot directory or with a `collection` (a snapshot holds
    ///   them all); what
    ///   `ServerSnapshots.take` throws.
    func runSnapshot(name: String, collection: String, _ writer: inout JSONWriter) throws(SteerError) {
        guard let snapshots else {
            throw SteerError.invalid("snapshot needs a snapshot directory (steer serve --snapshot-dir DIR)")
        }
        guard collection == CollectionName.defaultName else {
            throw SteerError.invalid("snapshot takes every collection of the server at once: send it without 'collection'")
        }
        let taken = try snapshots.take(name: name)
        writer.raw(",\"path\":")
        writer.string(taken.path)
        writer.raw(",\"checksum\":")
        writer.string(taken.checksum)
        writer.raw(",\"applied_sequence\":")
        writer.int(Int64(clamping: taken.appliedSequence))
        writer.raw(",\"generation\":")
        if let generation = taken.generation { writer.string(generation) } else { writer.raw("null") }
        writer.raw(",\"files\":")
        writer.int(taken.files)
        writer.raw(",\"bytes\":")
        writer.int(taken.bytes)
    }
}
