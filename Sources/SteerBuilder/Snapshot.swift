import Foundation
import SteerCore
import SteerData
import SteerIndex
import SteerStore

/// A snapshot of a data directory (docs/operations.md, "Backup and restore"; docs/scaling.md): what a
/// new replica starts from instead of replaying a shard's whole stream, and a single server's backup.
///
/// ## Layout of `SNAP/`
/// | path | content |
/// |---|---|
/// | `snapshot.json` | the manifest below, written last (its presence means the snapshot is complete) |
/// | `store/…` | a RocksDB checkpoint of `DIR/store` (`ItemStore.checkpoint`) |
/// | `steer.json` | the data directory's settings |
/// | `generations/<id>/…` | the generation directory `steer.json` serves, when it serves one |
/// | `collections.json` | the collection catalog (`CollectionCatalog`), when the server has named collections or aliases |
/// | `collections/<name>/store/…`, `…/steer.json`, `…/generations/<id>/…` | each named collection, as the default one above |
///
/// Manifest (`format` 1): `store_id`, `applied_sequence` (the write-log sequence the store contains,
/// read from the checkpoint itself), `store_sequence`, `generation` (the directory name or null),
/// `created_at`, `collections` (only with named collections: [{`name`, `applied_sequence`,
/// `generation`}]), and `files`: [{`path`, `bytes`, `checksum`}] for every file above (FNV-1a-64,
/// `ShardChecksum`: integrity against accidents, not an adversary who can rewrite the manifest too).
/// The engine's own saved index (`DIR/index`) is not copied: a restored directory rebuilds it from the
/// store.
///
/// Named collections are checkpointed after the default collection, while no collection change runs
/// (`CollectionSet.withChangesHeld`): a following replica applies a named collection's messages before
/// the default store records them, so each named store holds at least every message of its collection
/// through the default store's `applied_sequence` (the one a restored replica resumes after); one it
/// holds beyond that is skipped when it is delivered again (its own stored sequence). A collection change
/// applied but not yet recorded by the default store is applied again after a restore, a no-op.
///
/// ## Restoring
/// A snapshot is hostile input: `restore` reads a manifest of at most `maxManifestBytes`, accepts only
/// relative paths under `store/`, `generations/`, `steer.json`, `collections.json` or
/// `collections/<name>/` (a name the manifest's `collections` lists) with no empty, `.` or `..` component,
/// at most `maxFiles` files, each a regular file (no symbolic link) whose size and checksum match, and
/// copies only the listed files into a new data directory; then it checks that the copied store's id and
/// applied sequence are the manifest's. Any failure removes what it copied and names the file at fault.
/// The restored directory gets a fresh `replica_id` file, so that a following replica made from it
/// consumes the stream under its own name (`steer serve --follow`), not its source's.
public enum Snapshot {
    public struct Manifest: Sendable, Equatable {
        public var storeID: String
        public var appliedSequence: UInt64
        public var storeSequence: UInt64
        public var generation: String?
        public var createdAt: String
        public var files: [File]
        /// The named collections it holds (empty: the default collection only).
        public var collections: [Collection] = []
    }

    /// One named collection of a snapshot.
    public struct Collection: Sendable, Equatable {
        public var name: String
        /// The write-log sequence its store contains.
        public var appliedSequence: UInt64
        /// The generation directory it serves, if any.
        public var generation: String?
    }

    public struct File: Sendable, Equatable {
        public var path: String
        public var bytes: Int64
        public var checksum: String
    }

    public static let manifestName = "snapshot.json"
    /// Largest manifest read, in bytes.
    public static let maxManifestBytes = 16 << 20
    /// Most files a snapshot may list.
    public static let maxFiles = 100_000
    /// Longest listed path, in bytes.
    public static let maxPathBytes = 1024
    /// The file holding a data directory's replica identity (the follow consumer's name), when it has one.
    public static let replicaIDName = "replica_id"

    // MARK: Writing

    /// Writes a snapshot of the open `store` and the data directory `data` to `out` (which must not
    /// exist). The store may take writes meanwhile: the checkpoint is one consistent moment.
    ///
    /// - Returns: the manifest written.
    /// - Throws: `.invalidRequest` when `out` exists; `.io` for file errors; the store's errors.
    /// - Parameters:
    ///   - catalog: the data directory's collection catalog, when it has one; written as `collections.json`.
    ///   - named: the open store of every collection `catalog` lists (checkpointed after `store`).
    @discardableResult
    public static func write(store: ItemStore, data: String, to out: String, catalog: CollectionCatalog? = nil,
                             named: [(name: String, store: ItemStore)] = []) throws(SteerError) -> Manifest {
        let files = FileManager.default
        guard !files.fileExists(atPath: out) else { throw SteerError.invalid("snapshot destination '\(out)' already exists") }
        do {
            try files.createDirectory(atPath: out, withIntermediateDirectories: true)
        } catch {
            throw SteerError(.io, "cannot create '\(out)': \(error.localizedDescription)")
        }
        do throws(SteerError) {
            try store.checkpoint(to: out + "/store")
            // Read what the checkpoint holds, not the live store (which may have moved on).
            let copy = try ItemStore(options: ItemStore.Options(path: out + "/store", createIfMissing: false, readOnly: true))
            let storeID = copy.storeID
            let applied = copy.appliedStreamSequence
            let sequence = copy.latestSequence
            copy.close()
            guard let storeID else { throw SteerError(.corrupt, "the store has no store id") }
            var generation: String?
            if let config = try DataDirectoryConfig.read(dataDirectory: data) {
                try copyFile(DataDirectoryConfig.path(dataDirectory: data), to: DataDirectoryConfig.path(dataDirectory: out))
                if let served = servedGeneration(config, data: data) {
                    try copyTree(data + "/generations/" + served, to: out + "/generations/" + served)
                    generation = served
                }
            }
            var collections: [Collection] = []
            if let catalog, !(catalog.collections.isEmpty && catalog.aliases.isEmpty) {
                let stores = Dictionary(named.map { ($0.name, $0.store) }, uniquingKeysWith: { first, _ in first })
                for name in catalog.collections.keys.sorted() {
                    guard let namedStore = stores[name] else { throw SteerError.internalError("collection '\(name)' is in the catalog but not open") }
                    collections.append(try writeCollection(name, store: namedStore, data: data, out: out))
                }
                try catalog.write(dataDirectory: out)
            }
            var listed: [File] = []
            for path in try regularFiles(under: out) {
                let (checksum, bytes) = try ShardChecksum.compute(path: out + "/" + path)
                listed.append(File(path: path, bytes: bytes, checksum: checksum))
            }
            let manifest = Manifest(storeID: storeID, appliedSequence: applied, storeSequence: sequence, generation: generation,
                                    createdAt: ISO8601DateFormatter().string(from: Date()), files: listed, collections: collections)
            try AtomicFile.write(try encode(manifest), to: out + "/" + manifestName)
            return manifest
        } catch {
            try? files.removeItem(atPath: out)
            throw error
        }
    }

    /// Checkpoints one named collection's store into `out/collections/<name>/store` and copies its
    /// `steer.json` and served generation.
    private static func writeCollection(_ name: String, store: ItemStore, data: String, out: String) throws(SteerError) -> Collection {
        let source = CollectionCatalog.directory(of: name, dataDirectory: data)
        let target = CollectionCatalog.directory(of: name, dataDirectory: out)
        do {
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        } catch {
            throw SteerError(.io, "cannot create '\(target)': \(error.localizedDescription)")
        }
        try store.checkpoint(to: target + "/store")
        let copy = try ItemStore(options: ItemStore.Options(path: target + "/store", createIfMissing: false, readOnly: true))
        let applied = copy.appliedStreamSequence
        copy.close()
        var generation: String?
        if let config = try DataDirectoryConfig.read(dataDirectory: source) {
            try copyFile(DataDirectoryConfig.path(dataDirectory: source), to: DataDirectoryConfig.path(dataDirectory: target))
            if let served = servedGeneration(config, data: source) {
                try copyTree(source + "/generations/" + served, to: target + "/generations/" + served)
                generation = served
            }
        }
        return Collection(name: name, appliedSequence: applied, generation: generation)
    }

    /// The generation directory name `steer.json` serves (`generation_directory`), or nil.
    static func servedGeneration(_ config: DataDirectoryConfig, data: String) -> String? {
        guard let recorded = config.generationDirectory else { return nil }
        let name = (recorded as NSString).lastPathComponent
        guard isSafeComponent(name), FileManager.default.fileExists(atPath: data + "/generations/" + name) else { return nil }
        return name
    }

    static func encode(_ manifest: Manifest) throws(SteerError) -> [UInt8] {
        var object: [String: Any] = [
            "format": 1, "store_id": manifest.storeID, "applied_sequence": manifest.appliedSequence,
            "store_sequence": manifest.storeSequence, "generation": manifest.generation ?? NSNull(),
            "created_at": manifest.createdAt,
            "files": manifest.files.map { ["path": $0.path, "bytes": $0.bytes, "checksum": $0.checksum] as [String: Any] },
        ]
        if !manifest.collections.isEmpty {
            object["collections"] = manifest.collections.map {
                ["name": $0.name, "applied_sequence": $0.appliedSequence, "generation": $0.generation ?? NSNull()] as [String: Any]
            }
        }
        do {
            return Array(try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) + [0x0A]
        } catch {
            throw SteerError.internalError("cannot encode the snapshot manifest: \(error)")
        }
    }

    // MARK: Reading

    /// Reads and checks `SNAP/snapshot.json` (see "Restoring"), without reading the files it lists.
    ///
    /// - Throws: `.notFound` without a manifest; `.corrupt` naming what is wrong with it.
    public static func readManifest(_ snapshot: String) throws(SteerError) -> Manifest {
        let path = snapshot + "/" + manifestName
        guard FileManager.default.fileExists(atPath: path) else {
            throw SteerError.notFound("'\(snapshot)' is not a snapshot: it has no \(manifestName) (an unfinished snapshot has none)")
        }
        guard let object = try readJSONObject(path, limit: maxManifestBytes, what: manifestName) else {
            throw SteerError(.corrupt, "snapshot manifest \(path) is not a JSON object")
        }
        func fail(_ why: String) -> SteerError { SteerError(.corrupt, "snapshot manifest \(path): \(why)") }
        guard let format = object["format"] as? Int, format == 1 else { throw fail("format must be 1") }
        guard let storeID = object["store_id"] as? String, !storeID.isEmpty, storeID.utf8.count <= 128 else { throw fail("store_id is missing") }
        guard let applied = object["applied_sequence"] as? Int, applied >= 0,
              let sequence = object["store_sequence"] as? Int, sequence >= 0 else {
            throw fail("applied_sequence and store_sequence must be integers at least 0")
        }
        var generation: String?
        if let value = object["generation"], !(value is NSNull) {
            guard let name = value as? String, isSafeComponent(name) else { throw fail("generation must be a directory name") }
            generation = name
        }
        var collections: [Collection] = []
        if let value = object["collections"] {
            guard let entries = value as? [Any], entries.count <= CollectionCatalog.maxCollectionsLimit else {
                throw fail("collections must be an array of at most \(CollectionCatalog.maxCollectionsLimit) entries")
            }
            var names = Set<String>()
            for (index, entry) in entries.enumerated() {
                guard let entry = entry as? [String: Any], let name = entry["name"] as? String, (try? CollectionCatalog.validateName(name, field: "name")) != nil,
                      name != CollectionCatalog.defaultName, isSafeComponent(name), names.insert(name).inserted,
                      let applied = entry["applied_sequence"] as? Int, applied >= 0 else {
                    throw fail("collections[\(index)] needs a distinct collection name and applied_sequence ≥ 0")
                }
                var generation: String?
                if let value = entry["generation"], !(value is NSNull) {
                    guard let name = value as? String, isSafeComponent(name) else { throw fail("collections[\(index)].generation must be a directory name") }
                    generation = name
                }
                collections.append(Collection(name: name, appliedSequence: UInt64(applied), generation: generation))
            }
        }
        let collectionNames = Set(collections.map(\.name))
        guard let list = object["files"] as? [Any] else { throw fail("files must be an array") }
        guard list.count <= maxFiles else { throw fail("lists \(list.count) files, at most \(maxFiles) are accepted") }
        var files: [File] = []
        var seen = Set<String>()
        for (index, entry) in list.enumerated() {
            guard let entry = entry as? [String: Any], let path = entry["path"] as? String,
                  let bytes = entry["bytes"] as? Int, bytes >= 0,
                  let checksum = entry["checksum"] as? String, ShardChecksum.parse(checksum) != nil else {
                throw fail("files[\(index)] needs a path, bytes ≥ 0 and an fnv1a64 checksum")
            }
            guard isSafeRelativePath(path, collections: collectionNames) else {
                throw fail("files[\(index)].path '\(path)' is not a path inside the snapshot (store/…, generations/…, steer.json, collections.json, collections/<a listed collection>/…)")
            }
            guard seen.insert(path).inserted else { throw fail("files[\(index)].path '\(path)' is listed twice") }
            files.append(File(path: path, bytes: Int64(bytes), checksum: checksum))
        }
        guard files.contains(where: { $0.path == "store/CURRENT" }) else { throw fail("lists no store (store/CURRENT)") }
        for collection in collections {
            let current = "\(CollectionCatalog.directoryName)/\(collection.name)/store/CURRENT"
            guard files.contains(where: { $0.path == current }) else { throw fail("collection '\(collection.name)' lists no store (\(current))") }
        }
        if !collections.isEmpty, !files.contains(where: { $0.path == CollectionCatalog.fileName }) {
            throw fail("lists collections but no \(CollectionCatalog.fileName)")
        }
        return Manifest(storeID: storeID, appliedSequence: UInt64(applied), storeSequence: UInt64(sequence), generation: generation,
                        createdAt: object["created_at"] as? String ?? "", files: files, collections: collections)
    }

    /// Checks every listed file of `snapshot` (regular file, size, checksum).
    ///
    /// - Throws: `.corrupt` naming the first file that is missing, not a regular file, or differs.
    public static func verify(_ snapshot: String, _ manifest: Manifest) throws(SteerError) {
        for file in manifest.files {
            let path = snapshot + "/" + file.path
            try requireRegularFile(path, within: snapshot)
            let (checksum, bytes) = try ShardChecksum.compute(path: path)
            guard bytes == file.bytes else { throw SteerError(.corrupt, "snapshot file \(file.path) has \(bytes) bytes, the manifest says \(file.bytes)") }
            guard checksum == file.checksum else { throw SteerError(.corrupt, "snapshot file \(file.path) has checksum \(checksum), the manifest says \(file.checksum)") }
        }
    }

    /// Restores `snapshot` into the data directory `data`, which must not exist or be empty (see
    /// "Restoring"). Files are checked as they are copied (the copy is what gets checksummed).
    ///
    /// - Returns: the manifest.
    /// - Throws: `.invalidRequest` when `data` holds anything; `.notFound`/`.corrupt` for a bad snapshot
    ///   (nothing is left in `data`); `.io` for file errors.
    @discardableResult
    public static func restore(_ snapshot: String, into data: String) throws(SteerError) -> Manifest {
        let files = FileManager.default
        let manifest = try readManifest(snapshot)
        if let existing = try? files.contentsOfDirectory(atPath: data), !existing.isEmpty {
            throw SteerError.invalid("cannot restore into '\(data)': it is not empty (restore into a new data directory)")
        }
        let createdDirectory = !files.fileExists(atPath: data)
        do throws(SteerError) {
            do {
                try files.createDirectory(atPath: data, withIntermediateDirectories: true)
            } catch {
                throw SteerError(.io, "cannot create '\(data)': \(error.localizedDescription)")
            }
            for file in manifest.files {
                let source = snapshot + "/" + file.path
                try requireRegularFile(source, within: snapshot)
                let target = data + "/" + file.path
                do {
                    try files.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                } catch {
                    throw SteerError(.io, "cannot create the directory of '\(target)': \(error.localizedDescription)")
                }
                try copyFile(source, to: target)
                let (checksum, bytes) = try ShardChecksum.compute(path: target)
                guard bytes == file.bytes, checksum == file.checksum else {
                    throw SteerError(.corrupt, "snapshot file \(file.path) does not match the manifest (\(bytes) bytes, \(checksum); expected \(file.bytes) bytes, \(file.checksum))")
                }
            }
            try rewriteSettings(data: data, generation: manifest.generation)
            let store = try ItemStore(options: ItemStore.Options(path: data + "/store", createIfMissing: false, readOnly: true))
            let storeID = store.storeID
            let applied = store.appliedStreamSequence
            store.close()
            guard storeID == manifest.storeID, applied == manifest.appliedSequence else {
                throw SteerError(.corrupt, "the snapshot's store is \(storeID ?? "unidentified") at applied sequence \(applied); the manifest says \(manifest.storeID) at \(manifest.appliedSequence)")
            }
            try restoreCollections(manifest, data: data)
            try AtomicFile.write(Array((UUID().uuidString.lowercased() + "\n").utf8), to: data + "/" + replicaIDName)
            AtomicFile.syncDirectory(data)
            return manifest
        } catch {
            if createdDirectory {
                try? files.removeItem(atPath: data)
            } else {
                for name in (try? files.contentsOfDirectory(atPath: data)) ?? [] { try? files.removeItem(atPath: data + "/" + name) }
            }
            throw error
        }
    }

    /// Checks the restored named collections: the copied catalog (hostile: `CollectionCatalog.read`
    /// validates it) lists exactly the manifest's collections, each store opens with the manifest's
    /// applied sequence, and each `steer.json` points at its copied generation.
    ///
    /// - Throws: `.corrupt` for a mismatch; the catalog's and store's errors.
    private static func restoreCollections(_ manifest: Manifest, data: String) throws(SteerError) {
        let catalog = try CollectionCatalog.read(dataDirectory: data)
        let listed = Set(manifest.collections.map(\.name))
        guard Set(catalog.collections.keys) == listed else {
            throw SteerError(.corrupt, "the snapshot's \(CollectionCatalog.fileName) lists collections \(catalog.collections.keys.sorted()), the manifest \(listed.sorted())")
        }
        for collection in manifest.collections {
            let directory = CollectionCatalog.directory(of: collection.name, dataDirectory: data)
            try rewriteSettings(data: directory, generation: collection.generation)
            let store = try ItemStore(options: ItemStore.Options(path: directory + "/store", createIfMissing: false, readOnly: true))
            let applied = store.appliedStreamSequence
            store.close()
            guard applied == collection.appliedSequence else {
                throw SteerError(.corrupt, "the snapshot's collection '\(collection.name)' is at applied sequence \(applied); the manifest says \(collection.appliedSequence)")
            }
        }
    }

    /// Points a restored `steer.json`'s `generation_directory` at the copied generation (by name, inside
    /// the new data directory), or drops it when the snapshot has none.
    static func rewriteSettings(data: String, generation: String?) throws(SteerError) {
        // The copied file is untrusted: `DataDirectoryConfig.read` refuses a damaged one (`.corrupt`).
        guard var config = try DataDirectoryConfig.read(dataDirectory: data) else { return }
        guard config.generationDirectory != nil || generation != nil else { return }
        // A relative reference is resolved inside DIR/generations (`PathRoot`), wherever DIR now is.
        config.generationDirectory = generation
        try config.write(dataDirectory: data)
    }

    /// The replica identity of a data directory: its `replica_id` file (written by `restore`), else nil.
    ///
    /// - Throws: `.corrupt` for a file that is not one short line of letters, digits and '-'.
    public static func replicaID(data: String) throws(SteerError) -> String? {
        let path = data + "/" + replicaIDName
        guard let contents = FileManager.default.contents(atPath: path) else { return nil }
        let text = String(decoding: contents.prefix(256), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...64).contains(text.utf8.count), text.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D }) else {
            throw SteerError(.corrupt, "\(path) must hold one id of lower-case letters, digits and '-'")
        }
        return text
    }

    // MARK: Paths and files

    static func isSafeComponent(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && !name.contains("/") && name.utf8.count <= 255
            && name.utf8.allSatisfy { $0 >= 0x20 && $0 != 0x7F && $0 != UInt8(ascii: "\\") }
    }

    static func isSafeRelativePath(_ path: String, collections: Set<String> = []) -> Bool {
        guard (1...maxPathBytes).contains(path.utf8.count), !path.hasPrefix("/") else { return false }
        let components = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard components.allSatisfy(isSafeComponent) else { return false }
        if components == [CollectionCatalog.fileName] { return true }
        if components.count >= 3, components[0] == CollectionCatalog.directoryName {
            guard collections.contains(components[1]) else { return false }
            return isDataDirectoryPath(Array(components.dropFirst(2)))
        }
        return isDataDirectoryPath(components)
    }

    /// A data directory's file a snapshot may hold: `steer.json`, `store/…`, `generations/<id>/…`.
    private static func isDataDirectoryPath(_ components: [String]) -> Bool {
        if components == ["steer.json"] { return true }
        return components.count >= 2 && (components[0] == "store" || (components[0] == "generations" && components.count >= 3))
    }

    /// `path` is a regular file (not a link) and no directory on the way from `root` is a link.
    static func requireRegularFile(_ path: String, within root: String) throws(SteerError) {
        var current = root
        let relative = String(path.dropFirst(root.count + 1))
        let parts = relative.split(separator: "/").map(String.init)
        for (index, part) in parts.enumerated() {
            current += "/" + part
            var info = stat()
            guard lstat(current, &info) == 0 else { throw SteerError(.corrupt, "snapshot file \(relative) is missing") }
            let kind = info.st_mode & S_IFMT
            if index == parts.count - 1 {
                guard kind == S_IFREG else { throw SteerError(.corrupt, "snapshot file \(relative) is not a regular file") }
            } else {
                guard kind == S_IFDIR else { throw SteerError(.corrupt, "snapshot path \(relative): '\(part)' is not a directory") }
            }
        }
    }

    /// Relative paths of the regular files under `root`, sorted; links are refused.
    static func regularFiles(under root: String) throws(SteerError) -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: root) else { throw SteerError(.io, "cannot list '\(root)'") }
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            var info = stat()
            guard lstat(root + "/" + relative, &info) == 0 else { throw SteerError(.io, "cannot read '\(root)/\(relative)'") }
            switch info.st_mode & S_IFMT {
            case S_IFREG: found.append(relative)
            case S_IFDIR: continue
            default: throw SteerError(.io, "'\(root)/\(relative)' is neither a file nor a directory")
            }
        }
        return found.sorted()
    }

    static func copyFile(_ source: String, to target: String) throws(SteerError) {
        do {
            try FileManager.default.copyItem(atPath: source, toPath: target)
        } catch {
            throw SteerError(.io, "cannot copy '\(source)' to '\(target)': \(error.localizedDescription)")
        }
    }

    static func copyTree(_ source: String, to target: String) throws(SteerError) {
        do {
            try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        } catch {
            throw SteerError(.io, "cannot create the directory of '\(target)': \(error.localizedDescription)")
        }
        for relative in try regularFiles(under: source) {
            let destination = target + "/" + relative
            do {
                try FileManager.default.createDirectory(atPath: (destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            } catch {
                throw SteerError(.io, "cannot create the directory of '\(destination)': \(error.localizedDescription)")
            }
            try copyFile(source + "/" + relative, to: destination)
        }
    }

    /// A JSON object read from `path` with at most `limit` bytes; nil when the file holds another JSON value.
    ///
    /// - Throws: `.corrupt` for a larger file or one that is not JSON; `.io` when it cannot be read.
    static func readJSONObject(_ path: String, limit: Int, what: String) throws(SteerError) -> [String: Any]? {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw SteerError(.io, "cannot read \(path)") }
        guard info.st_mode & S_IFMT == S_IFREG else { throw SteerError(.corrupt, "\(what) is not a regular file") }
        guard info.st_size <= limit else { throw SteerError(.corrupt, "\(what) has \(info.st_size) bytes, at most \(limit) are read") }
        guard let data = FileManager.default.contents(atPath: path) else { throw SteerError(.io, "cannot read \(path)") }
        guard data.count <= limit else { throw SteerError(.corrupt, "\(what) has more than \(limit) bytes") }
        do {
            return try JSONSerialization.jsonObject(with: data) as? [String: Any]
        } catch {
            throw SteerError(.corrupt, "\(what) is not JSON: \(error.localizedDescription)")
        }
    }
}
