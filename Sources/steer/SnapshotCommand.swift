import ArgumentParser
import Foundation
import SteerBuilder
import SteerCore
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
            the snapshot contains) and store id. `steer serve --restore SNAP --data NEW_DIR` starts from it.
            """
    )

    @Option(name: .long, help: "The data directory (its store is DIR/store).")
    var data: String

    @Option(name: .long, help: "Where to write the snapshot (must not exist).")
    var out: String

    func run() throws {
        do {
            let store = try ItemStore(options: .init(path: data + "/store", createIfMissing: false))
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
