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
            A snapshot holds the data directory's own (default) collection; with --with-collections also its \
            named collections and their catalog (restored as they were); with --collection one named \
            collection alone, which restores as the default collection of a new data directory.
            """
    )

    @Option(name: .long, help: "The data directory (its store is DIR/store).")
    var data: String

    @Option(name: .long, help: "Where to write the snapshot (must not exist).")
    var out: String

    @Option(name: .long, help: "A named collection of --data (DIR/collections/NAME) instead of the data directory's own.")
    var collection: String?

    @Flag(name: .long, help: "Also every named collection of --data and the catalog (collections.json).")
    var withCollections = false

    func validate() throws {
        if withCollections && collection != nil { throw ValidationError("give --collection or --with-collections, not both") }
    }

    func run() throws {
        do {
            let data = try DataDirectory.collection(collection, in: self.data)
            let store = try ItemStore(options: .init(path: DataDirectory.storePath(data), createIfMissing: false))
            defer { store.close() }
            var catalog: CollectionCatalog?
            var named: [(name: String, store: ItemStore)] = []
            defer { for one in named { one.store.close() } }
            if withCollections {
                let read = try CollectionCatalog.read(dataDirectory: data)
                for name in read.collections.keys.sorted() {
                    let path = DataDirectory.storePath(CollectionCatalog.directory(of: name, dataDirectory: data))
                    named.append((name, try ItemStore(options: .init(path: path, createIfMissing: false))))
                }
                catalog = read
            }
            let manifest = try Snapshot.write(store: store, data: data, to: out, catalog: catalog, named: named)
            print("snapshot \(out): store \(manifest.storeID), applied_sequence \(manifest.appliedSequence), "
                + "generation \(manifest.generation ?? "none"), \(manifest.collections.count) named collections, \(manifest.files.count) files")
        } catch {
            FileHandle.standardError.write(Data("steer snapshot: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
