import Foundation
import SteerCore

/// Steer's source of truth for items: a RocksDB database holding each item's external id, title, tags,
/// attributes and one float32 vector per embedding version, plus tag postings and a change log.
///
/// ## On-disk layout (store format 1)
/// One RocksDB database, one column family per kind of key (`default` is unused). Integers in keys
/// are big-endian so byte order is numeric order.
///
/// | family | key | value |
/// |---|---|---|
/// | `meta` | `format` | store format, u64 (currently 1) |
/// | `meta` | `next_internal_id`, `next_version_id`, `live_count`, `changelog_trimmed_through` | u64 |
/// | `meta` | `stream_applied_through` | the last write-log stream sequence applied, u64 (absent: 0, never followed) |
/// | `meta` | `version/` + name | u32 version id · u32 dimension |
/// | `meta` | `tagcount/` + tag | number of live items with the tag, u64 |
/// | `ids` | `ItemID.keyBytes` (0x01 + i64, or 0x02 + UTF-8) | internal id, 8 bytes |
/// | `items` | internal id, 8 bytes | the record (see `StoredRecord`): id, title, tags, attributes |
/// | `vectors` | version id (4 bytes) · internal id (8 bytes) | `dimension` float32, little-endian |
/// | `postings` | tag UTF-8 · 0x00 · internal id (8 bytes) | empty |
/// | `postings` | 0x00 · payload index key (see `PayloadKind`): declared attribute, value, internal id | empty |
/// | `meta` | `payload/` + attribute path | payload index kind, 1 byte (1 keyword, 2 numeric) |
/// | `changelog` | first sequence number of the batch, 8 bytes | upserted ids (with the versions they wrote) and deleted ids |
/// | `events` | user histories: see `UserHistoryStore` (`histories`) | |
///
/// Internal ids are dense (0, 1, 2, …), allocated from `next_internal_id` in the same batch that uses
/// them, and never reused: deleting an item and upserting its external id again gives a new internal id.
/// Every upsert, delete, version change and change-log trim is one RocksDB `WriteBatch`: all or nothing,
/// also across a crash (the WAL is replayed in point-in-time mode, so a torn batch is dropped whole).
///
/// ## Stream sequence
/// A replica that follows a shard's write log (docs/scaling.md, "Following a stream") passes each
/// message's stream sequence to `upsert`/`delete` (or `recordStreamSequence` for a write it rejects), or a
/// run of consecutive messages to `applyStream` (their net change and the last sequence in one batch); the
/// sequence goes into `stream_applied_through` in the same `WriteBatch` as the items, so after a crash
/// the store holds exactly the writes through `appliedStreamSequence` — never one applied without its
/// sequence or the reverse. Sequences must increase: a sequence at or below the stored one is refused.
///
/// ## Durability
/// `Options.syncWrites` (default `true`) fsyncs the write-ahead log before a write returns: an
/// acknowledged batch survives a process kill and a machine crash or power loss. With `false` the WAL is
/// still written on every batch (so a killed process loses nothing) but not fsynced, so an operating-system
/// crash or power loss can lose the most recently acknowledged batches; batches are still never torn.
///
/// ## Sequence numbers
/// RocksDB numbers every write; `latestSequence` is the last one committed. `scanVectors` reads from a
/// snapshot and returns its sequence; `changes(since:version:)` replays what was written after it, from
/// the `changelog` family (keyed by each batch's first sequence number, so a batch is after a snapshot
/// exactly when its key is greater than the snapshot's sequence). Trim the log with `trimChangeLog(upTo:)`
/// once no index build needs older changes.
///
/// ## Thread safety
/// `@unchecked Sendable` is safe because: RocksDB's database object is thread-safe; writers (upserts,
/// deletes, version changes, trims) are serialised by `writeLock`, which also guards id allocation and
/// the read-modify-write of counters; the cached state (versions, counters) is only touched under
/// `stateLock`; the in-memory payload indexes (`PayloadColumns`), tag postings and live ids
/// (`TagPostings`) are changed only under `writeLock`, right after the batch that wrote their keys, and
/// read under their own locks; and every call holds
/// `lifecycle` shared, while `close()` takes it exclusively, so handles are never freed under a running call.
public final class ItemStore: @unchecked Sendable {
    /// Configuration of a store. Limits are checked per item before anything is written.
    public struct Options: Sendable {
        /// Directory of the RocksDB database.
        public var path: String
        /// Fsync the write-ahead log on every batch (see "Durability" on `ItemStore`).
        public var syncWrites: Bool
        /// Longest title, in UTF-8 bytes.
        public var maxTitleBytes: Int
        /// Most tags per item.
        public var maxTags: Int
        /// Longest tag, in UTF-8 bytes.
        public var maxTagBytes: Int
        /// Longest attributes JSON text, in UTF-8 bytes.
        public var maxAttributesBytes: Int
        /// Most items in one `upsert` or `delete` call.
        public var maxBatchItems: Int
        /// Create the store when `path` does not exist (or is an empty directory).
        public var createIfMissing: Bool
        /// Open without taking RocksDB's lock (`rocksdb_open_for_read_only_column_families`), so another
        /// process (a running `steer serve`) may hold the store open for writing. The store is seen as of
        /// the open: later writes of the other process are not visible. Every write throws
        /// `.invalidRequest`; the store must exist.
        public var readOnly: Bool
        /// Estimated heap bytes of item records kept in memory for `records(internalIDs:)` (search
        /// hydration); 0 (the default) reads every record from RocksDB. See `RecordCache`.
        public var recordCacheBytes: Int
        /// Most events kept per user in `histories` (the most recent ones), 1 to
        /// `UserHistoryStore.maxEventsPerUserLimit`; default 200.
        public var maxEventsPerUser: Int

        /// - Parameters:
        ///   - path: directory of the store.
        ///   - syncWrites: fsync the WAL on every batch (`true` by default).
        ///   - maxTitleBytes: longest title in UTF-8 bytes.
        ///   - maxTags: most tags per item.
        ///   - maxTagBytes: longest tag in UTF-8 bytes.
        ///   - maxAttributesBytes: longest attributes JSON in UTF-8 bytes.
        ///   - maxBatchItems: most items per upsert or delete call.
        ///   - createIfMissing: create a new store when none exists at `path`.
        ///   - readOnly: open without RocksDB's lock, beside a process that writes (see `readOnly`).
        ///   - recordCacheBytes: memory for cached item records (0: no cache).
        ///   - maxEventsPerUser: most events kept per user (see `UserHistoryStore`).
        public init(
            path: String, syncWrites: Bool = true, maxTitleBytes: Int = 4096, maxTags: Int = 256,
            maxTagBytes: Int = 128, maxAttributesBytes: Int = 65536, maxBatchItems: Int = 100_000,
            createIfMissing: Bool = true, readOnly: Bool = false, recordCacheBytes: Int = 0, maxEventsPerUser: Int = 200
        ) {
            self.maxEventsPerUser = maxEventsPerUser
            self.readOnly = readOnly
            self.recordCacheBytes = recordCacheBytes
            self.path = path
            self.syncWrites = syncWrites
            self.maxTitleBytes = maxTitleBytes
            self.maxTags = maxTags
            self.maxTagBytes = maxTagBytes
            self.maxAttributesBytes = maxAttributesBytes
            self.maxBatchItems = maxBatchItems
            self.createIfMissing = createIfMissing
        }
    }

    /// A named set of item embeddings with a fixed dimension, for example `v1` or a checkpoint hash.
    public struct EmbeddingVersion: Sendable, Hashable {
        public var name: String
        public var dimension: Int

        public init(name: String, dimension: Int) {
            self.name = name
            self.dimension = dimension
        }
    }

    /// One item to insert or replace.
    public struct ItemWrite: Sendable {
        public var id: ItemID
        public var title: String?
        /// Duplicates are dropped (first occurrence kept); postings are a set.
        public var tags: [String]
        /// A JSON object, stored as given.
        public var attributesJSON: String?
        /// Version name → vector. Versions not named here keep the item's existing vector.
        public var vectors: [String: [Float]]

        public init(id: ItemID, title: String? = nil, tags: [String] = [], attributesJSON: String? = nil, vectors: [String: [Float]] = [:]) {
            self.id = id
            self.title = title
            self.tags = tags
            self.attributesJSON = attributesJSON
            self.vectors = vectors
        }
    }

    /// An item's stored metadata.
    public struct ItemRecord: Sendable, Equatable {
        public var id: ItemID
        public var internalID: Int64
        public var title: String?
        public var tags: [String]
        public var attributesJSON: String?

        public init(id: ItemID, internalID: Int64, title: String?, tags: [String], attributesJSON: String?) {
            self.id = id
            self.internalID = internalID
            self.title = title
            self.tags = tags
            self.attributesJSON = attributesJSON
        }
    }

    /// The record cache's counters (`stats`).
    public struct RecordCacheStatistics: Sendable, Equatable {
        /// The configured bound (0: the cache is off).
        public var capacityBytes: Int
        /// Estimated heap bytes of the cached records.
        public var bytes: Int
        public var entries: Int
        /// Records served from memory / read from RocksDB by `records(internalIDs:)`.
        public var hits: Int
        public var misses: Int

        public init(capacityBytes: Int, bytes: Int, entries: Int, hits: Int, misses: Int) {
            self.capacityBytes = capacityBytes
            self.bytes = bytes
            self.entries = entries
            self.hits = hits
            self.misses = misses
        }
    }

    /// The outcome of an upsert.
    public struct WriteResult: Sendable {
        /// One internal id per input item, in input order.
        public var internalIDs: [Int64]
        /// The store's sequence number after the batch.
        public var sequence: UInt64
    }

    /// The store format this build writes and the newest it can read.
    public static let formatVersion: UInt64 = 1
    /// Longest embedding-version name, in UTF-8 bytes.
    public static let maxVersionNameBytes = 256
    /// Largest embedding dimension.
    public static let maxDimension = 65536

    private struct State {
        var versions: [String: StoredVersion] = [:]
        var nextInternalID: Int64 = 0
        var nextVersionID: UInt32 = 0
        var liveCount: Int = 0
        var trimmedThrough: UInt64 = 0
        var storeID: String?
        var appliedStreamSequence: UInt64 = 0
        /// Declared payload indexes (see `PayloadKind`).
        var payloads: [String: PayloadKind] = [:]
    }

    public let options: Options
    private var database: RocksDatabase?
    private var state = State()
    private let lifecycle = ReadWriteLock()
    private let writeLock = NSLock()
    private let stateLock = NSLock()
    private let recordCache: RecordCache
    /// The payload indexes in memory (see `PayloadColumns` for the invariant).
    private let payloadColumns = PayloadColumns()
    /// The tag postings and live internal ids in memory (see `TagPostings` for the invariant).
    private let tagPostings = TagPostings()
    /// True from just before a batch with keys mirrored in memory is written until its replay is done
    /// (see `replayedSequence`). Changed under `writeLock` (internal for tests of that window).
    let replayPending = Locked(false)
    /// `UserHistoryStore`'s writer locks, one per stripe of users (a user's stripe is a hash of its key).
    let historyLocks: [NSLock] = (0..<UserHistoryStore.lockStripes).map { _ in NSLock() }

    /// The users' event histories kept in this store (`UserHistoryStore`).
    public var histories: UserHistoryStore { UserHistoryStore(store: self) }

    // MARK: Opening and closing

    /// Opens the store at `options.path`, creating it when missing and `createIfMissing` is set.
    ///
    /// - Parameter options: the path, the durability switch and the limits.
    /// - Throws: `.notFound` when there is no store and `createIfMissing` is false; `.invalidRequest`
    ///   when the path is a file, a non-empty directory that is not a Steer store, or a store of a newer
    ///   format; `.io` or `.corrupt` when RocksDB cannot open it (for example, another process has it open).
    public init(options: Options) throws(SteerError) {
        self.options = options
        self.recordCache = RecordCache(capacityBytes: options.recordCacheBytes)
        let path = options.path
        guard !path.isEmpty else { throw SteerError.invalid("store path must not be empty") }
        guard (1...UserHistoryStore.maxEventsPerUserLimit).contains(options.maxEventsPerUser) else {
            throw SteerError.invalid("the per-user event cap must be 1 to \(UserHistoryStore.maxEventsPerUserLimit), got \(options.maxEventsPerUser)")
        }
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        var fresh = !exists
        var extraFamilies: [String] = []
        if exists {
            guard isDirectory.boolValue else {
                throw SteerError.invalid("'\(path)' is a file, not a Steer store directory")
            }
            let contents = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            if contents.isEmpty {
                fresh = true
            } else {
                guard contents.contains("CURRENT") else {
                    throw SteerError.invalid("'\(path)' is not a Steer store (a non-empty directory without a RocksDB database)")
                }
                let families = try RocksDatabase.listFamilies(path: path)
                guard families.contains(Family.meta.name) else {
                    throw SteerError.invalid("'\(path)' is not a Steer store (a RocksDB database without Steer's column families)")
                }
                let ours = Set(Family.allCases.map(\.name))
                extraFamilies = families.filter { !ours.contains($0) }
            }
        }
        if fresh && (!options.createIfMissing || options.readOnly) {
            throw SteerError.notFound("no Steer store at '\(path)'\(options.readOnly ? " to open read-only" : " and createIfMissing is false")")
        }
        let database = try RocksDatabase(path: path, create: fresh, syncWrites: options.syncWrites, extraFamilies: extraFamilies,
                                         readOnly: options.readOnly)
        do {
            try Self.initialiseIfNeeded(database, path: path, fresh: fresh)
            if !options.readOnly, try database.get(.meta, StoreKey.storeID) == nil {
                let batch = WriteBatch(database)
                batch.put(.meta, StoreKey.storeID, Array(Self.newStoreID().utf8))
                try database.write(batch)
            }
            self.state = try Self.loadState(database, path: path)
            try Self.loadColumns(payloadColumns, database, declared: state.payloads)
            try tagPostings.load(database)
        } catch {
            database.close()
            throw error
        }
        self.database = database
    }

    /// Fills `columns` from every payload key (one scan of that part of `postings`).
    private static func loadColumns(_ columns: PayloadColumns, _ database: RocksDatabase, declared: [String: PayloadKind]) throws(SteerError) {
        for (name, kind) in declared { columns.declare(name, kind: kind) }
        var pending: [(put: Bool, key: [UInt8])] = []
        var readable = true
        do {
            try database.scan(.postings, from: [0], to: [1]) { key, _ in
                pending.append((true, Array(key)))
                if pending.count == 65536 {
                    readable = columns.apply(pending) && readable
                    pending.removeAll(keepingCapacity: true)
                }
                return true
            }
        } catch {
            throw Self.steerError(error)
        }
        readable = columns.apply(pending) && readable
        if !readable { throw SteerError(.corrupt, "a payload index key is unreadable") }
    }

    /// Writes `batch` and replays its payload key, tag posting and item key changes onto the in-memory
    /// copies (call under the write lock, or before the store is shared; a batch with none of those keys,
    /// such as a history batch, may be committed without it).
    private func commit(_ batch: WriteBatch, _ database: RocksDatabase) throws(SteerError) {
        let mirrored = !batch.payloadChanges.isEmpty || !batch.tagChanges.isEmpty || !batch.itemChanges.isEmpty
        if !mirrored {
            try database.write(batch)
            return
        }
        replayPending.withLock { $0 = true }
        defer { replayPending.withLock { $0 = false } }
        try database.write(batch)
        payloadColumns.apply(batch.payloadChanges)
        tagPostings.apply(tags: batch.tagChanges, items: batch.itemChanges)
    }

    /// The store's sequence (`latestSequence`) when the in-memory copies (`payloadBits`, `tagBits`,
    /// `liveBits`) hold every batch through it; nil while a written batch's replay onto them is pending.
    /// A resolution from memory started after reading a non-nil value sees at least that sequence's
    /// state, so a cache may file it under that sequence (`FilterCache`).
    public var replayedSequence: UInt64? {
        let sequence = latestSequence
        return replayPending.withLock { $0 } ? nil : sequence
    }

    /// The live items (internal ids) carrying any of `tags`, as a bitset from memory: the union of
    /// `internalIDs(withTag:)` over `tags`, without reading RocksDB. Nil once closed, or when a key could
    /// not be held in memory (see `TagPostings`); the caller then reads RocksDB.
    ///
    /// - Complexity: O(postings of `tags` + internal ids ÷ 64 words), no RocksDB read.
    public func tagBits(anyOf tags: [String]) -> LabelBitset? { tagPostings.bits(anyOf: tags) }

    /// The live items' internal ids as a bitset from memory: the set `liveInternalIDs()` reads from
    /// RocksDB. Nil once closed or when a key could not be held in memory.
    ///
    /// - Complexity: O(internal ids ÷ 64 words), no RocksDB read.
    public func liveBits() -> LabelBitset? { tagPostings.liveBits() }

    /// Estimated bytes of the in-memory tag postings and live set (`TagPostings`).
    public var tagPostingBytes: Int { tagPostings.estimatedBytes }

    /// The items (internal ids) the in-memory copy of a payload index says meet `query` on attribute
    /// `name`, as a bitset: the same set as `internalIDs(payload:_:)`, without reading RocksDB. Nil when
    /// `name` has no payload index or its kind cannot answer `query`.
    ///
    /// - Complexity: O(internal ids ever allocated ÷ 64 words + items with a value), no RocksDB read.
    public func payloadBits(_ name: String, _ query: PayloadQuery) -> LabelBitset? {
        guard let kind = payloadIndexes[name], PayloadKey.ranges(kind, name, query) != nil else { return nil }
        return payloadColumns.bits(name, query) ?? LabelBitset()
    }

    /// Estimated bytes of the in-memory payload indexes (`PayloadColumns`).
    public var payloadColumnBytes: Int { payloadColumns.estimatedBytes }

    /// Writes the format and counters into a new store; checks the format of an existing one.
    private static func initialiseIfNeeded(_ database: RocksDatabase, path: String, fresh: Bool) throws(SteerError) {
        if let raw = try database.get(.meta, StoreKey.formatVersion) {
            guard let format = StoreKey.decodeUInt64(raw) else {
                throw SteerError(.corrupt, "store format marker in '\(path)' is unreadable")
            }
            guard format <= formatVersion else {
                throw SteerError.invalid("'\(path)' is a Steer store of format \(format); this build reads formats up to \(formatVersion)")
            }
            return
        }
        // No format marker: a new store, or one whose creation was interrupted before its first batch
        // (then `meta` is still empty, because the marker is in that batch). Anything else is foreign.
        if !fresh {
            var metaIsEmpty = true
            do {
                try database.scan(.meta, from: [], to: nil) { _, _ in
                    metaIsEmpty = false
                    return false
                }
            } catch {
                throw Self.steerError(error)
            }
            guard metaIsEmpty else { throw SteerError.invalid("'\(path)' is not a Steer store (no format marker)") }
        }
        let batch = WriteBatch(database)
        batch.put(.meta, StoreKey.formatVersion, StoreKey.uint64(formatVersion))
        batch.put(.meta, StoreKey.nextInternalID, StoreKey.uint64(0))
        batch.put(.meta, StoreKey.nextVersionID, StoreKey.uint64(0))
        batch.put(.meta, StoreKey.liveCount, StoreKey.uint64(0))
        batch.put(.meta, StoreKey.changeLogTrimmedThrough, StoreKey.uint64(0))
        batch.put(.meta, StoreKey.storeID, Array(newStoreID().utf8))
        try database.write(batch)
    }

    /// A fresh store identity: a random (version 4) UUID in lower case.
    private static func newStoreID() -> String { UUID().uuidString.lowercased() }

    private static func loadState(_ database: RocksDatabase, path: String) throws(SteerError) -> State {
        func counter(_ key: [UInt8]) throws(SteerError) -> UInt64 {
            guard let value = StoreKey.decodeUInt64(try database.get(.meta, key)) else {
                throw SteerError(.corrupt, "store '\(path)': meta key '\(String(decoding: key, as: UTF8.self))' is missing or unreadable")
            }
            return value
        }
        var state = State()
        state.nextInternalID = Int64(try counter(StoreKey.nextInternalID))
        state.nextVersionID = UInt32(truncatingIfNeeded: try counter(StoreKey.nextVersionID))
        state.liveCount = Int(try counter(StoreKey.liveCount))
        state.trimmedThrough = try counter(StoreKey.changeLogTrimmedThrough)
        if let raw = try database.get(.meta, StoreKey.streamAppliedThrough) {
            guard let value = StoreKey.decodeUInt64(raw) else {
                throw SteerError(.corrupt, "store '\(path)': meta key 'stream_applied_through' is unreadable")
            }
            state.appliedStreamSequence = value
        }
        if let raw = try database.get(.meta, StoreKey.storeID) {
            guard let text = String(validating: raw, as: UTF8.self), UUID(uuidString: text) != nil else {
                throw SteerError(.corrupt, "store '\(path)': meta key 'store_id' is unreadable")
            }
            state.storeID = text
        }
        var versions: [String: StoredVersion] = [:]
        var bad: String?
        do {
            try database.scan(.meta, from: StoreKey.versionPrefix, to: StoreKey.versionEnd) { key, value in
                let name = String(decoding: key.dropFirst(StoreKey.versionPrefix.count), as: UTF8.self)
                guard let version = StoredVersion(decoding: Array(value)) else {
                    bad = name
                    return false
                }
                versions[name] = version
                return true
            }
        } catch {
            throw steerError(error)
        }
        if let bad { throw SteerError(.corrupt, "store '\(path)': embedding version '\(bad)' is unreadable") }
        state.versions = versions
        var payloads: [String: PayloadKind] = [:]
        var badPayload: String?
        do {
            try database.scan(.meta, from: PayloadKey.declarationPrefix, to: PayloadKey.declarationEnd) { key, value in
                let name = String(decoding: key.dropFirst(PayloadKey.declarationPrefix.count), as: UTF8.self)
                guard value.count == 1, let kind = PayloadKind(rawValue: value[0]) else {
                    badPayload = name
                    return false
                }
                payloads[name] = kind
                return true
            }
        } catch {
            throw steerError(error)
        }
        if let badPayload { throw SteerError(.corrupt, "store '\(path)': payload index declaration '\(badPayload)' is unreadable") }
        state.payloads = payloads
        return state
    }

    /// Closes the database. Later calls throw `.unavailable` (reads) or return empty values (properties).
    /// Waits for calls in flight. Idempotent.
    public func close() {
        lifecycle.withWriteLock {
            database?.close()
            database = nil
            recordCache.removeAll()
            payloadColumns.removeAll()
            tagPostings.removeAll()
        }
    }

    deinit { database?.close() }

    // MARK: Helpers

    static func steerError(_ error: any Error) -> SteerError {
        if let error = error as? SteerError { return error }
        return SteerError.internalError("unexpected error: \(error)")
    }

    /// Writes a consistent copy of the store to `path` (a RocksDB checkpoint; `path` must not exist): the
    /// items, their vectors and `appliedStreamSequence` as of one moment (docs/operations.md, "Backup
    /// and restore"). Writes may go on meanwhile; the copy has each batch whole or not at all.
    ///
    /// - Throws: `.io` when RocksDB cannot write it; `.unavailable` when the store is closed.
    public func checkpoint(to path: String) throws(SteerError) {
        try withDatabase { database throws(SteerError) in try database.checkpoint(to: path) }
    }

    /// Runs `body` with the open database, holding the lifecycle lock shared.
    func withDatabase<T>(_ body: (RocksDatabase) throws(SteerError) -> T) throws(SteerError) -> T {
        try lifecycle.withReadLock { () throws(SteerError) -> T in
            guard let database else { throw SteerError(.unavailable, "the item store at '\(options.path)' is closed") }
            return try body(database)
        }
    }

    private func withState<T>(_ body: (inout State) -> T) -> T {
        stateLock.lock()
        defer { stateLock.unlock() }
        return body(&state)
    }

    /// Serialises a write: RocksDB orders batches itself, but id allocation and counters need one writer.
    private func withWriter<T>(_ body: (RocksDatabase) throws(SteerError) -> T) throws(SteerError) -> T {
        try withDatabase { (database) throws(SteerError) -> T in
            writeLock.lock()
            defer { writeLock.unlock() }
            return try body(database)
        }
    }

    /// A snapshot and its sequence number. Taken under the write lock, so no item batch is half-way
    /// between the snapshot and the sequence read; every write of items, vectors and the change log goes
    /// through that lock. (`UserHistoryStore` batches take their own locks: they touch only the `events`
    /// family, which no snapshot's sequence speaks for.)
    private func snapshot(_ database: RocksDatabase) -> (OpaquePointer, UInt64) {
        writeLock.lock()
        defer { writeLock.unlock() }
        return (database.createSnapshot(), database.latestSequence)
    }

    private func storedVersion(_ name: String) throws(SteerError) -> StoredVersion {
        guard let version = withState({ $0.versions[name] }) else {
            throw SteerError.notFound("unknown embedding version '\(name)'")
        }
        return version
    }

    // MARK: Embedding versions

    /// Registers an embedding version.
    ///
    /// - Parameters:
    ///   - name: 1 to `maxVersionNameBytes` UTF-8 bytes.
    ///   - dimension: floats per vector, 1 to `maxDimension`.
    /// - Throws: `.invalidRequest` for a bad name or dimension; `.dimensionMismatch` when the version
    ///   exists with another dimension. Creating an existing version with the same dimension does nothing.
    public func createVersion(_ name: String, dimension: Int) throws(SteerError) {
        guard !name.isEmpty, name.utf8.count <= Self.maxVersionNameBytes else {
            throw SteerError.invalid("embedding version name must be 1 to \(Self.maxVersionNameBytes) bytes, got \(name.utf8.count)")
        }
        guard (1...Self.maxDimension).contains(dimension) else {
            throw SteerError.invalid("embedding version '\(name)': dimension must be 1 to \(Self.maxDimension), got \(dimension)")
        }
        try withWriter { (database) throws(SteerError) in
            let (existing, nextID) = withState { ($0.versions[name], $0.nextVersionID) }
            if let existing {
                guard existing.dimension == dimension else {
                    throw SteerError(.dimensionMismatch, "embedding version '\(name)' exists with dimension \(existing.dimension), not \(dimension)")
                }
                return
            }
            let version = StoredVersion(versionID: nextID, dimension: dimension)
            let batch = WriteBatch(database)
            batch.put(.meta, StoreKey.version(named: name), version.encoded())
            batch.put(.meta, StoreKey.nextVersionID, StoreKey.uint64(UInt64(nextID) + 1))
            try commit(batch, database)
            withState {
                $0.versions[name] = version
                $0.nextVersionID = nextID + 1
            }
        }
    }

    /// Removes an embedding version and all of its vectors (for example an old model's embeddings
    /// once a newer generation is live). Unknown names are ignored.
    ///
    /// - Parameter name: the version to drop.
    /// - Complexity: one range deletion; space is reclaimed by compaction.
    public func dropVersion(_ name: String) throws(SteerError) {
        try withWriter { (database) throws(SteerError) in
            guard let version = withState({ $0.versions[name] }) else { return }
            let batch = WriteBatch(database)
            batch.delete(.meta, StoreKey.version(named: name))
            batch.deleteRange(.vectors, from: StoreKey.versionPrefix(version.versionID),
                              to: StoreKey.versionPrefix(version.versionID + 1))
            try commit(batch, database)
            _ = withState { $0.versions.removeValue(forKey: name) }
        }
    }

    /// Every embedding version, in creation order.
    public func versions() -> [EmbeddingVersion] {
        withState { state in
            state.versions.sorted { $0.value.versionID < $1.value.versionID }
                .map { EmbeddingVersion(name: $0.key, dimension: $0.value.dimension) }
        }
    }

    /// The version called `name`, or nil.
    public func version(named name: String) -> EmbeddingVersion? {
        withState { $0.versions[name].map { EmbeddingVersion(name: name, dimension: $0.dimension) } }
    }

    // MARK: Validation

    private func validate(_ item: ItemWrite, at index: Int, versions: [String: StoredVersion]) throws(SteerError) -> [String] {
        // Built only for an error: this runs for every item of every write.
        func label() -> String { "items[\(index)] (id \(item.id))" }
        do {
            try item.id.validate()
        } catch {
            throw SteerError(error.code, "items[\(index)]: \(error.message)")
        }
        if let title = item.title, title.utf8.count > options.maxTitleBytes {
            throw SteerError(.tooLarge, "\(label()): title is \(title.utf8.count) bytes, limit is \(options.maxTitleBytes)")
        }
        var tags: [String] = []
        var seen = Set<String>()
        for (tagIndex, tag) in item.tags.enumerated() {
            if tag.isEmpty { throw SteerError.invalid("\(label()): tags[\(tagIndex)] is empty") }
            if tag.utf8.count > options.maxTagBytes {
                throw SteerError(.tooLarge, "\(label()): tags[\(tagIndex)] is \(tag.utf8.count) bytes, limit is \(options.maxTagBytes)")
            }
            if tag.utf8.contains(0) { throw SteerError.invalid("\(label()): tags[\(tagIndex)] contains a NUL character") }
            if seen.insert(tag).inserted { tags.append(tag) }
        }
        if tags.count > options.maxTags {
            throw SteerError(.tooLarge, "\(label()): \(tags.count) tags, limit is \(options.maxTags)")
        }
        if let attributes = item.attributesJSON {
            let size = attributes.utf8.count
            if size > options.maxAttributesBytes {
                throw SteerError(.tooLarge, "\(label()): attributes are \(size) bytes, limit is \(options.maxAttributesBytes)")
            }
            let object = try? JSONSerialization.jsonObject(with: Data(attributes.utf8), options: [.fragmentsAllowed])
            if !(object is [String: Any]) {
                throw SteerError.invalid("\(label()): attributes must be a JSON object")
            }
        }
        for (name, vector) in item.vectors.sorted(by: { $0.key < $1.key }) {
            guard let version = versions[name] else {
                throw SteerError.notFound("\(label()): vectors[\"\(name)\"] names an unknown embedding version")
            }
            guard vector.count == version.dimension else {
                throw SteerError(.dimensionMismatch, "\(label()): vectors[\"\(name)\"] has \(vector.count) dimensions, expected \(version.dimension)")
            }
            do {
                try Vectors.requireFinite(vector)
            } catch {
                try Vectors.requireFinite(vector, field: "\(label()): vectors[\"\(name)\"]")
            }
        }
        return tags
    }

    // MARK: Writes

    /// Inserts or replaces items in one atomic batch.
    ///
    /// Everything is validated before anything is written; one invalid item fails the whole call and
    /// writes nothing. An existing id keeps its internal id and its record is replaced; vectors given
    /// replace that version's vector, other versions keep theirs; tag postings follow the new tags.
    ///
    /// - Parameters:
    ///   - items: at most `maxBatchItems` items with distinct ids.
    ///   - streamSequence: the write log's sequence of this write, stored in the same batch (see "Stream
    ///     sequence"); nil for a write that does not come from a stream.
    /// - Returns: the internal id of every item, in input order, and the sequence after the batch.
    /// - Throws: `.invalidRequest` (empty id, empty tag, non-object attributes, non-finite value,
    ///   duplicate id, a stream sequence not above `appliedStreamSequence`), `.tooLarge` (limits),
    ///   `.notFound` (unknown version), `.dimensionMismatch`; messages name the item's index and id and the field.
    public func upsert(_ items: [ItemWrite], streamSequence: UInt64? = nil) throws(SteerError) -> WriteResult {
        guard items.count <= options.maxBatchItems else {
            throw SteerError(.tooLarge, "upsert of \(items.count) items, limit is \(options.maxBatchItems)")
        }
        return try withWriter { (database) throws(SteerError) -> WriteResult in
            try checkStreamSequence(streamSequence)
            if items.isEmpty {
                try writeStreamSequenceOnly(streamSequence, database: database)
                return WriteResult(internalIDs: [], sequence: database.latestSequence)
            }
            let (versions, firstNewID, liveCountBefore, payloads) = withState { ($0.versions, $0.nextInternalID, $0.liveCount, $0.payloads) }
            var tagLists: [[String]] = []
            tagLists.reserveCapacity(items.count)
            var seenIDs = [ItemID: Int]()
            for (index, item) in items.enumerated() {
                tagLists.append(try validate(item, at: index, versions: versions))
                if let first = seenIDs.updateValue(index, forKey: item.id) {
                    throw SteerError.invalid("items[\(index)] (id \(item.id)): duplicate of items[\(first)] in the same batch")
                }
            }

            let existingIDs = try database.multiGet(.ids, items.map { $0.id.keyBytes })
            var internalIDs: [Int64] = []
            var nextID = firstNewID
            var oldRecordKeys: [[UInt8]] = []
            var oldRecordIndex: [Int: Int] = [:]
            for (index, raw) in existingIDs.enumerated() {
                if let raw {
                    guard let id = StoreKey.decodeInternalID(raw) else {
                        throw SteerError(.corrupt, "internal id of \(items[index].id) is unreadable")
                    }
                    internalIDs.append(id)
                    oldRecordIndex[index] = oldRecordKeys.count
                    oldRecordKeys.append(StoreKey.internalID(id))
                } else {
                    internalIDs.append(nextID)
                    nextID += 1
                }
            }
            let oldRecords = try database.multiGet(.items, oldRecordKeys)

            let batch = WriteBatch(database)
            var tagDeltas: [String: Int64] = [:]
            var entry = ChangeLogEntry()
            let emptyValue: [UInt8] = []
            for (index, item) in items.enumerated() {
                let internalID = internalIDs[index]
                let recordKey = StoreKey.internalID(internalID)
                var oldTags: [String] = []
                var oldAttributes: String?
                if let slot = oldRecordIndex[index] {
                    guard let raw = oldRecords[slot], let old = StoredRecord(decoding: raw) else {
                        throw SteerError(.corrupt, "record of \(item.id) (internal id \(internalID)) is missing or unreadable")
                    }
                    oldTags = old.tags
                    oldAttributes = old.attributesJSON
                } else {
                    batch.put(.ids, item.id.keyBytes, recordKey)
                }
                let newTags = tagLists[index]
                let newSet = Set(newTags)
                let oldSet = Set(oldTags)
                for tag in oldTags where !newSet.contains(tag) {
                    batch.delete(.postings, StoreKey.posting(tag: tag, internalID: internalID))
                    tagDeltas[tag, default: 0] -= 1
                }
                for tag in newTags where !oldSet.contains(tag) {
                    batch.put(.postings, StoreKey.posting(tag: tag, internalID: internalID), emptyValue)
                    tagDeltas[tag, default: 0] += 1
                }
                if !payloads.isEmpty {
                    let old = Self.payloadEntries(payloads, attributesJSON: oldAttributes, internalID: internalID)
                    let new = Self.payloadEntries(payloads, attributesJSON: item.attributesJSON, internalID: internalID)
                    for key in old.subtracting(new) { batch.delete(.postings, key) }
                    for key in new.subtracting(old) { batch.put(.postings, key, emptyValue) }
                }
                let record = StoredRecord(id: item.id, title: item.title, tags: newTags, attributesJSON: item.attributesJSON)
                batch.put(.items, recordKey, record.encoded())
                var written: [UInt32] = []
                for (name, vector) in item.vectors {
                    let versionID = versions[name]!.versionID
                    VectorBytes.withBytes(vector) { batch.put(.vectors, StoreKey.vector(version: versionID, internalID: internalID), $0) }
                    written.append(versionID)
                }
                entry.upserts.append((internalID, written.sorted()))
            }
            try applyTagDeltas(tagDeltas, database: database, batch: batch)
            let liveCount = liveCountBefore + Int(nextID - firstNewID)
            batch.put(.meta, StoreKey.nextInternalID, StoreKey.uint64(UInt64(nextID)))
            batch.put(.meta, StoreKey.liveCount, StoreKey.uint64(UInt64(liveCount)))
            batch.put(.changelog, StoreKey.changeLog(database.latestSequence + 1), entry.encoded())
            if let streamSequence { batch.put(.meta, StoreKey.streamAppliedThrough, StoreKey.uint64(streamSequence)) }
            defer { recordCache.invalidate(internalIDs) }
            try commit(batch, database)
            withState {
                $0.nextInternalID = nextID
                $0.liveCount = liveCount
                if let streamSequence { $0.appliedStreamSequence = streamSequence }
            }
            return WriteResult(internalIDs: internalIDs, sequence: database.latestSequence)
        }
    }

    /// The last write-log stream sequence stored with a write (see "Stream sequence"); 0 when none was.
    public var appliedStreamSequence: UInt64 { withState { $0.appliedStreamSequence } }

    /// Stores `sequence` as applied without changing any item: for a stream message that is refused
    /// (every replica refuses it alike) so that the replica moves past it exactly once.
    ///
    /// - Throws: `.invalidRequest` when `sequence` is not above `appliedStreamSequence`; `.io` from RocksDB.
    public func recordStreamSequence(_ sequence: UInt64) throws(SteerError) {
        try withWriter { (database) throws(SteerError) in
            try checkStreamSequence(sequence)
            try writeStreamSequenceOnly(sequence, database: database)
        }
    }

    /// Writes a `UserHistoryStore` batch, with `streamSequence` (when given) in `stream_applied_through`
    /// of the same batch (see "Stream sequence"): then under the writer lock, refusing a sequence not above
    /// the stored one, so history and item messages of one write log advance one sequence in order. The
    /// caller holds its users' history stripes (lock order: stripes, then the writer lock).
    ///
    /// - Throws: `.invalidRequest` for a sequence not above `appliedStreamSequence`; `.io` from RocksDB.
    ///   Nothing was written.
    func commitHistory(_ batch: WriteBatch, database: RocksDatabase, streamSequence: UInt64?) throws(SteerError) {
        guard let streamSequence else {
            try commit(batch, database)
            return
        }
        writeLock.lock()
        defer { writeLock.unlock() }
        try checkStreamSequence(streamSequence)
        batch.put(.meta, StoreKey.streamAppliedThrough, StoreKey.uint64(streamSequence))
        try commit(batch, database)
        withState { $0.appliedStreamSequence = streamSequence }
    }

    /// Refuses a stream sequence that is not above the stored one (the caller holds the write lock).
    private func checkStreamSequence(_ sequence: UInt64?) throws(SteerError) {
        guard let sequence else { return }
        let applied = withState { $0.appliedStreamSequence }
        guard sequence > applied else {
            throw SteerError.invalid("stream sequence \(sequence) is not above the applied sequence \(applied)")
        }
    }

    /// A batch holding only `stream_applied_through` (the caller holds the write lock); nothing for nil.
    private func writeStreamSequenceOnly(_ sequence: UInt64?, database: RocksDatabase) throws(SteerError) {
        guard let sequence else { return }
        let batch = WriteBatch(database)
        batch.put(.meta, StoreKey.streamAppliedThrough, StoreKey.uint64(sequence))
        try commit(batch, database)
        withState { $0.appliedStreamSequence = sequence }
    }

    /// Adds per-tag count changes to `batch` (counts are read now; the caller holds the write lock).
    private func applyTagDeltas(_ deltas: [String: Int64], database: RocksDatabase, batch: WriteBatch) throws(SteerError) {
        let changed = deltas.filter { $0.value != 0 }.sorted { $0.key < $1.key }
        if changed.isEmpty { return }
        let keys = changed.map { StoreKey.tagCount($0.key) }
        let current = try database.multiGet(.meta, keys)
        for (index, (_, delta)) in changed.enumerated() {
            let before = Int64(StoreKey.decodeUInt64(current[index]) ?? 0)
            let after = before + delta
            if after <= 0 {
                batch.delete(.meta, keys[index])
            } else {
                batch.put(.meta, keys[index], StoreKey.uint64(UInt64(after)))
            }
        }
    }

    /// Deletes items atomically: their records, id mappings, vectors of every version and postings.
    ///
    /// - Parameters:
    ///   - ids: items to delete; unknown and repeated ids are ignored.
    ///   - streamSequence: as for `upsert`; stored even when no id existed.
    /// - Returns: the internal ids of the items that existed, and the sequence after the batch.
    /// - Throws: `.tooLarge` past `maxBatchItems`; `.invalidRequest` for a stream sequence not above
    ///   `appliedStreamSequence`; `.io`/`.corrupt` from RocksDB.
    public func delete(_ ids: [ItemID], streamSequence: UInt64? = nil) throws(SteerError) -> (deleted: [ItemID: Int64], sequence: UInt64) {
        guard ids.count <= options.maxBatchItems else {
            throw SteerError(.tooLarge, "delete of \(ids.count) ids, limit is \(options.maxBatchItems)")
        }
        return try withWriter { (database) throws(SteerError) -> (deleted: [ItemID: Int64], sequence: UInt64) in
            try checkStreamSequence(streamSequence)
            var unique: [ItemID] = []
            var seen = Set<ItemID>()
            for id in ids where seen.insert(id).inserted { unique.append(id) }
            let found = try database.multiGet(.ids, unique.map(\.keyBytes))
            var deleted: [ItemID: Int64] = [:]
            var targets: [(ItemID, Int64)] = []
            for (index, raw) in found.enumerated() {
                guard let raw else { continue }
                guard let internalID = StoreKey.decodeInternalID(raw) else {
                    throw SteerError(.corrupt, "internal id of \(unique[index]) is unreadable")
                }
                targets.append((unique[index], internalID))
            }
            if targets.isEmpty {
                try writeStreamSequenceOnly(streamSequence, database: database)
                return ([:], database.latestSequence)
            }
            let records = try database.multiGet(.items, targets.map { StoreKey.internalID($0.1) })
            let (versionIDs, payloads) = withState { ($0.versions.values.map(\.versionID), $0.payloads) }
            let batch = WriteBatch(database)
            var tagDeltas: [String: Int64] = [:]
            for (index, (id, internalID)) in targets.enumerated() {
                batch.delete(.ids, id.keyBytes)
                batch.delete(.items, StoreKey.internalID(internalID))
                for versionID in versionIDs {
                    batch.delete(.vectors, StoreKey.vector(version: versionID, internalID: internalID))
                }
                if let raw = records[index], let record = StoredRecord(decoding: raw) {
                    for tag in record.tags {
                        batch.delete(.postings, StoreKey.posting(tag: tag, internalID: internalID))
                        tagDeltas[tag, default: 0] -= 1
                    }
                    for key in Self.payloadEntries(payloads, attributesJSON: record.attributesJSON, internalID: internalID) {
                        batch.delete(.postings, key)
                    }
                }
                deleted[id] = internalID
            }
            try applyTagDeltas(tagDeltas, database: database, batch: batch)
            let liveCount = max(0, withState { $0.liveCount } - targets.count)
            batch.put(.meta, StoreKey.liveCount, StoreKey.uint64(UInt64(liveCount)))
            let entry = ChangeLogEntry(deletes: targets.map(\.1).sorted())
            batch.put(.changelog, StoreKey.changeLog(database.latestSequence + 1), entry.encoded())
            if let streamSequence { batch.put(.meta, StoreKey.streamAppliedThrough, StoreKey.uint64(streamSequence)) }
            defer { recordCache.invalidate(targets.map(\.1)) }
            try commit(batch, database)
            withState {
                $0.liveCount = liveCount
                if let streamSequence { $0.appliedStreamSequence = streamSequence }
            }
            return (deleted, database.latestSequence)
        }
    }

    // MARK: Stream batches

    /// One message of a write log's batch (see `applyStream`).
    public enum StreamWrite: Sendable {
        /// Insert or replace items (at most `maxBatchItems`, distinct ids), as `upsert`.
        case upsert([ItemWrite])
        /// Delete items, as `delete` (unknown and repeated ids ignored).
        case delete([ItemID])
        /// A message refused before it reached the store: recorded as applied, no item change.
        case refused
    }

    /// What `applyStream` did: per message, and the net index change of the whole batch.
    public struct StreamBatchResult: Sendable {
        /// Per message, in order: the count `upsert`/`delete` would answer, or the error that refused it
        /// (`invalidRequest`, `tooLarge`, `notFound`, `dimensionMismatch`: nothing of that message was written).
        public var outcomes: [Result<Int, SteerError>]
        /// Internal ids that were live before the batch and are not (with that internal id) after it.
        public var removedInternalIDs: [Int64]
        /// Items live after the batch that the batch wrote: id, internal id, and every vector the batch
        /// gave it under that internal id (later messages win per version).
        public var written: [(id: ItemID, internalID: Int64, vectors: [String: [Float]])]
    }

    /// Applies consecutive write-log messages in ONE atomic RocksDB batch, with the last message's stream
    /// sequence in `stream_applied_through` (see "Stream sequence"): after a crash the store has all of
    /// them or none. Messages take effect in order, exactly as the same `upsert`/`delete` calls one after
    /// the other would: the same id written twice in the batch ends with the later write; an id deleted
    /// and written again gets a new internal id; a message refused by validation (or `.refused`) changes
    /// nothing and the others still apply. Only the net result is written (one change-log entry).
    ///
    /// - Parameters:
    ///   - messages: the messages, in stream order, with strictly increasing sequences all above
    ///     `appliedStreamSequence`.
    /// - Returns: per-message outcomes and the net index change.
    /// - Throws: `.invalidRequest` for sequences that are not increasing or not above the stored one;
    ///   `.io`/`.corrupt` from RocksDB. Nothing was written.
    public func applyStream(_ messages: [(sequence: UInt64, write: StreamWrite)]) throws(SteerError) -> StreamBatchResult {
        try applyStream(messages, partsShareSequence: false)
    }

    /// `applyStream` for messages of several parts (a batch message of the write log, `WriteLogMessage`):
    /// consecutive entries with the same sequence are the parts of one message, applied in order like
    /// separate messages (each with its own outcome; a refused part changes nothing and the others apply).
    ///
    /// - Parameter parts: in stream order, sequences not decreasing, all above `appliedStreamSequence`.
    /// - Throws: `.invalidRequest` for a decreasing sequence or one not above the stored one; as `applyStream`.
    public func applyStream(parts: [(sequence: UInt64, write: StreamWrite)]) throws(SteerError) -> StreamBatchResult {
        try applyStream(parts, partsShareSequence: true)
    }

    private func applyStream(_ messages: [(sequence: UInt64, write: StreamWrite)], partsShareSequence: Bool) throws(SteerError) -> StreamBatchResult {
        try withWriter { (database) throws(SteerError) -> StreamBatchResult in
            guard let last = messages.last?.sequence else { return StreamBatchResult(outcomes: [], removedInternalIDs: [], written: []) }
            let stored = withState { $0.appliedStreamSequence }
            var previous = stored
            for message in messages {
                guard message.sequence > previous || (partsShareSequence && message.sequence == previous && previous > stored) else {
                    throw SteerError.invalid("stream sequence \(message.sequence) is not above \(previous)")
                }
                previous = message.sequence
            }
            let (versions, firstNewID, liveCountBefore, payloads) = withState { ($0.versions, $0.nextInternalID, $0.liveCount, $0.payloads) }

            // The state of each touched id before the batch, read once.
            var touched: [ItemID] = []
            var seen = Set<ItemID>()
            for message in messages {
                switch message.write {
                case .upsert(let items): for item in items where seen.insert(item.id).inserted { touched.append(item.id) }
                case .delete(let ids): for id in ids where seen.insert(id).inserted { touched.append(id) }
                case .refused: break
                }
            }
            let rawIDs = try database.multiGet(.ids, touched.map(\.keyBytes))
            var original: [ItemID: Int64] = [:]
            for (index, raw) in rawIDs.enumerated() {
                guard let raw else { continue }
                guard let internalID = StoreKey.decodeInternalID(raw) else {
                    throw SteerError(.corrupt, "internal id of \(touched[index]) is unreadable")
                }
                original[touched[index]] = internalID
            }
            let originalKeys = touched.compactMap { original[$0] }
            let originalRaw = try database.multiGet(.items, originalKeys.map { StoreKey.internalID($0) })
            var originalRecords: [Int64: StoredRecord] = [:]
            for (index, internalID) in originalKeys.enumerated() {
                guard let raw = originalRaw[index], let record = StoredRecord(decoding: raw) else {
                    throw SteerError(.corrupt, "record of internal id \(internalID) is missing or unreadable")
                }
                originalRecords[internalID] = record
            }

            // Fold the messages into each id's state after the batch.
            struct Live {
                var internalID: Int64
                var record: StoredRecord
                var vectors: [String: [Float]]
            }
            var current: [ItemID: Live?] = [:]
            for id in touched {
                if let internalID = original[id], let record = originalRecords[internalID] {
                    current[id] = .some(Live(internalID: internalID, record: record, vectors: [:]))
                } else {
                    current[id] = .some(nil)
                }
            }
            var nextID = firstNewID
            var outcomes: [Result<Int, SteerError>] = []
            outcomes.reserveCapacity(messages.count)
            for message in messages {
                switch message.write {
                case .refused:
                    outcomes.append(.success(0))
                case .delete(let ids):
                    guard ids.count <= options.maxBatchItems else {
                        outcomes.append(.failure(SteerError(.tooLarge, "delete of \(ids.count) ids, limit is \(options.maxBatchItems)")))
                        continue
                    }
                    var existed = 0
                    var done = Set<ItemID>()
                    for id in ids where done.insert(id).inserted {
                        if case .some(.some) = current[id] { existed += 1 }
                        current[id] = .some(nil)
                    }
                    outcomes.append(.success(existed))
                case .upsert(let items):
                    var tagLists: [[String]] = []
                    do throws(SteerError) {
                        guard items.count <= options.maxBatchItems else {
                            throw SteerError(.tooLarge, "upsert of \(items.count) items, limit is \(options.maxBatchItems)")
                        }
                        var ids = [ItemID: Int]()
                        for (index, item) in items.enumerated() {
                            tagLists.append(try validate(item, at: index, versions: versions))
                            if let first = ids.updateValue(index, forKey: item.id) {
                                throw SteerError.invalid("items[\(index)] (id \(item.id)): duplicate of items[\(first)] in the same batch")
                            }
                        }
                    } catch {
                        outcomes.append(.failure(error))
                        continue
                    }
                    for (index, item) in items.enumerated() {
                        let record = StoredRecord(id: item.id, title: item.title, tags: tagLists[index], attributesJSON: item.attributesJSON)
                        if case .some(.some(var live)) = current[item.id] {
                            live.record = record
                            live.vectors.merge(item.vectors) { _, new in new }
                            current[item.id] = .some(live)
                        } else {
                            current[item.id] = .some(Live(internalID: nextID, record: record, vectors: item.vectors))
                            nextID += 1
                        }
                    }
                    outcomes.append(.success(items.count))
                }
            }

            // Write the net change.
            let batch = WriteBatch(database)
            var tagDeltas: [String: Int64] = [:]
            var entry = ChangeLogEntry()
            var removed: [Int64] = []
            var written: [(id: ItemID, internalID: Int64, vectors: [String: [Float]])] = []
            var liveCount = liveCountBefore
            let emptyValue: [UInt8] = []
            let versionIDs = versions.values.map(\.versionID)
            for id in touched {
                let before = original[id].flatMap { internalID in originalRecords[internalID].map { (internalID, $0) } }
                let after = current[id] ?? nil
                if let (oldID, oldRecord) = before, after?.internalID != oldID {
                    // Gone under its old internal id: as `delete`.
                    batch.delete(.items, StoreKey.internalID(oldID))
                    for versionID in versionIDs { batch.delete(.vectors, StoreKey.vector(version: versionID, internalID: oldID)) }
                    for tag in oldRecord.tags {
                        batch.delete(.postings, StoreKey.posting(tag: tag, internalID: oldID))
                        tagDeltas[tag, default: 0] -= 1
                    }
                    for key in Self.payloadEntries(payloads, attributesJSON: oldRecord.attributesJSON, internalID: oldID) { batch.delete(.postings, key) }
                    if after == nil { batch.delete(.ids, id.keyBytes) }
                    removed.append(oldID)
                    entry.deletes.append(oldID)
                    liveCount -= 1
                }
                guard let after else { continue }
                let kept = before?.0 == after.internalID
                let oldTags = kept ? before!.1.tags : []
                let oldAttributes = kept ? before!.1.attributesJSON : nil
                if !kept {
                    batch.put(.ids, id.keyBytes, StoreKey.internalID(after.internalID))
                    liveCount += 1
                }
                let newTags = after.record.tags
                let newSet = Set(newTags)
                let oldSet = Set(oldTags)
                for tag in oldTags where !newSet.contains(tag) {
                    batch.delete(.postings, StoreKey.posting(tag: tag, internalID: after.internalID))
                    tagDeltas[tag, default: 0] -= 1
                }
                for tag in newTags where !oldSet.contains(tag) {
                    batch.put(.postings, StoreKey.posting(tag: tag, internalID: after.internalID), emptyValue)
                    tagDeltas[tag, default: 0] += 1
                }
                if !payloads.isEmpty {
                    let old = Self.payloadEntries(payloads, attributesJSON: oldAttributes, internalID: after.internalID)
                    let new = Self.payloadEntries(payloads, attributesJSON: after.record.attributesJSON, internalID: after.internalID)
                    for key in old.subtracting(new) { batch.delete(.postings, key) }
                    for key in new.subtracting(old) { batch.put(.postings, key, emptyValue) }
                }
                batch.put(.items, StoreKey.internalID(after.internalID), after.record.encoded())
                var versionsWritten: [UInt32] = []
                for (name, vector) in after.vectors {
                    let versionID = versions[name]!.versionID
                    VectorBytes.withBytes(vector) { batch.put(.vectors, StoreKey.vector(version: versionID, internalID: after.internalID), $0) }
                    versionsWritten.append(versionID)
                }
                // A kept item's record changed even when no message gave it a vector (never from the engine).
                entry.upserts.append((after.internalID, versionsWritten.sorted()))
                written.append((id, after.internalID, after.vectors))
            }
            try applyTagDeltas(tagDeltas, database: database, batch: batch)
            entry.deletes.sort()
            batch.put(.meta, StoreKey.nextInternalID, StoreKey.uint64(UInt64(nextID)))
            batch.put(.meta, StoreKey.liveCount, StoreKey.uint64(UInt64(max(0, liveCount))))
            if !entry.upserts.isEmpty || !entry.deletes.isEmpty {
                batch.put(.changelog, StoreKey.changeLog(database.latestSequence + 1), entry.encoded())
            }
            batch.put(.meta, StoreKey.streamAppliedThrough, StoreKey.uint64(last))
            defer { recordCache.invalidate(removed + written.map(\.internalID)) }
            try commit(batch, database)
            withState {
                $0.nextInternalID = nextID
                $0.liveCount = max(0, liveCount)
                $0.appliedStreamSequence = last
            }
            return StreamBatchResult(outcomes: outcomes, removedInternalIDs: removed, written: written)
        }
    }
    // MARK: Reads

    /// Records of external ids, in input order; nil for unknown ids.
    ///
    /// - Complexity: two batched RocksDB reads from one snapshot.
    public func get(_ ids: [ItemID]) throws(SteerError) -> [ItemRecord?] {
        try withDatabase { (database) throws(SteerError) -> [ItemRecord?] in
            if ids.isEmpty { return [] }
            let snapshot = database.createSnapshot()
            defer { database.release(snapshot) }
            let found = try database.multiGet(.ids, ids.map(\.keyBytes), snapshot: snapshot)
            var internalIDs: [Int64] = []
            var slots: [Int?] = []
            for raw in found {
                if let raw, let id = StoreKey.decodeInternalID(raw) {
                    slots.append(internalIDs.count)
                    internalIDs.append(id)
                } else {
                    slots.append(nil)
                }
            }
            let records = try readRecords(database, internalIDs, snapshot: snapshot)
            return slots.map { slot in slot.flatMap { records[$0] } }
        }
    }

    /// The internal id of an external id, or nil when the item does not exist.
    /// The internal ids of many items at once (nil for unknown ids), without reading their records.
    public func internalIDs(of ids: [ItemID]) throws(SteerError) -> [Int64?] {
        try withDatabase { (database) throws(SteerError) -> [Int64?] in
            try database.multiGet(.ids, ids.map(\.keyBytes)).enumerated().map { (index, raw) throws(SteerError) -> Int64? in
                guard let raw else { return nil }
                guard let internalID = StoreKey.decodeInternalID(raw) else {
                    throw SteerError(.corrupt, "internal id of \(ids[index]) is unreadable")
                }
                return internalID
            }
        }
    }

    public func internalID(of id: ItemID) throws(SteerError) -> Int64? {
        try withDatabase { (database) throws(SteerError) -> Int64? in
            guard let raw = try database.get(.ids, id.keyBytes) else { return nil }
            guard let internalID = StoreKey.decodeInternalID(raw) else {
                throw SteerError(.corrupt, "internal id of \(id) is unreadable")
            }
            return internalID
        }
    }

    /// The record with an internal id, or nil.
    public func record(internalID: Int64) throws(SteerError) -> ItemRecord? {
        try records(internalIDs: [internalID])[0]
    }

    /// Records of internal ids, in input order; nil for unknown ids. Used to hydrate search hits.
    ///
    /// - Complexity: one batched RocksDB read (`multi_get`).
    /// With `Options.recordCacheBytes` > 0 records come from memory when cached (never older than an
    /// acknowledged write; see `RecordCache`).
    public func records(internalIDs: [Int64]) throws(SteerError) -> [ItemRecord?] {
        try withDatabase { (database) throws(SteerError) -> [ItemRecord?] in
            guard recordCache.isEnabled else { return try readRecords(database, internalIDs, snapshot: nil) }
            var result = recordCache.lookup(internalIDs)
            var missing: [Int] = []
            for (position, record) in result.enumerated() where record == nil { missing.append(position) }
            if missing.isEmpty { return result }
            let epoch = recordCache.currentEpoch()
            let read = try readRecords(database, missing.map { internalIDs[$0] }, snapshot: nil)
            var fresh: [ItemRecord] = []
            fresh.reserveCapacity(read.count)
            for (slot, position) in missing.enumerated() {
                guard let record = read[slot] else { continue }
                result[position] = record
                fresh.append(record)
            }
            recordCache.insert(fresh, readEpoch: epoch)
            return result
        }
    }

    /// The record cache's counters.
    public var recordCacheStatistics: RecordCacheStatistics { recordCache.statistics }

    private func readRecords(_ database: RocksDatabase, _ internalIDs: [Int64], snapshot: OpaquePointer?) throws(SteerError) -> [ItemRecord?] {
        let raws = try database.multiGet(.items, internalIDs.map(StoreKey.internalID), snapshot: snapshot)
        var result: [ItemRecord?] = []
        result.reserveCapacity(raws.count)
        for (index, raw) in raws.enumerated() {
            guard let raw else {
                result.append(nil)
                continue
            }
            guard let record = StoredRecord(decoding: raw) else {
                throw SteerError(.corrupt, "record of internal id \(internalIDs[index]) is unreadable")
            }
            result.append(ItemRecord(id: record.id, internalID: internalIDs[index], title: record.title,
                                     tags: record.tags, attributesJSON: record.attributesJSON))
        }
        return result
    }

    /// One item's vector of one version, or nil when the item has none.
    ///
    /// - Throws: `.notFound` for an unknown version.
    public func vector(internalID: Int64, version: String) throws(SteerError) -> [Float]? {
        try vectors(internalIDs: [internalID], version: version)[0]
    }

    /// Vectors of one version for many internal ids, in input order; nil where an item has none.
    ///
    /// - Throws: `.notFound` for an unknown version.
    public func vectors(internalIDs: [Int64], version: String) throws(SteerError) -> [[Float]?] {
        try withDatabase { (database) throws(SteerError) -> [[Float]?] in
            let stored = try storedVersion(version)
            return try readVectors(database, internalIDs, stored, snapshot: nil)
        }
    }

    private func readVectors(_ database: RocksDatabase, _ internalIDs: [Int64], _ version: StoredVersion, snapshot: OpaquePointer?) throws(SteerError) -> [[Float]?] {
        let raws = try database.multiGet(.vectors, internalIDs.map { StoreKey.vector(version: version.versionID, internalID: $0) }, snapshot: snapshot)
        var result: [[Float]?] = []
        result.reserveCapacity(raws.count)
        for (index, raw) in raws.enumerated() {
            guard let raw else {
                result.append(nil)
                continue
            }
            guard raw.count == version.dimension * 4 else {
                throw SteerError(.corrupt, "vector of internal id \(internalIDs[index]) has \(raw.count) bytes, expected \(version.dimension * 4)")
            }
            result.append(VectorBytes.decode(raw))
        }
        return result
    }

    /// Internal ids of the live items carrying `tag`, sorted ascending.
    ///
    /// - Complexity: O(matches), one range scan of the postings.
    public func internalIDs(withTag tag: String) throws(SteerError) -> [Int64] {
        try withDatabase { (database) throws(SteerError) -> [Int64] in
            if tag.isEmpty || tag.utf8.contains(0) { return [] }
            var ids: [Int64] = []
            let prefixLength = tag.utf8.count + 1
            do {
                try database.scan(.postings, from: StoreKey.postingStart(tag: tag), to: StoreKey.postingEnd(tag: tag)) { key, _ in
                    if let id = StoreKey.decodeInternalID(key.dropFirst(prefixLength)) { ids.append(id) }
                    return true
                }
            } catch {
                throw Self.steerError(error)
            }
            return ids
        }
    }

    // MARK: Payload indexes

    /// The payload index keys of one item for every declared attribute.
    private static func payloadEntries(_ payloads: [String: PayloadKind], attributesJSON: String?, internalID: Int64) -> Set<[UInt8]> {
        guard attributesJSON != nil else { return [] }
        var attributes = FilterAttributes(json: attributesJSON)
        var keys = Set<[UInt8]>()
        for (name, kind) in payloads {
            keys.formUnion(PayloadKey.entries(kind, name, path: PayloadKey.declaredPath(name), attributes: &attributes, internalID: internalID))
        }
        return keys
    }

    /// Declared payload indexes: attribute path → kind.
    public var payloadIndexes: [String: PayloadKind] { withState { $0.payloads } }

    /// Declares a payload index on an attribute path and builds it over every existing item, in one
    /// `WriteBatch` with the declaration (all or nothing; writes wait meanwhile). From then on every
    /// upsert and delete maintains it in the item's own batch. Declaring it again with the same kind does
    /// nothing; with the other kind the old entries are replaced.
    ///
    /// - Returns: the number of index entries written.
    /// - Throws: `.invalidRequest` for a bad name or more than 64 declared attributes; `.corrupt` for an
    ///   unreadable record; RocksDB errors.
    /// - Complexity: O(items + their attribute bytes); the batch holds one key per (item, value).
    @discardableResult
    public func declarePayloadIndex(_ name: String, kind: PayloadKind) throws(SteerError) -> Int {
        try PayloadKey.validate(name)
        return try withWriter { (database) throws(SteerError) -> Int in
            let declared = withState { $0.payloads }
            if declared[name] == kind { return 0 }
            guard declared[name] != nil || declared.count < PayloadKey.maxDeclared else {
                throw SteerError.invalid("at most \(PayloadKey.maxDeclared) payload indexes can be declared")
            }
            let batch = WriteBatch(database)
            let emptyValue: [UInt8] = []
            if let previous = declared[name] {
                let prefix = PayloadKey.prefix(previous, name)
                do {
                    try database.scan(.postings, from: prefix, to: PayloadKey.end(prefix)) { key, _ in
                        batch.delete(.postings, Array(key))
                        return true
                    }
                } catch {
                    throw Self.steerError(error)
                }
            }
            let path = PayloadKey.declaredPath(name)
            var written = 0
            do {
                try database.scan(.items, from: [], to: nil) { key, value in
                    guard let id = StoreKey.decodeInternalID(key), let record = StoredRecord(decoding: Array(value)) else {
                        throw SteerError(.corrupt, "an item record is unreadable")
                    }
                    guard record.attributesJSON != nil else { return true }
                    var attributes = FilterAttributes(json: record.attributesJSON)
                    for entry in PayloadKey.entries(kind, name, path: path, attributes: &attributes, internalID: id) {
                        batch.put(.postings, entry, emptyValue)
                        written += 1
                    }
                    return true
                }
            } catch {
                throw Self.steerError(error)
            }
            batch.put(.meta, PayloadKey.declaration(name), [kind.rawValue])
            replayPending.withLock { $0 = true }
            defer { replayPending.withLock { $0 = false } }
            try database.write(batch)
            payloadColumns.declare(name, kind: kind)
            payloadColumns.apply(batch.payloadChanges)
            tagPostings.apply(tags: batch.tagChanges, items: batch.itemChanges)
            withState { $0.payloads[name] = kind }
            return written
        }
    }

    /// Internal ids (ascending, no repeats) of the items a payload index says meet `query` on attribute
    /// `name`; nil when `name` has no payload index or its kind cannot answer `query`.
    ///
    /// - Complexity: O(matching entries), one range scan per value or range.
    public func internalIDs(payload name: String, _ query: PayloadQuery) throws(SteerError) -> [Int64]? {
        guard let kind = payloadIndexes[name], let ranges = PayloadKey.ranges(kind, name, query) else { return nil }
        return try withDatabase { (database) throws(SteerError) -> [Int64] in
            var ids = Set<Int64>()
            do {
                for (start, end) in ranges {
                    try database.scan(.postings, from: start, to: end) { key, _ in
                        if let id = StoreKey.decodeInternalID(key.suffix(8)) { ids.insert(id) }
                        return true
                    }
                }
            } catch {
                throw Self.steerError(error)
            }
            return ids.sorted()
        }
    }

    /// Visits every live item's record (internal id, tags, attributes JSON) in internal-id order from one
    /// snapshot: what a filter over attributes without a payload index reads.
    ///
    /// - Parameter body: called once per item; it must not call `close()`.
    /// - Returns: the number of records visited.
    /// - Throws: `.corrupt` for an unreadable record; RocksDB read errors; what `body` throws.
    /// - Complexity: O(items + their record bytes).
    public func scanRecords(_ body: (_ internalID: Int64, _ tags: [String], _ attributesJSON: String?) throws(SteerError) -> Void) throws(SteerError) -> Int {
        try withDatabase { (database) throws(SteerError) -> Int in
            let (snapshot, _) = self.snapshot(database)
            defer { database.release(snapshot) }
            var visited = 0
            do {
                try database.scan(.items, from: [], to: nil, snapshot: snapshot) { key, value in
                    guard let id = StoreKey.decodeInternalID(key), let record = StoredRecord(decoding: Array(value)) else {
                        throw SteerError(.corrupt, "an item record is unreadable")
                    }
                    visited += 1
                    try body(id, record.tags, record.attributesJSON)
                    return true
                }
            } catch {
                throw Self.steerError(error)
            }
            return visited
        }
    }

    /// Internal ids of every live item, ascending, from one snapshot.
    ///
    /// - Complexity: O(items), one scan of the `items` keys.
    public func liveInternalIDs() throws(SteerError) -> [Int64] {
        try withDatabase { (database) throws(SteerError) -> [Int64] in
            var ids: [Int64] = []
            ids.reserveCapacity(withState { $0.liveCount })
            do {
                try database.scan(.items, from: [], to: nil) { key, _ in
                    guard let id = StoreKey.decodeInternalID(key) else { throw SteerError(.corrupt, "an item key is unreadable") }
                    ids.append(id)
                    return true
                }
            } catch {
                throw Self.steerError(error)
            }
            return ids
        }
    }

    /// The number of live items carrying each tag.
    ///
    /// - Complexity: O(distinct tags); counts are maintained by every write.
    public func tagCounts() throws(SteerError) -> [String: Int] {
        try withDatabase { (database) throws(SteerError) -> [String: Int] in
            var counts: [String: Int] = [:]
            do {
                try database.scan(.meta, from: StoreKey.tagCountPrefix, to: StoreKey.tagCountEnd) { key, value in
                    let tag = String(decoding: key.dropFirst(StoreKey.tagCountPrefix.count), as: UTF8.self)
                    counts[tag] = Int(StoreKey.decodeUInt64(Array(value)) ?? 0)
                    return true
                }
            } catch {
                throw Self.steerError(error)
            }
            return counts
        }
    }

    /// The store's identity (a random UUID written when it was created, or by the first writable open of
    /// an older store); generation manifests and `index/index.json` record it so that an index built from
    /// another store is refused. nil only for an older store opened read-only.
    public var storeID: String? { withState { $0.storeID } }

    /// The number of live items (0 once closed).
    public var count: Int { withState { $0.liveCount } }

    /// The sequence number of the last committed write (0 once closed).
    public var latestSequence: UInt64 {
        (try? withDatabase { $0.latestSequence }) ?? 0
    }

    /// Bytes held by RocksDB's memtables (active and immutable, every column family): writes not yet
    /// flushed to SST files. It grows with writes up to the write buffers' size, then drops at a flush;
    /// resident memory growth under a write load is mostly this. 0 once closed.
    public var memtableBytes: Int {
        Int(clamping: (try? withDatabase { $0.integerProperty("rocksdb.cur-size-all-mem-tables") }) ?? 0)
    }

    // MARK: Index builds

    /// Iterates every vector of one version from a consistent snapshot, in internal-id order, in batches.
    ///
    /// - Parameters:
    ///   - version: the embedding version to read.
    ///   - batchSize: most vectors per call of `body` (at least 1).
    ///   - body: gets internal ids and their vectors concatenated row-major (`ids.count * dimension`).
    ///     It may read and write the store (writes are not seen by this scan) but must not call `close()`.
    /// - Returns: the snapshot's sequence number: the scan contains exactly the writes with sequence <= it.
    /// - Throws: `.notFound` for an unknown version, RocksDB read errors, or what `body` throws.
    public func scanVectors(version: String, batchSize: Int = 4096, _ body: (_ internalIDs: [Int64], _ vectors: [Float]) throws -> Void) throws -> UInt64 {
        let batchSize = max(1, batchSize)
        return try lifecycle.withReadLock { () throws -> UInt64 in
            guard let database else { throw SteerError(.unavailable, "the item store at '\(options.path)' is closed") }
            let stored = try storedVersion(version)
            let (snapshot, sequence) = self.snapshot(database)
            defer { database.release(snapshot) }
            var ids: [Int64] = []
            var values: [Float] = []
            ids.reserveCapacity(batchSize)
            values.reserveCapacity(batchSize * stored.dimension)
            let rowBytes = stored.dimension * 4
            try database.scan(.vectors, from: StoreKey.versionPrefix(stored.versionID),
                              to: StoreKey.versionPrefix(stored.versionID + 1), snapshot: snapshot) { key, value in
                guard let id = StoreKey.decodeInternalID(key.dropFirst(4)), value.count == rowBytes else {
                    throw SteerError(.corrupt, "vector entry of version '\(version)' is unreadable")
                }
                ids.append(id)
                VectorBytes.append(value, to: &values)
                if ids.count == batchSize {
                    try body(ids, values)
                    ids.removeAll(keepingCapacity: true)
                    values.removeAll(keepingCapacity: true)
                }
                return true
            }
            if !ids.isEmpty { try body(ids, values) }
            return sequence
        }
    }

    /// Writes after `sequence` that touch `version`: upserted internal ids that wrote a vector of that
    /// version, with their current vector, and deleted internal ids. Used to replay writes made during an
    /// index build.
    ///
    /// Read from the `changelog` family and a snapshot. An id upserted and then deleted appears only in
    /// `deletes`; `deletes` may hold ids that never had a vector of this version (removing them must be a
    /// no-op for the caller).
    ///
    /// - Parameters:
    ///   - sequence: usually the value `scanVectors` returned.
    ///   - version: the embedding version.
    /// - Returns: upserts sorted by internal id, deletes sorted ascending, and the sequence the result is
    ///   complete up to (pass it as `sequence` next time).
    /// - Throws: `.notFound` for an unknown version, or when changes after `sequence` were already trimmed.
    public func changes(since sequence: UInt64, version: String) throws(SteerError) -> (upserts: [(Int64, [Float])], deletes: [Int64], sequence: UInt64) {
        try withDatabase { (database) throws(SteerError) -> (upserts: [(Int64, [Float])], deletes: [Int64], sequence: UInt64) in
            let stored = try storedVersion(version)
            let trimmed = withState { $0.trimmedThrough }
            guard sequence >= trimmed else {
                throw SteerError.notFound("changes since sequence \(sequence) were trimmed (the change log starts after \(trimmed)); rebuild from scanVectors")
            }
            let (snapshot, latest) = self.snapshot(database)
            defer { database.release(snapshot) }
            var upserted = Set<Int64>()
            var deleted = Set<Int64>()
            if sequence < latest {
                do {
                    try database.scan(.changelog, from: StoreKey.changeLog(sequence + 1), to: nil, snapshot: snapshot) { _, value in
                        guard let entry = ChangeLogEntry(decoding: Array(value)) else {
                            throw SteerError(.corrupt, "change-log entry is unreadable")
                        }
                        for upsert in entry.upserts where upsert.versionIDs.contains(stored.versionID) {
                            upserted.insert(upsert.internalID)
                        }
                        for id in entry.deletes {
                            upserted.remove(id)
                            deleted.insert(id)
                        }
                        return true
                    }
                } catch {
                    throw Self.steerError(error)
                }
            }
            let ids = upserted.sorted()
            let vectors = try readVectors(database, ids, stored, snapshot: snapshot)
            var upserts: [(Int64, [Float])] = []
            upserts.reserveCapacity(ids.count)
            for (id, vector) in zip(ids, vectors) {
                if let vector { upserts.append((id, vector)) }
            }
            return (upserts, deleted.sorted(), latest)
        }
    }

    /// Deletes change-log entries of batches with sequence <= `sequence`; afterwards `changes(since:)`
    /// refuses any earlier sequence.
    ///
    /// - Parameter sequence: typically the sequence of the oldest index build still replaying changes.
    public func trimChangeLog(upTo sequence: UInt64) throws(SteerError) {
        try withWriter { (database) throws(SteerError) in
            let trimmed = withState { $0.trimmedThrough }
            guard sequence > trimmed else { return }
            let bound = min(sequence, database.latestSequence)
            let batch = WriteBatch(database)
            batch.deleteRange(.changelog, from: StoreKey.changeLog(0), to: StoreKey.changeLog(bound + 1))
            batch.put(.meta, StoreKey.changeLogTrimmedThrough, StoreKey.uint64(bound))
            try commit(batch, database)
            withState { $0.trimmedThrough = bound }
        }
    }
}
