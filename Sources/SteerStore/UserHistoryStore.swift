import Foundation
import SteerCore

/// Per-user event histories kept in the item store's RocksDB database (`ItemStore.histories`), so they
/// share its write-ahead log, its durability switch and its lifetime.
///
/// ## On-disk layout (column family `events`)
/// `U` is the user's `ItemID.keyBytes` (0x01 + i64, or 0x02 + UTF-8), `len(U)` its length as a
/// big-endian u16; the length prefix keeps one user's keys from being a prefix range of another's.
///
/// | key | value |
/// |---|---|
/// | 0x01 · len(U) · U | events stored, u64 · next arrival number, u64 · created, u64 (big-endian; `created` absent in histories written before it existed: 0) |
/// | 0x02 · len(U) · U · timestamp (i64, sign bit flipped, big-endian) · arrival (u64 big-endian) | kind length, u8 · kind UTF-8 · the item's `keyBytes` |
///
/// `created` is the store's sequence number after the write that started this history (the first event
/// after the user was new or deleted), so a history deleted and started again has a larger `created`
/// while its arrival numbers restart at 0: (`created`, arrival) identifies an event for incremental
/// exports (`HistoryPosition`, `steer export --since`).
///
/// Key order is therefore (user, timestamp, arrival): a history reads oldest first with one range scan,
/// and events of one timestamp keep their order of arrival. Items are stored by external id and need not
/// exist in the catalog (an event may name an item ingested later).
///
/// ## Cap
/// A user keeps at most `maxEventsPerUser` events (`ItemStore.Options.maxEventsPerUser`, default 200):
/// the write that goes past it deletes the oldest events (by timestamp, then arrival) in the same batch,
/// so the cap holds after every acknowledged write. An event older than all of the most recent
/// `maxEventsPerUser` is counted as dropped and never written. A lowered cap applies to a user at the
/// next write for that user; reads take the most recent events only.
///
/// ## Durability
/// Every `record` call is one RocksDB `WriteBatch` (all users and all events of the call, plus the cap's
/// deletes and the counters): all or nothing, also across a crash. With `ItemStore.Options.syncWrites`
/// (the same switch as items) the WAL is fsynced before `record` returns, so an acknowledged event
/// survives a process kill and a machine crash; without it a process kill still loses nothing.
/// `deleteUser` deletes the user's keys in one batch, then compacts their key ranges down to the last
/// level, so the events leave the SST files at once; write-ahead-log files that still hold them are
/// deleted by RocksDB once every memtable they cover is flushed (at most `RocksDatabase.memtableBudgetBytes`
/// of later writes, or the next restart).
///
/// ## Threading
/// A value type over the store; any thread. Writers of one user are serialised by one of
/// `lockStripes` locks (the stripe is a hash of the user's key bytes): counters and the cap are a
/// read-modify-write. A call for several users takes their stripes in ascending order, so calls never
/// deadlock. History batches never take the item writer lock: they touch only the `events` family, so
/// recording events neither waits for nor delays item upserts. Reads take no lock (RocksDB reads see
/// whole batches). Every call holds the store's lifecycle lock shared, like the item calls.
public struct UserHistoryStore: Sendable {
    /// Writer lock stripes (see "Threading").
    static let lockStripes = 64
    /// Largest allowed per-user cap.
    public static let maxEventsPerUserLimit = UserEvent.maxEventsPerUserLimit

    let store: ItemStore

    /// Most events kept per user.
    public var maxEventsPerUser: Int { store.options.maxEventsPerUser }

    /// What `record` did.
    public struct RecordResult: Sendable, Equatable {
        /// Events written and still stored after the cap.
        public var recorded: Int
        /// Events removed or never written because of the per-user cap (older events first).
        public var dropped: Int
        /// The store's sequence number after the batch.
        public var sequence: UInt64
    }

    // MARK: Keys

    private static let metaTag: UInt8 = 0x01
    private static let eventTag: UInt8 = 0x02

    private static func userPart(_ tag: UInt8, _ user: [UInt8]) -> [UInt8] {
        var writer = ByteWriter()
        writer.append(tag)
        writer.append(bigEndian: UInt16(user.count))
        writer.append(bytes: user)
        return writer.bytes
    }

    static func metaKey(_ user: [UInt8]) -> [UInt8] { userPart(metaTag, user) }
    static func eventPrefix(_ user: [UInt8]) -> [UInt8] { userPart(eventTag, user) }

    /// Above every event key of the user: the prefix followed by more 0xFF bytes than an event key has.
    static func eventEnd(_ user: [UInt8]) -> [UInt8] { eventPrefix(user) + [UInt8](repeating: 0xFF, count: 17) }

    static func eventKey(_ user: [UInt8], timestamp: Int64, arrival: UInt64) -> [UInt8] {
        var writer = ByteWriter()
        writer.append(bytes: eventPrefix(user))
        writer.append(bigEndian: UInt64(bitPattern: timestamp) ^ (1 << 63))
        writer.append(bigEndian: arrival)
        return writer.bytes
    }

    private static func eventValue(item: ItemID, kind: String) -> [UInt8] {
        var writer = ByteWriter()
        writer.append(UInt8(kind.utf8.count))
        writer.append(bytes: kind.utf8)
        writer.append(bytes: item.keyBytes)
        return writer.bytes
    }

    /// Decodes an event's key suffix (timestamp, arrival) and value; nil when unreadable.
    private static func decodeEvent(keySuffix: some Collection<UInt8>, value: some Collection<UInt8>) -> StoredEvent? {
        var keyReader = ByteReader(Array(keySuffix))
        guard let time = keyReader.read(bigEndian: UInt64.self), let arrival = keyReader.read(bigEndian: UInt64.self),
              keyReader.isAtEnd
        else { return nil }
        let bytes = Array(value)
        var reader = ByteReader(bytes)
        guard let length = reader.readByte(), let kindBytes = reader.readBytes(Int(length)),
              let kind = String(validating: kindBytes, as: UTF8.self),
              let itemBytes = reader.readBytes(bytes.count - 1 - Int(length)),
              let item = ItemID(keyBytes: itemBytes)
        else { return nil }
        return StoredEvent(item: item, kind: kind, timestampMillis: Int64(bitPattern: time ^ (1 << 63)), arrival: arrival)
    }

    /// The counters of a user's history; nil for a user without one.
    private static func decodeMeta(_ raw: [UInt8]?) throws(SteerError) -> (count: UInt64, position: HistoryPosition)? {
        guard let raw else { return nil }
        var reader = ByteReader(raw)
        guard let count = reader.read(bigEndian: UInt64.self), let next = reader.read(bigEndian: UInt64.self) else {
            throw SteerError(.corrupt, "a user's history counters are unreadable")
        }
        let created = reader.isAtEnd ? 0 : reader.read(bigEndian: UInt64.self)
        guard let created, reader.isAtEnd else { throw SteerError(.corrupt, "a user's history counters are unreadable") }
        return (count, HistoryPosition(created: created, nextArrival: next))
    }

    private static func meta(count: UInt64, position: HistoryPosition) -> [UInt8] {
        var writer = ByteWriter()
        writer.append(bigEndian: count)
        writer.append(bigEndian: position.nextArrival)
        writer.append(bigEndian: position.created)
        return writer.bytes
    }

    /// The lock stripe of a user (FNV-1a of its key bytes).
    static func stripe(_ user: [UInt8]) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in user {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return Int(hash % UInt64(lockStripes))
    }

    /// Checks a user id (`ItemID.validate`, with messages naming `field`).
    public static func validate(user: UserID, field: String = "user") throws(SteerError) {
        do {
            try user.validate()
        } catch {
            throw SteerError(error.code, "\(field): \(error.message)")
        }
    }

    // MARK: Writes

    /// Records events, each in its user's history, in one atomic batch.
    ///
    /// - Parameter events: events of any users in any order; at most `ItemStore.Options.maxBatchItems`.
    ///   Events of one user and one timestamp are stored in the order given.
    /// - Parameter streamSequence: the write log's sequence of these events, stored in the same batch
    ///   (`ItemStore.commitHistory`); nil outside a write log.
    /// - Returns: how many events are stored and how many the cap dropped (see "Cap").
    /// - Throws: `.invalidRequest` for an empty kind, a read-only store, too many events or a stream
    ///   sequence not above the stored one; `.tooLarge`
    ///   for an over-long kind or id (checked for every event before anything is written); store errors.
    public func record(_ events: [UserEvent], streamSequence: UInt64? = nil) throws(SteerError) -> RecordResult {
        guard !store.options.readOnly else { throw SteerError.invalid("the item store is open read-only") }
        guard events.count <= store.options.maxBatchItems else {
            throw SteerError(.tooLarge, "\(events.count) events in one call, limit is \(store.options.maxBatchItems)")
        }
        // Validate everything first, then group by user (first appearance order).
        var order: [[UInt8]] = []
        var groups: [[UInt8]: [UserEvent]] = [:]
        for (index, event) in events.enumerated() {
            try Self.validate(user: event.user, field: "events[\(index)].user")
            do {
                try event.item.validate()
            } catch {
                throw SteerError(error.code, "events[\(index)].item: \(error.message)")
            }
            let kindBytes = event.kind.utf8.count
            guard kindBytes > 0 else { throw SteerError.invalid("events[\(index)].kind must not be empty") }
            guard kindBytes <= UserEvent.maxKindBytes else {
                throw SteerError(.tooLarge, "events[\(index)].kind is \(kindBytes) bytes, limit is \(UserEvent.maxKindBytes)")
            }
            let key = event.user.keyBytes
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(event)
        }
        if events.isEmpty {
            if let streamSequence { try store.recordStreamSequence(streamSequence) }
            return RecordResult(recorded: 0, dropped: 0, sequence: store.latestSequence)
        }
        let cap = UInt64(maxEventsPerUser)
        let locks = Set(order.map(Self.stripe)).sorted().map { store.historyLocks[$0] }
        return try store.withDatabase { (database) throws(SteerError) -> RecordResult in
            for lock in locks { lock.lock() }
            defer { for lock in locks.reversed() { lock.unlock() } }
            let batch = WriteBatch(database)
            var recorded = 0
            var dropped = 0
            let metas = try database.multiGet(.events, order.map(Self.metaKey))
            for (user, rawMeta) in zip(order, metas) {
                let stored = try Self.decodeMeta(rawMeta)
                let count = stored?.count ?? 0
                // A new history: `created` is the sequence this batch commits at or after.
                let created = stored?.position.created ?? database.latestSequence + 1
                var next = stored?.position.nextArrival ?? 0
                var fresh: [(key: [UInt8], value: [UInt8])] = []
                for event in groups[user] ?? [] {
                    fresh.append((Self.eventKey(user, timestamp: event.timestampMillis, arrival: next),
                                  Self.eventValue(item: event.item, kind: event.kind)))
                    next += 1
                }
                fresh.sort { $0.key.lexicographicallyPrecedes($1.key) }
                let total = count + UInt64(fresh.count)
                let excess = total > cap ? Int(total - cap) : 0
                // The `excess` oldest of (stored ∪ fresh) go: read only as many stored keys as could be among them.
                var oldest: [[UInt8]] = []
                if excess > 0 {
                    do {
                        try database.scan(.events, from: Self.eventPrefix(user), to: Self.eventEnd(user)) { key, _ in
                            oldest.append(Array(key))
                            return oldest.count < excess
                        }
                    } catch {
                        throw ItemStore.steerError(error)
                    }
                }
                var storedNext = 0
                var freshNext = 0
                for _ in 0..<excess {
                    if storedNext < oldest.count,
                       freshNext >= fresh.count || oldest[storedNext].lexicographicallyPrecedes(fresh[freshNext].key) {
                        batch.delete(.events, oldest[storedNext])
                        storedNext += 1
                    } else {
                        freshNext += 1
                    }
                }
                for entry in fresh[freshNext...] { batch.put(.events, entry.key, entry.value) }
                recorded += fresh.count - freshNext
                dropped += excess
                let position = HistoryPosition(created: created, nextArrival: next)
                batch.put(.events, Self.metaKey(user), Self.meta(count: total - UInt64(excess), position: position))
            }
            try store.commitHistory(batch, database: database, streamSequence: streamSequence)
            return RecordResult(recorded: recorded, dropped: dropped, sequence: database.latestSequence)
        }
    }

    /// Deletes a user's whole history (events and counters), then compacts the deleted key ranges so
    /// the data leaves the SST files (see "Durability").
    ///
    /// - Parameter streamSequence: as for `record`.
    /// - Returns: how many events were deleted (0 for an unknown user).
    /// - Throws: `.invalidRequest` for a bad id, a read-only store or a stream sequence not above the
    ///   stored one; store errors.
    public func deleteUser(_ user: UserID, streamSequence: UInt64? = nil) throws(SteerError) -> Int {
        guard !store.options.readOnly else { throw SteerError.invalid("the item store is open read-only") }
        try Self.validate(user: user)
        let key = user.keyBytes
        let lock = store.historyLocks[Self.stripe(key)]
        return try store.withDatabase { (database) throws(SteerError) -> Int in
            let metaKey = Self.metaKey(key)
            let deleted = try { () throws(SteerError) -> UInt64 in
                lock.lock()
                defer { lock.unlock() }
                let count = try Self.decodeMeta(try database.get(.events, metaKey))?.count ?? 0
                let batch = WriteBatch(database)
                batch.deleteRange(.events, from: Self.eventPrefix(key), to: Self.eventEnd(key))
                batch.delete(.events, metaKey)
                try store.commitHistory(batch, database: database, streamSequence: streamSequence)
                return count
            }()
            database.compactRange(.events, from: Self.eventPrefix(key), to: Self.eventEnd(key))
            database.compactRange(.events, from: metaKey, to: metaKey + [0x00])
            return Int(clamping: deleted)
        }
    }

    // MARK: Reads

    /// The user's most recent events, oldest first.
    ///
    /// - Parameter limit: most events returned (the most recent ones); nil: all stored.
    /// - Complexity: O(events returned): one backward range scan.
    /// - Throws: `.invalidRequest` for a bad id; `.corrupt` for an unreadable event; store errors.
    public func events(of user: UserID, limit: Int? = nil) throws(SteerError) -> [StoredEvent] {
        try Self.validate(user: user)
        let wanted = limit ?? Int.max
        guard wanted > 0 else { return [] }
        let key = user.keyBytes
        let prefix = Self.eventPrefix(key)
        return try store.withDatabase { (database) throws(SteerError) -> [StoredEvent] in
            var newestFirst: [StoredEvent] = []
            do {
                try database.scanBackward(.events, prefix: prefix, below: Self.eventEnd(key)) { key, value in
                    guard let event = Self.decodeEvent(keySuffix: key.dropFirst(prefix.count), value: value) else {
                        throw SteerError(.corrupt, "an event of user \(user) is unreadable")
                    }
                    newestFirst.append(event)
                    return newestFirst.count < wanted
                }
            } catch {
                throw ItemStore.steerError(error)
            }
            return newestFirst.reversed()
        }
    }

    /// The items of the user's most recent `limit` events, oldest first (repeats kept).
    public func recentItems(of user: UserID, limit: Int) throws(SteerError) -> [ItemID] {
        try events(of: user, limit: limit).map(\.item)
    }

    /// How many events the user has stored (0 for an unknown user).
    public func eventCount(of user: UserID) throws(SteerError) -> Int {
        try Self.validate(user: user)
        return try store.withDatabase { (database) throws(SteerError) -> Int in
            Int(clamping: try Self.decodeMeta(try database.get(.events, Self.metaKey(user.keyBytes)))?.count ?? 0)
        }
    }

    /// Visits every user with a stored history in key order (the order of `forEachEvent`), with the
    /// history's position, for incremental exports.
    ///
    /// - Parameter body: gets the user and its position; returns false to stop.
    /// - Throws: `.corrupt` for an unreadable key or counters; what `body` throws; store errors.
    public func forEachPosition(_ body: (_ user: UserID, _ position: HistoryPosition) throws(SteerError) -> Bool) throws(SteerError) {
        try store.withDatabase { (database) throws(SteerError) in
            do {
                try database.scan(.events, from: [Self.metaTag], to: [Self.metaTag + 1]) { key, value in
                    guard key.count >= 3 else { throw SteerError(.corrupt, "a history key is unreadable") }
                    let length = Int(key[1]) << 8 | Int(key[2])
                    guard key.count == 3 + length, let user = UserID(keyBytes: key[3...]),
                          let meta = try Self.decodeMeta(Array(value))
                    else { throw SteerError(.corrupt, "a history key is unreadable") }
                    return try body(user, meta.position)
                }
            } catch {
                throw ItemStore.steerError(error)
            }
        }
    }

    /// Visits every stored event in key order (users in key-byte order, each oldest first), for exports.
    ///
    /// - Parameter body: gets the user and the event; returns false to stop.
    /// - Throws: `.corrupt` for an unreadable key or event; what `body` throws; store errors.
    public func forEachEvent(_ body: (_ user: UserID, _ event: StoredEvent) throws(SteerError) -> Bool) throws(SteerError) {
        try store.withDatabase { (database) throws(SteerError) in
            do {
                try database.scan(.events, from: [Self.eventTag], to: [Self.eventTag + 1]) { key, value in
                    guard key.count >= 3 + 16 else { throw SteerError(.corrupt, "an event key is unreadable") }
                    let length = Int(key[1]) << 8 | Int(key[2])
                    guard key.count == 3 + length + 16, let user = UserID(keyBytes: key[3..<(3 + length)]),
                          let event = Self.decodeEvent(keySuffix: key.dropFirst(3 + length), value: value)
                    else { throw SteerError(.corrupt, "an event key or value is unreadable") }
                    return try body(user, event)
                }
            } catch {
                throw ItemStore.steerError(error)
            }
        }
    }
}
