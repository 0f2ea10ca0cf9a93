import Foundation
import SteerCore
import SteerData
import SteerIndex
import SteerStore
import Testing

@testable import SteerBuilder

/// `Snapshot` (docs/operations.md, "Backup and restore"): a consistent, checksummed copy of a data
/// directory, restored into a new one; a damaged or hostile snapshot is refused with a specific error and
/// leaves nothing behind.
@Suite struct SnapshotTests {
    private typealias Write = ItemStore.ItemWrite

    /// A data directory whose store holds ids 0..<count written as stream sequences 1...count, and a
    /// `steer.json` naming a generation directory that holds one file.
    private func makeData(_ root: TemporaryDirectory, count: Int = 20) throws -> (data: String, store: ItemStore) {
        let data = root.file("data")
        try FileManager.default.createDirectory(atPath: data + "/generations/g7", withIntermediateDirectories: true)
        try Data("index bytes".utf8).write(to: URL(fileURLWithPath: data + "/generations/g7/shard-0.index"))
        try DataDirectoryConfig(dimension: 4, indexSpec: "Flat", metric: .innerProduct, embeddingVersion: "v1", generation: "g7",
                                generationDirectory: "/somewhere/else/generations/g7").write(dataDirectory: data)
        let store = try ItemStore(options: .init(path: data + "/store", syncWrites: false))
        try store.createVersion("v1", dimension: 4)
        for id in 0..<count {
            _ = try store.upsert([Write(id: .int(Int64(id)), title: "t\(id)", tags: ["x"], vectors: ["v1": [Float(id), 1, 2, 3]])],
                                 streamSequence: UInt64(id + 1))
        }
        return (data, store)
    }

    private func contents(_ path: String) throws -> [String] {
        let store = try ItemStore(options: .init(path: path, createIfMissing: false, readOnly: true))
        defer { store.close() }
        return try store.get((0..<40).map { ItemID.int(Int64($0)) }).compactMap { $0.map { "\($0.id)=\($0.title ?? "")" } }
    }

    @Test func aSnapshotRestoresTheStoreItsSequenceAndTheGeneration() throws {
        let root = TemporaryDirectory("snapshot")
        defer { root.remove() }
        let (data, store) = try makeData(root)
        let snapshot = root.file("snap")
        let manifest = try Snapshot.write(store: store, data: data, to: snapshot)
        // Writes after the snapshot are not in it.
        _ = try store.upsert([Write(id: .int(30), title: "late", tags: [], vectors: ["v1": [1, 1, 1, 1]])], streamSequence: 21)
        store.close()
        #expect(manifest.appliedSequence == 20)
        #expect(manifest.generation == "g7")
        #expect(manifest.files.contains { $0.path == "generations/g7/shard-0.index" })
        #expect(manifest.files.contains { $0.path == "steer.json" })
        #expect(try Snapshot.readManifest(snapshot) == manifest)
        try Snapshot.verify(snapshot, manifest)

        let restored = root.file("restored")
        try Snapshot.restore(snapshot, into: restored)
        let items = try contents(restored + "/store")
        #expect(items.count == 20 && !items.contains { $0.hasSuffix("=late") })
        let copy = try ItemStore(options: .init(path: restored + "/store", createIfMissing: false, readOnly: true))
        #expect(copy.appliedStreamSequence == 20)
        copy.close()
        // The served generation is named inside the new directory; the replica gets its own identity.
        let settings = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: restored + "/steer.json"))) as? [String: Any]
        #expect(settings?["generation_directory"] as? String == "g7")
        #expect(FileManager.default.fileExists(atPath: restored + "/generations/g7/shard-0.index"))
        let replica = try Snapshot.replicaID(data: restored)
        #expect(replica != nil && replica != manifest.storeID)
        #expect(try Snapshot.replicaID(data: data) == nil)
    }

    /// Named collections: their stores, settings and catalog round-trip; a path under an unlisted
    /// collection, a catalog that disagrees with the manifest and a lying collection sequence are refused.
    @Test func namedCollectionsRoundTrip_andHostileCollectionEntriesAreRefused() throws {
        let root = TemporaryDirectory("snapshot-collections")
        defer { root.remove() }
        let (data, store) = try makeData(root)
        let booksDirectory = CollectionCatalog.directory(of: "books", dataDirectory: data)
        try FileManager.default.createDirectory(atPath: booksDirectory, withIntermediateDirectories: true)
        try DataDirectoryConfig(dimension: 4, indexSpec: "Flat", metric: .innerProduct, embeddingVersion: "v1", generation: "g1")
            .write(dataDirectory: booksDirectory)
        let books = try ItemStore(options: .init(path: booksDirectory + "/store", syncWrites: false))
        try books.createVersion("v1", dimension: 4)
        _ = try books.upsert([Write(id: .string("b1"), title: "book", vectors: ["v1": [1, 0, 0, 0]])], streamSequence: 17)
        var catalog = CollectionCatalog()
        catalog.collections["books"] = CollectionCatalog.Entry(name: "books", dimension: 4, metric: .innerProduct, indexSpec: "Flat",
                                                                embeddingVersion: "v1", createdAt: "2026-12-07T00:00:00Z")
        catalog.aliases["shelf"] = "books"
        let snapshot = root.file("snap")
        let manifest = try Snapshot.write(store: store, data: data, to: snapshot, catalog: catalog, named: [("books", books)])
        store.close()
        books.close()
        #expect(manifest.collections == [Snapshot.Collection(name: "books", appliedSequence: 17, generation: nil)])
        #expect(try Snapshot.readManifest(snapshot) == manifest)
        let restored = root.file("restored")
        try Snapshot.restore(snapshot, into: restored)
        #expect(try CollectionCatalog.read(dataDirectory: restored) == catalog)
        let copy = try ItemStore(options: .init(path: CollectionCatalog.directory(of: "books", dataDirectory: restored) + "/store",
                                                createIfMissing: false, readOnly: true))
        #expect(try copy.get([.string("b1")]).first??.title == "book")
        #expect(copy.appliedStreamSequence == 17)
        copy.close()
        #expect(try contents(restored + "/store").count == 20)

        func refusal(_ mutate: (String) throws -> Void) throws -> SteerError? {
            let copy = root.file("copy-" + UUID().uuidString)
            try FileManager.default.copyItem(atPath: snapshot, toPath: copy)
            try mutate(copy)
            let target = root.file("target-" + UUID().uuidString)
            defer { #expect(!FileManager.default.fileExists(atPath: target), "a refused restore leaves nothing") }
            do {
                try Snapshot.restore(copy, into: target)
                return nil
            } catch {
                return error
            }
        }
        func rewriteManifest(_ copy: String, _ change: (inout [String: Any]) -> Void) throws {
            let path = copy + "/snapshot.json"
            var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
            change(&object)
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        }
        // A file under a collection the manifest does not list.
        let unlisted = try refusal { copy in
            try rewriteManifest(copy) { object in
                var files = object["files"] as! [[String: Any]]
                let index = files.firstIndex { ($0["path"] as! String).hasPrefix("collections/books/") }!
                files[index]["path"] = (files[index]["path"] as! String).replacingOccurrences(of: "collections/books/", with: "collections/other/")
                object["files"] = files
            }
        }
        #expect(unlisted?.code == .corrupt && unlisted?.message.contains("not a path inside the snapshot") == true, "\(String(describing: unlisted))")
        // Hostile collection names.
        for name in ["..", "a/b", "default", ""] {
            let hostile = try refusal { copy in
                try rewriteManifest(copy) { object in
                    object["collections"] = [["name": name, "applied_sequence": 17, "generation": NSNull()]]
                }
            }
            #expect(hostile?.code == .corrupt, "name '\(name)': \(String(describing: hostile))")
        }
        // The catalog lists another collection than the manifest.
        let disagreeing = try refusal { copy in
            var other = catalog
            other.collections["films"] = CollectionCatalog.Entry(name: "films", dimension: 4, metric: .innerProduct, indexSpec: "Flat",
                                                                 embeddingVersion: "v1", createdAt: "2026-12-07T00:00:00Z")
            try other.write(dataDirectory: copy)
            try rewriteManifest(copy) { object in
                var files = object["files"] as! [[String: Any]]
                let index = files.firstIndex { ($0["path"] as! String) == "collections.json" }!
                let (checksum, bytes) = try! ShardChecksum.compute(path: copy + "/collections.json")
                files[index]["checksum"] = checksum
                files[index]["bytes"] = Int(bytes)
                object["files"] = files
            }
        }
        #expect(disagreeing?.code == .corrupt && disagreeing?.message.contains("films") == true, "\(String(describing: disagreeing))")
        // A collection whose sequence is not its store's.
        let lying = try refusal { copy in
            try rewriteManifest(copy) { object in
                object["collections"] = [["name": "books", "applied_sequence": 3, "generation": NSNull()]]
            }
        }
        #expect(lying?.code == .corrupt && lying?.message.contains("applied sequence 17") == true, "\(String(describing: lying))")
        // Collections listed without the catalog file.
        let noCatalog = try refusal { copy in
            try rewriteManifest(copy) { object in
                object["files"] = (object["files"] as! [[String: Any]]).filter { ($0["path"] as! String) != "collections.json" }
            }
        }
        #expect(noCatalog?.code == .corrupt && noCatalog?.message.contains("collections.json") == true)
    }

    @Test func aDamagedOrHostileSnapshotIsRefused_andLeavesNothing() throws {
        let root = TemporaryDirectory("snapshot-hostile")
        defer { root.remove() }
        let (data, store) = try makeData(root)
        let snapshot = root.file("snap")
        let manifest = try Snapshot.write(store: store, data: data, to: snapshot)
        store.close()

        func refusal(_ mutate: (String) throws -> Void) throws -> SteerError? {
            let copy = root.file("copy-" + UUID().uuidString)
            try FileManager.default.copyItem(atPath: snapshot, toPath: copy)
            try mutate(copy)
            let target = root.file("target-" + UUID().uuidString)
            defer { #expect(!FileManager.default.fileExists(atPath: target), "a refused restore leaves nothing") }
            do {
                try Snapshot.restore(copy, into: target)
                return nil
            } catch {
                return error
            }
        }
        func rewriteManifest(_ copy: String, _ change: (inout [String: Any]) -> Void) throws {
            let path = copy + "/snapshot.json"
            var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
            change(&object)
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        }

        // A flipped byte in a store file.
        let victim = manifest.files.first { $0.path.hasPrefix("store/") && $0.bytes > 0 && $0.path.hasSuffix(".sst") }
            ?? manifest.files.first { $0.path.hasPrefix("store/") && $0.bytes > 0 }!
        let flipped = try refusal { copy in
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: copy + "/" + victim.path))
            let first = try handle.read(upToCount: 1)!
            try handle.seek(toOffset: 0)
            handle.write(Data([first[0] ^ 0xFF]))
            try handle.close()
        }
        #expect(flipped?.code == .corrupt && flipped?.message.contains(victim.path) == true, "\(String(describing: flipped))")
        // A path that leaves the snapshot.
        let escaping = try refusal { copy in
            try rewriteManifest(copy) { object in
                var files = object["files"] as! [[String: Any]]
                files[0]["path"] = "store/../../../etc/passwd"
                object["files"] = files
            }
        }
        #expect(escaping?.code == .corrupt && escaping?.message.contains("not a path inside the snapshot") == true)
        let absolute = try refusal { copy in
            try rewriteManifest(copy) { object in
                var files = object["files"] as! [[String: Any]]
                files[0]["path"] = "/etc/passwd"
                object["files"] = files
            }
        }
        #expect(absolute?.code == .corrupt)
        // A symbolic link in place of a listed file.
        let linked = try refusal { copy in
            try FileManager.default.removeItem(atPath: copy + "/steer.json")
            try FileManager.default.createSymbolicLink(atPath: copy + "/steer.json", withDestinationPath: "/etc/hostname")
        }
        #expect(linked?.code == .corrupt && linked?.message.contains("not a regular file") == true)
        // A missing file, and no manifest at all.
        let missing = try refusal { copy in try FileManager.default.removeItem(atPath: copy + "/" + victim.path) }
        #expect(missing?.code == .corrupt && missing?.message.contains("missing") == true)
        let unfinished = try refusal { copy in try FileManager.default.removeItem(atPath: copy + "/snapshot.json") }
        #expect(unfinished?.code == .notFound)
        // A manifest whose sequence is not the store's.
        let lying = try refusal { copy in try rewriteManifest(copy) { $0["applied_sequence"] = 999 } }
        #expect(lying?.code == .corrupt && lying?.message.contains("applied sequence 20") == true)
        // An oversized manifest is not read.
        let huge = try refusal { copy in
            try Data(repeating: 0x20, count: Snapshot.maxManifestBytes + 1).write(to: URL(fileURLWithPath: copy + "/snapshot.json"))
        }
        #expect(huge?.code == .corrupt && huge?.message.contains("at most") == true)
        // Restoring over a directory that holds something is refused before anything is copied.
        let occupied = root.file("occupied")
        try FileManager.default.createDirectory(atPath: occupied, withIntermediateDirectories: true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: occupied + "/keep"))
        #expect(throws: SteerError.self) { try Snapshot.restore(snapshot, into: occupied) }
        #expect(FileManager.default.fileExists(atPath: occupied + "/keep"))
        // The untouched snapshot still restores.
        try Snapshot.restore(snapshot, into: root.file("fine"))
    }
}
