import Foundation
import SteerCore
import SteerData
import SteerEngine

/// The collections one server serves: the default collection (the data directory's own catalog, the
/// engine `steer serve` opened) and the named ones of `DIR/collections.json` (`CollectionCatalog`),
/// each a `RetrievalEngine` over `DIR/collections/<name>/`, plus the aliases that point at them.
///
/// Threading: `lease` is cheap and runs on worker threads for every request; the admin ops (create,
/// drop, alias, delete_alias) are serialised by `adminLock` and write the catalog (fsynced) before the
/// in-memory table changes. The table (`state`) is replaced under one lock, so a request resolves a
/// name against either the old or the new table, never a mix, and the lease it takes keeps its engine
/// open until the request ends: a moved alias lets in-flight requests finish on the collection they
/// started with, and `drop` waits for the dropped collection's leases before it closes the engine.
public final class CollectionSet: Sendable {
    /// Makes the engine of a named collection in `directory` (created when new).
    public typealias EngineFactory = @Sendable (_ entry: CollectionCatalog.Entry, _ directory: String) throws(SteerError) -> RetrievalEngine

    /// Default of `--max-collections`: named collections per server (the default collection not counted).
    public static let defaultMaxCollections = 64

    /// One open collection and its in-flight leases.
    ///
    /// `@unchecked Sendable`: `users` and `dropped` are only read and written while `condition` is locked.
    final class Served: @unchecked Sendable {
        let name: String
        let engine: RetrievalEngine
        private let condition = NSCondition()
        private var users = 0

        init(name: String, engine: RetrievalEngine) {
            self.name = name
            self.engine = engine
        }

        func acquire() {
            condition.lock()
            users += 1
            condition.unlock()
        }

        func release() {
            condition.lock()
            users -= 1
            if users == 0 { condition.broadcast() }
            condition.unlock()
        }

        /// Blocks until no lease is held (new leases cannot start: the caller removed it from the table).
        func waitUntilUnused() {
            condition.lock()
            while users > 0 { condition.wait() }
            condition.unlock()
        }
    }

    struct State: Sendable {
        var served: [String: Served]
        var aliases: [String: String]
    }

    /// The data directory (the default collection's directory and the catalog's home); nil for a set
    /// made from an engine alone (`init(defaultOnly:)`), which refuses the admin ops.
    public let dataDirectory: String?
    /// Most named collections.
    public let maxCollections: Int
    private let state: Locked<State>
    private let catalog: Locked<CollectionCatalog>
    private let adminLock = NSLock()
    private let makeEngine: EngineFactory?
    /// Entered by each drop until its background deletion ended (`waitForDrops`).
    private let dropsFinished = DispatchGroup()
    /// Where `create_collection`'s `checkpoint` must lie (the default engine's `checkpointRoot`).
    private let checkpointRoot: String?

    /// A set of the default collection only (no catalog): what a `RequestHandler` over a bare engine
    /// serves. Every admin op answers `invalid_request`.
    public init(defaultOnly engine: RetrievalEngine) {
        dataDirectory = nil
        maxCollections = 0
        makeEngine = nil
        checkpointRoot = nil
        catalog = Locked(CollectionCatalog())
        state = Locked(State(served: [CollectionName.defaultName: Served(name: CollectionName.defaultName, engine: engine)], aliases: [:]))
    }

    /// Opens the catalog of `defaultEngine`'s data directory and every named collection in it.
    ///
    /// - Parameters:
    ///   - defaultEngine: the engine over the data directory itself.
    ///   - maxCollections: most named collections (1 to `CollectionCatalog.maxCollectionsLimit`).
    ///   - makeEngine: opens a named collection; nil: `defaultEngine`'s configuration with the entry's
    ///     directory, dimension, metric, index spec and embedding version, and the mean-history encoder
    ///     (a DPR checkpoint comes with `swap`'s `checkpoint`).
    /// - Throws: `.corrupt` for a bad catalog; what opening a collection's engine throws (the server
    ///   does not start without one of its collections: nothing acknowledged is dropped silently).
    public init(defaultEngine: RetrievalEngine, maxCollections: Int = CollectionSet.defaultMaxCollections,
                makeEngine: EngineFactory? = nil) throws(SteerError) {
        guard (1...CollectionCatalog.maxCollectionsLimit).contains(maxCollections) else {
            throw SteerError.invalid("max collections must be 1 to \(CollectionCatalog.maxCollectionsLimit), got \(maxCollections)")
        }
        let directory = defaultEngine.configuration.dataDirectory
        dataDirectory = directory
        checkpointRoot = defaultEngine.configuration.checkpointRoot
        self.maxCollections = maxCollections
        let factory = makeEngine ?? Self.factory(base: defaultEngine.configuration)
        self.makeEngine = factory
        let loaded = try CollectionCatalog.read(dataDirectory: directory)
        Self.finishInterruptedDrops(dataDirectory: directory, catalog: loaded)
        var served = [CollectionName.defaultName: Served(name: CollectionName.defaultName, engine: defaultEngine)]
        do throws(SteerError) {
            for entry in loaded.collections.values.sorted(by: { $0.name < $1.name }) {
                let engine = try factory(entry, CollectionCatalog.directory(of: entry.name, dataDirectory: directory))
                served[entry.name] = Served(name: entry.name, engine: engine)
            }
        } catch {
            for (name, opened) in served where name != CollectionName.defaultName { try? opened.engine.close() }
            throw error
        }
        catalog = Locked(loaded)
        state = Locked(State(served: served, aliases: loaded.aliases))
    }

    /// The default factory: `base` (the default engine's configuration) with the entry's directory,
    /// dimension, metric, index spec and embedding version, and the mean-history encoder.
    /// It refuses entries with a checkpoint (`steer serve` passes a factory that ingests and loads them).
    public static func factory(base: RetrievalEngine.Configuration) -> EngineFactory {
        let make: EngineFactory = { entry, path throws(SteerError) in
            guard entry.checkpoint == nil else {
                throw SteerError.invalid("collection '\(entry.name)' is made from a checkpoint; this server cannot load checkpoints")
            }
            return try RetrievalEngine(configuration: configuration(base: base, entry: entry, directory: path))
        }
        return make
    }

    /// `base` with the entry's directory, dimension (when set), metric, index spec and embedding version,
    /// and no encoder factory (the mean-history encoder).
    public static func configuration(base: RetrievalEngine.Configuration, entry: CollectionCatalog.Entry,
                                     directory: String) -> RetrievalEngine.Configuration {
        var configuration = base
        configuration.dataDirectory = directory
        configuration.dimension = entry.dimension > 0 ? entry.dimension : nil
        configuration.metric = entry.metric
        configuration.indexSpec = entry.indexSpec
        configuration.embeddingVersion = entry.embeddingVersion
        configuration.encoderFactory = nil
        return configuration
    }

    // MARK: Requests

    /// A held collection: its engine stays open until `release` (see the type).
    public final class Lease: Sendable {
        /// The collection's own name (an alias resolved).
        public let name: String
        public let engine: RetrievalEngine
        private let served: Served
        private let released = Locked(false)

        init(served: Served) {
            self.served = served
            name = served.name
            engine = served.engine
        }

        /// Ends the lease (idempotent; also run when the lease is freed).
        public func release() {
            let first = released.withLock { value -> Bool in
                defer { value = true }
                return !value
            }
            if first { served.release() }
        }

        deinit { release() }
    }

    /// Resolves `name` (a collection, an alias, or nil for the default) and holds the collection.
    ///
    /// - Throws: `.notFound` when it names neither a collection nor an alias.
    public func lease(_ name: String?) throws(SteerError) -> Lease {
        let wanted = name ?? CollectionName.defaultName
        let served = state.withLock { table -> Served? in
            guard let served = table.served[table.aliases[wanted] ?? wanted] else { return nil }
            served.acquire()
            return served
        }
        guard let served else {
            throw SteerError.notFound("collection '\(wanted)' does not exist (neither a collection nor an alias; list_collections lists them)")
        }
        return Lease(served: served)
    }

    /// The served collection `name` resolves to (a collection, an alias, or nil for the default), without
    /// holding it; nil when it names neither. Its answers are at most `maxCollections` + 1 names, so they
    /// may label metrics.
    public func servedName(_ name: String?) -> String? {
        let wanted = name ?? CollectionName.defaultName
        return state.withLock { table in table.served[table.aliases[wanted] ?? wanted]?.name }
    }

    /// The engines of the named collections (not the default), for shutdown and metrics.
    public var namedEngines: [(name: String, engine: RetrievalEngine)] {
        state.withLock { table in
            table.served.values.filter { $0.name != CollectionName.defaultName }.map { ($0.name, $0.engine) }.sorted { $0.name < $1.name }
        }
    }

    /// Runs `body` with no collection change (create, drop, alias, delete_alias) running or starting until
    /// it returns, given the catalog and the named collections' engines as they are (a snapshot of every
    /// collection, `steer serve --snapshot-dir`: the catalog it copies matches the stores it checkpoints).
    ///
    /// - Throws: what `body` throws.
    public func withChangesHeld<T>(_ body: (_ catalog: CollectionCatalog, _ named: [(name: String, engine: RetrievalEngine)]) throws(SteerError) -> T)
        throws(SteerError) -> T {
        adminLock.lock()
        defer { adminLock.unlock() }
        return try body(catalog.get(), namedEngines)
    }

    /// Saves and closes every named collection's engine (the server closes the default one itself).
    public func closeNamed() throws(SteerError) {
        waitForDrops()
        var failure: SteerError?
        for (_, engine) in namedEngines {
            do { try engine.close() } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
    }

    // MARK: Admin ops

    /// What `list_collections` and `describe_collection` report of one collection.
    public struct Description: Sendable {
        public var name: String
        public var aliases: [String]
        public var stats: EngineStats
        public var createdAt: String?
        /// The checkpoint it was made from (`create_collection`'s `checkpoint`, resolved).
        public var checkpoint: String?
    }

    /// Every collection, the default first, then by name.
    public func list() -> [Description] {
        let (served, aliases) = state.withLock { ($0.served, $0.aliases) }
        let entries = catalog.get().collections
        return served.values.sorted { ($0.name == CollectionName.defaultName ? "" : $0.name) < ($1.name == CollectionName.defaultName ? "" : $1.name) }
            .map { one in
                Description(name: one.name, aliases: aliases.filter { $0.value == one.name }.map(\.key).sorted(), stats: one.engine.stats(),
                            createdAt: entries[one.name]?.createdAt, checkpoint: entries[one.name]?.checkpoint)
            }
    }

    /// The current aliases.
    public var aliases: [String: String] { state.withLock { $0.aliases } }

    /// One collection (or the collection an alias names).
    ///
    /// - Throws: `.notFound`.
    public func describe(_ name: String) throws(SteerError) -> Description {
        let lease = try lease(name)
        defer { lease.release() }
        let aliases = state.withLock { $0.aliases }.filter { $0.value == lease.name }.map(\.key).sorted()
        let entry = catalog.get().collections[lease.name]
        return Description(name: lease.name, aliases: aliases, stats: lease.engine.stats(), createdAt: entry?.createdAt, checkpoint: entry?.checkpoint)
    }

    /// Creates a named collection: its directory and engine first, then the catalog entry (fsynced),
    /// then the table. An existing directory of that name that the catalog does not list is never
    /// deleted (it may hold data of a replaced catalog): the create is refused and names it.
    ///
    /// - Throws: `.invalidRequest` (no catalog, reserved name, bad spec or dimension), `.alreadyExists`,
    ///   `.tooLarge` (over `maxCollections`), what opening the engine and writing the catalog throw.
    @discardableResult
    public func create(_ settings: CollectionSettings) throws(SteerError) -> Description {
        let (directory, makeEngine) = try requireCatalog()
        try CollectionName.validate(settings.name, field: "name")
        adminLock.lock()
        defer { adminLock.unlock() }
        var next = catalog.get()
        guard settings.name != CollectionName.defaultName else { throw SteerError.invalid("'default' is the default collection's name") }
        if next.collections[settings.name] != nil { throw SteerError(.alreadyExists, "collection '\(settings.name)' already exists") }
        if next.aliases[settings.name] != nil { throw SteerError(.alreadyExists, "'\(settings.name)' is an alias; a collection cannot have its name") }
        guard next.collections.count < maxCollections else {
            throw SteerError(.tooLarge, "this server holds \(next.collections.count) collections, its limit (--max-collections) is \(maxCollections)")
        }
        let checkpoint = try settings.checkpoint.map { (given) throws(SteerError) -> String in
            guard let root = checkpointRoot else {
                throw SteerError.invalid("collections from checkpoints are off: the server has no checkpoint root (start it with --checkpoint-root DIR or --checkpoint)")
            }
            return try PathRoot(root).resolve(given, field: "checkpoint")
        }
        if checkpoint != nil, settings.embeddingVersion != nil {
            throw SteerError.invalid("a collection from a checkpoint takes the checkpoint's embedding version (ckpt-<hash>): leave out embedding_version")
        }
        // With a checkpoint, dimension 0 and an empty version stand for "the checkpoint's" until the engine opened.
        let entry = CollectionCatalog.Entry(name: settings.name, dimension: settings.dimension ?? 0, metric: settings.metric ?? .innerProduct,
                                            indexSpec: settings.indexSpec ?? "Flat",
                                            embeddingVersion: settings.embeddingVersion ?? (checkpoint == nil ? "v1" : ""),
                                            createdAt: ISO8601DateFormatter().string(from: Date()), checkpoint: checkpoint)
        let path = CollectionCatalog.directory(of: entry.name, dataDirectory: directory)
        guard !FileManager.default.fileExists(atPath: path) else {
            throw SteerError(.alreadyExists, "'\(path)' exists but the catalog does not list it (left by an interrupted create_collection, or the catalog was replaced): move it away to create '\(entry.name)'")
        }
        do {
            try FileManager.default.createDirectory(atPath: directory + "/" + CollectionCatalog.directoryName, withIntermediateDirectories: true)
        } catch {
            throw SteerError(.io, "cannot create '\(directory)/\(CollectionCatalog.directoryName)': \(error.localizedDescription)")
        }
        let engine: RetrievalEngine
        do {
            engine = try makeEngine(entry, path)
        } catch {
            Self.removeDirectory(path)
            throw error
        }
        var stored = entry
        let opened = engine.stats()
        stored.indexSpec = opened.indexSpec
        stored.dimension = opened.dimension
        stored.embeddingVersion = opened.embeddingVersion
        next.collections[entry.name] = stored
        do {
            try next.write(dataDirectory: directory)
        } catch {
            try? engine.close()
            Self.removeDirectory(path)
            throw error
        }
        catalog.withLock { $0 = next }
        let served = Served(name: entry.name, engine: engine)
        state.withLock { $0.served[entry.name] = served }
        return Description(name: entry.name, aliases: [], stats: engine.stats(), createdAt: entry.createdAt, checkpoint: checkpoint)
    }

    /// Drops a named collection: refused while an alias points to it; otherwise a `.dropping` marker
    /// goes into its directory, then the catalog entry goes (fsynced), then the table entry (new requests
    /// get `not_found`), and the call returns. Once the requests that hold it finished, a background
    /// thread closes its engine and deletes its directory (a worker never waits for them: a batch search
    /// between its steps may need that very worker). A crash before the deletion ends leaves the marked
    /// directory, which the next start deletes (`init`).
    ///
    /// - Throws: `.invalidRequest` (the default collection, no catalog), `.notFound`, `.inUse` naming the
    ///   aliases, what writing the catalog throws.
    public func drop(_ name: String) throws(SteerError) {
        let (directory, _) = try requireCatalog()
        adminLock.lock()
        defer { adminLock.unlock() }
        guard name != CollectionName.defaultName else { throw SteerError.invalid("the default collection cannot be dropped") }
        var next = catalog.get()
        guard next.collections[name] != nil else {
            if next.aliases[name] != nil { throw SteerError.invalid("'\(name)' is an alias: drop_collection takes a collection's own name (delete_alias removes an alias)") }
            throw SteerError.notFound("collection '\(name)' does not exist")
        }
        let pointing = next.aliases(of: name)
        guard pointing.isEmpty else {
            throw SteerError(.inUse, "collection '\(name)' is the target of alias\(pointing.count == 1 ? "" : "es") \(pointing.joined(separator: ", ")): move (alias) or delete (delete_alias) \(pointing.count == 1 ? "it" : "them") first")
        }
        let path = CollectionCatalog.directory(of: name, dataDirectory: directory)
        try AtomicFile.write([], to: path + "/" + Self.droppingMarker)
        next.collections[name] = nil
        try next.write(dataDirectory: directory)
        catalog.withLock { $0 = next }
        let served = state.withLock { $0.served.removeValue(forKey: name) }
        guard let served else { return }
        let finished = dropsFinished
        finished.enter()
        Thread {
            defer { finished.leave() }
            served.waitUntilUnused()
            try? served.engine.close()
            Self.removeDirectory(path)
        }.start()
    }

    /// Waits until every dropped collection's engine is closed and its directory deleted.
    public func waitForDrops() {
        dropsFinished.wait()
    }

    /// Points `alias` at `collection` (creating or moving it); the catalog is written first, then the
    /// table changes at once.
    ///
    /// - Returns: the collection it pointed to before, nil when it is new.
    /// - Throws: `.invalidRequest` (no catalog, reserved name, target is an alias), `.notFound` (no such
    ///   collection), `.alreadyExists` (a collection has that name), `.tooLarge` (over `maxCollections`
    ///   aliases), what writing the catalog throws.
    @discardableResult
    public func setAlias(_ alias: String, to collection: String) throws(SteerError) -> String? {
        let (directory, _) = try requireCatalog()
        try CollectionName.validate(alias, field: "alias")
        adminLock.lock()
        defer { adminLock.unlock() }
        var next = catalog.get()
        guard alias != CollectionName.defaultName else { throw SteerError.invalid("'default' is the default collection's name, not an alias") }
        if next.collections[alias] != nil { throw SteerError(.alreadyExists, "'\(alias)' is a collection; an alias cannot have its name") }
        guard collection == CollectionName.defaultName || next.collections[collection] != nil else {
            if next.aliases[collection] != nil { throw SteerError.invalid("'\(collection)' is an alias: an alias points at a collection's own name") }
            throw SteerError.notFound("collection '\(collection)' does not exist")
        }
        let previous = next.aliases[alias]
        if previous == nil, next.aliases.count >= maxCollections {
            throw SteerError(.tooLarge, "this server holds \(next.aliases.count) aliases, its limit (--max-collections) is \(maxCollections)")
        }
        if previous == collection { return previous }
        next.aliases[alias] = collection
        try next.write(dataDirectory: directory)
        catalog.withLock { $0 = next }
        state.withLock { $0.aliases[alias] = collection }
        return previous
    }

    /// Removes an alias.
    ///
    /// - Returns: the collection it pointed to.
    /// - Throws: `.invalidRequest` (no catalog), `.notFound`, what writing the catalog throws.
    @discardableResult
    public func deleteAlias(_ alias: String) throws(SteerError) -> String {
        let (directory, _) = try requireCatalog()
        adminLock.lock()
        defer { adminLock.unlock() }
        var next = catalog.get()
        guard let target = next.aliases.removeValue(forKey: alias) else { throw SteerError.notFound("alias '\(alias)' does not exist") }
        try next.write(dataDirectory: directory)
        catalog.withLock { $0 = next }
        state.withLock { _ = $0.aliases.removeValue(forKey: alias) }
        return target
    }

    // MARK: Private

    private func requireCatalog() throws(SteerError) -> (String, EngineFactory) {
        guard let dataDirectory, let makeEngine else {
            throw SteerError.invalid("this server has no collection catalog (it serves one engine without a data directory's collections)")
        }
        return (dataDirectory, makeEngine)
    }

    /// The file `drop` puts into a collection's directory before it leaves the catalog.
    static let droppingMarker = ".dropping"

    /// Finishes drops a crash interrupted: a directory under `DIR/collections/` with the `.dropping`
    /// marker is deleted when the catalog no longer lists it, and keeps its collection (marker removed)
    /// when it does (the crash came before the catalog write).
    private static func finishInterruptedDrops(dataDirectory: String, catalog: CollectionCatalog) {
        let parent = dataDirectory + "/" + CollectionCatalog.directoryName
        guard let children = try? FileManager.default.contentsOfDirectory(atPath: parent) else { return }
        for child in children where FileManager.default.fileExists(atPath: parent + "/" + child + "/" + droppingMarker) {
            if catalog.collections[child] == nil {
                removeDirectory(parent + "/" + child)
            } else {
                try? FileManager.default.removeItem(atPath: parent + "/" + child + "/" + droppingMarker)
            }
        }
    }

    private static func removeDirectory(_ path: String) {
        guard FileManager.default.fileExists(atPath: path) else { return }
        try? FileManager.default.removeItem(atPath: path)
    }
}
