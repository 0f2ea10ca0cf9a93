import ArgumentParser
import Foundation
import SteerBuilder
import SteerCore
import SteerData
import SteerStore

/// `steer snapshot`: a consistent, checksummed copy of a stopped server's data directory (`Snapshot`;
/// docs/operations.md, "Backup and restore"), which `steer serve --restore` starts from.
struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Write a snapshot of a data directory (store checkpoint, steer.json, served generation, manifest with checksums).",
        discussion: """
            The server using DIR must be stopped (RocksDB allows one writer): a running one keeps the store \
            locked and this command refuses. Prints the manifest's applied_sequence (the write-log sequence \
            the snapshot contains) and store id. `steer serve --restore SNAP --data NEW_DIR` starts from it. \
            A snapshot holds one collection: the data directory's own (default) or, with --collection, a named \
            one; a snapshot of a named collection restores as the default collection of a new data directory.
            """
    )

    @Option(name: .long, help: "The data directory (its store is DIR/store).")
    var data: String

    @Option(name: .long, help: "Where to write the snapshot (must not exist).")
    var out: String

    @Option(name: .long, help: "A named collection of --data (DIR/collections/NAME) instead of the data directory's own.")
    var collection: String?

    func run() throws {
        do {
            let data = try DataDirectory.collection(collection, in: self.data)
            let store = try ItemStore(options: .init(path: DataDirectory.storePath(data), createIfMissing: false))
            defer { store.close() }
            let manifest = try Snapshot.write(store: store, data: data, to: out)
            print("snapshot \(out): store \(manifest.storeID), applied_sequence \(manifest.appliedSequence), "
                + "generation \(manifest.generation ?? "none"), \(manifest.files.count) files")
        } catch {
            FileHandle.standardError.write(Data("steer snapshot: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
