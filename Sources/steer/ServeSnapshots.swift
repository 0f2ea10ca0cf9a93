import Foundation
import SteerBuilder
import SteerCore
import SteerEngine
import SteerIndex
import SteerProtocol
import SteerService

/// `steer serve --snapshot-dir DIR`: the admin op `snapshot` of a running server (docs/operations.md,
/// "Backup and restore"). Each snapshot is `Snapshot.write` of the default collection's open store (a
/// RocksDB checkpoint: one consistent moment, while writes go on), then of every named collection's and
/// the catalog, with collection changes held meanwhile (`CollectionSet.withChangesHeld`), into
/// `DIR/<name>`, where `name` passed
/// `Request.validateSnapshotName` (no separator, no `..`, at most 64 bytes), so nothing is written
/// outside `DIR`. One snapshot at a time; it runs on the request's worker thread (never an event loop).
///
/// Thread safety: `busy` admits one `take` at a time; the rest is the store's own locking.
final class ServeSnapshots: ServerSnapshots {
    let directory: String
    let engine: RetrievalEngine
    /// The server's named collections (nil: the default collection only).
    let collections: CollectionSet?
    private let busy = NSLock()

    /// - Throws: `.io` when `directory` cannot be created or is not a directory.
    init(directory: String, engine: RetrievalEngine, collections: CollectionSet? = nil) throws(SteerError) {
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw SteerError(.io, "cannot create the snapshot directory '\(directory)': \(error.localizedDescription)")
            }
        } else if !isDirectory.boolValue {
            throw SteerError(.io, "the snapshot directory '\(directory)' is not a directory")
        }
        self.directory = (directory as NSString).standardizingPath
        self.engine = engine
        self.collections = collections
    }

    func take(name: String) throws(SteerError) -> TakenSnapshot {
        try Request.validateSnapshotName(name)
        guard busy.try() else { throw SteerError(.unavailable, "another snapshot is being written; retry when it is done") }
        defer { busy.unlock() }
        let out = directory + "/" + name
        guard !FileManager.default.fileExists(atPath: out) else {
            throw SteerError(.alreadyExists, "snapshot '\(name)' already exists in \(directory)")
        }
        let engine = self.engine
        let manifest: Snapshot.Manifest
        if let collections, collections.dataDirectory != nil {
            manifest = try collections.withChangesHeld { (catalog, named) throws(SteerError) -> Snapshot.Manifest in
                try Snapshot.write(store: engine.store, data: engine.configuration.dataDirectory, to: out, catalog: catalog,
                                   named: named.map { ($0.name, $0.engine.store) })
            }
        } else {
            manifest = try Snapshot.write(store: engine.store, data: engine.configuration.dataDirectory, to: out)
        }
        let (checksum, _) = try ShardChecksum.compute(path: out + "/" + Snapshot.manifestName)
        return TakenSnapshot(path: out, checksum: checksum, appliedSequence: manifest.appliedSequence, generation: manifest.generation,
                             files: manifest.files.count, bytes: manifest.files.reduce(0) { $0 + $1.bytes })
    }
}
