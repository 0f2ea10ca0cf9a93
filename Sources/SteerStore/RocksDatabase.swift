import CRocksDB
import Foundation
import SteerCore

/// The column families of a Steer store, in the order they are opened.
///
/// RocksDB requires the `default` family to be opened; Steer keeps nothing in it. `events` holds user
/// histories (`UserHistoryStore`); a store written before it existed gains it at its first writable open.
enum Family: Int, CaseIterable {
    case `default`, meta, ids, items, vectors, postings, changelog, events

    var name: String {
        switch self {
        case .default: return "default"
        case .meta: return "meta"
        case .ids: return "ids"
        case .items: return "items"
        case .vectors: return "vectors"
        case .postings: return "postings"
        case .changelog: return "changelog"
        case .events: return "events"
        }
    }
}

/// Turns a RocksDB `errptr` into a `SteerError` and frees it.
private func takeError(_ errptr: UnsafeMutablePointer<CChar>?, _ context: String) -> SteerError? {
    guard let errptr else { return nil }
    let message = String(cString: errptr)
    rocksdb_free(errptr)
    let code: SteerError.Code = message.hasPrefix("Corruption") ? .corrupt : .io
    return SteerError(code, "\(context): \(message)")
}

/// One owner for an open RocksDB database and its column-family handles; freed in `close()`.
///
/// `@unchecked Sendable`: RocksDB's `DB` is thread-safe for concurrent reads and writes, the handles
/// and option objects are only read after `init`, and `ItemStore` guarantees `close()` runs while no
/// other call is in flight (its lifecycle lock).
final class RocksDatabase: @unchecked Sendable {
    private let db: OpaquePointer
    /// One per `Family` case, by raw value; nil only for a family a read-only open did not find on disk.
    private let handles: [OpaquePointer?]
    private let options: OpaquePointer
    private let writeOptions: OpaquePointer
    private let defaultReadOptions: OpaquePointer
    private var isClosed = false
    /// Opened with `rocksdb_open_for_read_only_column_families`: writes are refused before RocksDB sees them.
    private let readOnly: Bool

    /// Opens (or creates) the database at `path` with every family in `Family` plus any `extraFamilies`
    /// already on disk (RocksDB refuses to open a database without naming all of its families).
    /// With `readOnly`, the database is opened without its lock, beside a process that may be writing it;
    /// a family of `Family` that is not on disk then stays closed (`has(_:)` is false: reads of it find
    /// nothing), since a read-only open cannot create one.
    init(path: String, create: Bool, syncWrites: Bool, extraFamilies: [String], readOnly: Bool = false) throws(SteerError) {
        let options = rocksdb_options_create()!
        rocksdb_options_set_create_if_missing(options, create ? 1 : 0)
        rocksdb_options_set_create_missing_column_families(options, 1)
        // Point-in-time recovery: WAL replay stops at the first torn record, so a batch cut short by a
        // crash is dropped whole and nothing after it is applied.
        rocksdb_options_set_wal_recovery_mode(options, 2)
        rocksdb_options_set_keep_log_file_num(options, 4)
        // One budget for the memtables of all families together: past it RocksDB flushes the largest.
        // Without it each of the 7 families may hold up to two 64 MiB write buffers before flushing.
        rocksdb_options_set_db_write_buffer_size(options, Self.memtableBudgetBytes)

        var ours = Family.allCases
        if readOnly {
            let onDisk = Set(try Self.listFamilies(path: path))
            ours = ours.filter { onDisk.contains($0.name) }
        }
        let names = ours.map(\.name) + extraFamilies
        var cNames: [UnsafePointer<CChar>?] = names.map { UnsafePointer(strdup($0)) }
        defer { for name in cNames { free(UnsafeMutableRawPointer(mutating: name)) } }
        let familyOptions: [OpaquePointer?] = Array(repeating: options, count: names.count)
        var rawHandles = [OpaquePointer?](repeating: nil, count: names.count)
        var errptr: UnsafeMutablePointer<CChar>?
        let opened = cNames.withUnsafeMutableBufferPointer { namesBuffer in
            familyOptions.withUnsafeBufferPointer { optionsBuffer in
                rawHandles.withUnsafeMutableBufferPointer { handlesBuffer in
                    readOnly
                        ? rocksdb_open_for_read_only_column_families(
                            options, path, Int32(names.count), namesBuffer.baseAddress, optionsBuffer.baseAddress,
                            handlesBuffer.baseAddress, 0, &errptr)
                        : rocksdb_open_column_families(
                            options, path, Int32(names.count), namesBuffer.baseAddress, optionsBuffer.baseAddress,
                            handlesBuffer.baseAddress, &errptr)
                }
            }
        }
        if let error = takeError(errptr, "cannot open the item store at \(path)") {
            rocksdb_options_destroy(options)
            throw error
        }
        guard let opened else {
            rocksdb_options_destroy(options)
            throw SteerError(.io, "cannot open the item store at \(path)")
        }
        self.db = opened
        self.readOnly = readOnly
        var handles = [OpaquePointer?](repeating: nil, count: Family.allCases.count)
        for (position, family) in ours.enumerated() { handles[family.rawValue] = rawHandles[position] }
        self.handles = handles
        self.extraHandles = rawHandles.dropFirst(ours.count).compactMap { $0 }
        self.options = options
        self.writeOptions = rocksdb_writeoptions_create()
        rocksdb_writeoptions_set_sync(writeOptions, syncWrites ? 1 : 0)
        self.defaultReadOptions = rocksdb_readoptions_create()
    }

    /// Writes a RocksDB checkpoint of the open database to `path` (which must not exist): a consistent
    /// copy of every column family as of one moment, memtables flushed first, SST files hard-linked when
    /// `path` is on the same file system.
    ///
    /// - Throws: `.io` when RocksDB cannot create it.
    func checkpoint(to path: String) throws(SteerError) {
        var errptr: UnsafeMutablePointer<CChar>?
        let checkpoint = rocksdb_checkpoint_object_create(db, &errptr)
        if let error = takeError(errptr, "cannot start a checkpoint of the item store") { throw error }
        guard let checkpoint else { throw SteerError(.io, "cannot start a checkpoint of the item store") }
        defer { rocksdb_checkpoint_object_destroy(checkpoint) }
        rocksdb_checkpoint_create(checkpoint, path, 0, &errptr)
        if let error = takeError(errptr, "cannot write a checkpoint of the item store to \(path)") { throw error }
    }

    /// Column-family names of the database at `path`, or nil when there is none to list.
    static func listFamilies(path: String) throws(SteerError) -> [String] {
        let options = rocksdb_options_create()
        defer { rocksdb_options_destroy(options) }
        var count = 0
        var errptr: UnsafeMutablePointer<CChar>?
        let list = rocksdb_list_column_families(options, path, &count, &errptr)
        if let error = takeError(errptr, "cannot list the column families of \(path)") { throw error }
        guard let list else { return [] }
        defer { rocksdb_list_column_families_destroy(list, count) }
        return (0..<count).compactMap { list[$0].map { String(cString: $0) } }
    }

    /// Handles of the families Steer does not know (opened because RocksDB requires it, never used).
    private let extraHandles: [OpaquePointer]

    /// The handle of an open family; only `has(family)` families may be passed (every family when the
    /// database is writable).
    func handle(_ family: Family) -> OpaquePointer {
        guard let handle = handles[family.rawValue] else { preconditionFailure("column family \(family.name) is not open") }
        return handle
    }

    /// Whether `family` is open (always, unless a read-only open found a store without it).
    func has(_ family: Family) -> Bool { handles[family.rawValue] != nil }

    /// Most bytes all memtables together hold before RocksDB flushes one (`db_write_buffer_size`).
    static let memtableBudgetBytes = 64 << 20

    /// The sequence number of the last committed write.
    var latestSequence: UInt64 { rocksdb_get_latest_sequence_number(db) }

    /// An integer RocksDB property summed over every column family (e.g.
    /// `rocksdb.cur-size-all-mem-tables`); families that do not report it count 0.
    func integerProperty(_ name: String) -> UInt64 {
        var total: UInt64 = 0
        for handle in handles.compactMap({ $0 }) {
            var value: UInt64 = 0
            if rocksdb_property_int_cf(db, handle, name, &value) == 0 { total &+= value }
        }
        return total
    }

    /// Closes the database and frees every handle. Idempotent.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        for handle in handles.compactMap({ $0 }) + extraHandles { rocksdb_column_family_handle_destroy(handle) }
        rocksdb_close(db)
        rocksdb_readoptions_destroy(defaultReadOptions)
        rocksdb_writeoptions_destroy(writeOptions)
        rocksdb_options_destroy(options)
    }

    deinit { close() }

    // MARK: Snapshots

    /// A consistent read view; release it with `release(_:)`.
    func createSnapshot() -> OpaquePointer { rocksdb_create_snapshot(db) }

    func release(_ snapshot: OpaquePointer) { rocksdb_release_snapshot(db, snapshot) }

    private func withReadOptions<T, E: Error>(
        snapshot: OpaquePointer?, upperBound: [UInt8]? = nil, _ body: (OpaquePointer) throws(E) -> T
    ) throws(E) -> T {
        if snapshot == nil && upperBound == nil { return try body(defaultReadOptions) }
        let readOptions = rocksdb_readoptions_create()!
        // RocksDB keeps a pointer to the bound: it must live until the iterator is destroyed.
        var boundBuffer: UnsafeMutablePointer<CChar>?
        defer {
            rocksdb_readoptions_destroy(readOptions)
            boundBuffer?.deallocate()
        }
        if let snapshot { rocksdb_readoptions_set_snapshot(readOptions, snapshot) }
        if let upperBound {
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(upperBound.count, 1))
            upperBound.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(buffer).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
            }
            boundBuffer = buffer
            rocksdb_readoptions_set_iterate_upper_bound(readOptions, buffer, upperBound.count)
        }
        return try body(readOptions)
    }

    // MARK: Reads

    /// The value stored under `key`, copied out (RocksDB values are not aligned), or nil.
    func get(_ family: Family, _ key: [UInt8], snapshot: OpaquePointer? = nil) throws(SteerError) -> [UInt8]? {
        try multiGet(family, [key], snapshot: snapshot)[0]
    }

    /// Values for many keys of one family in one call, in key order; nil where a key is absent.
    func multiGet(_ family: Family, _ keys: [[UInt8]], snapshot: OpaquePointer? = nil) throws(SteerError) -> [[UInt8]?] {
        if keys.isEmpty { return [] }
        if !has(family) { return Array(repeating: nil, count: keys.count) }
        // One contiguous buffer for all keys, so every key pointer stays valid during the call.
        var joined: [UInt8] = []
        joined.reserveCapacity(keys.reduce(0) { $0 + $1.count })
        var sizes: [Int] = []
        sizes.reserveCapacity(keys.count)
        for key in keys {
            joined.append(contentsOf: key)
            sizes.append(key.count)
        }
        let count = keys.count
        var values = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
        var valueSizes = [Int](repeating: 0, count: count)
        var errors = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
        let families = [OpaquePointer?](repeating: handle(family), count: count)
        withReadOptions(snapshot: snapshot) { readOptions in
            joined.withUnsafeBufferPointer { joinedBuffer in
                let base = UnsafeRawPointer(joinedBuffer.baseAddress ?? UnsafePointer(bitPattern: 1)!)
                var keyPointers: [UnsafePointer<CChar>?] = []
                keyPointers.reserveCapacity(count)
                var offset = 0
                for size in sizes {
                    keyPointers.append((base + offset).assumingMemoryBound(to: CChar.self))
                    offset += size
                }
                rocksdb_multi_get_cf(
                    db, readOptions, families, count, keyPointers, sizes, &values, &valueSizes, &errors)
            }
        }
        var firstError: SteerError?
        var results: [[UInt8]?] = []
        results.reserveCapacity(count)
        for index in 0..<count {
            if let error = takeError(errors[index], "read from \(family.name) failed") {
                firstError = firstError ?? error
            }
            if let value = values[index] {
                results.append(Array(UnsafeRawBufferPointer(start: value, count: valueSizes[index])))
                rocksdb_free(value)
            } else {
                results.append(nil)
            }
        }
        if let firstError { throw firstError }
        return results
    }

    /// Visits keys in `[start, end)` of one family in key order. `body` gets views valid only for the
    /// call; it returns false to stop early.
    func scan(
        _ family: Family, from start: [UInt8], to end: [UInt8]?, snapshot: OpaquePointer? = nil,
        _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        if !has(family) { return }
        try withReadOptions(snapshot: snapshot, upperBound: end) { readOptions throws in
            let iterator = rocksdb_create_iterator_cf(db, readOptions, handle(family))!
            defer { rocksdb_iter_destroy(iterator) }
            start.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { rocksdb_iter_seek(iterator, $0.baseAddress, $0.count) }
            }
            while rocksdb_iter_valid(iterator) != 0 {
                var keyLength = 0
                var valueLength = 0
                let key = rocksdb_iter_key(iterator, &keyLength)
                let value = rocksdb_iter_value(iterator, &valueLength)
                let keep = try body(
                    UnsafeRawBufferPointer(start: key, count: keyLength),
                    UnsafeRawBufferPointer(start: value, count: valueLength))
                if !keep { break }
                rocksdb_iter_next(iterator)
            }
            var errptr: UnsafeMutablePointer<CChar>?
            rocksdb_iter_get_error(iterator, &errptr)
            if let error = takeError(errptr, "scan of \(family.name) failed") { throw error }
        }
    }

    /// Visits keys of one family that start with `prefix`, in descending key order, beginning at the
    /// greatest key below `end` (`end` must be above every key with the prefix). `body` gets views valid
    /// only for the call; it returns false to stop early.
    func scanBackward(
        _ family: Family, prefix: [UInt8], below end: [UInt8],
        _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        if !has(family) { return }
        let iterator = rocksdb_create_iterator_cf(db, defaultReadOptions, handle(family))!
        defer { rocksdb_iter_destroy(iterator) }
        end.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { rocksdb_iter_seek_for_prev(iterator, $0.baseAddress, $0.count) }
        }
        while rocksdb_iter_valid(iterator) != 0 {
            var keyLength = 0
            var valueLength = 0
            let key = UnsafeRawBufferPointer(start: rocksdb_iter_key(iterator, &keyLength), count: keyLength)
            guard key.count >= prefix.count, key.prefix(prefix.count).elementsEqual(prefix) else { break }
            // `seek_for_prev` lands on `end` itself when that key exists: it is not below `end`.
            if key.elementsEqual(end) {
                rocksdb_iter_prev(iterator)
                continue
            }
            let value = rocksdb_iter_value(iterator, &valueLength)
            if !(try body(key, UnsafeRawBufferPointer(start: value, count: valueLength))) { break }
            rocksdb_iter_prev(iterator)
        }
        var errptr: UnsafeMutablePointer<CChar>?
        rocksdb_iter_get_error(iterator, &errptr)
        if let error = takeError(errptr, "scan of \(family.name) failed") { throw error }
    }

    /// Compacts the keys in `[start, end)` of one family down to the last level, the bottommost level
    /// included, so that data deleted there leaves the SST files (a flush of the family's memtable comes
    /// first when it overlaps the range). Synchronous; errors are not reported by RocksDB's C API.
    func compactRange(_ family: Family, from start: [UInt8], to end: [UInt8]) {
        guard !readOnly, has(family) else { return }
        let options = rocksdb_compactoptions_create()!
        defer { rocksdb_compactoptions_destroy(options) }
        // 2 = BottommostLevelCompaction::kForce.
        rocksdb_compactoptions_set_bottommost_level_compaction(options, 2)
        start.withUnsafeBufferPointer { startBuffer in
            end.withUnsafeBufferPointer { endBuffer in
                startBuffer.withMemoryRebound(to: CChar.self) { startChars in
                    endBuffer.withMemoryRebound(to: CChar.self) { endChars in
                        rocksdb_compact_range_cf_opt(db, handle(family), options, startChars.baseAddress, startChars.count,
                                                     endChars.baseAddress, endChars.count)
                    }
                }
            }
        }
    }

    // MARK: Writes

    /// Applies a batch atomically; with `syncWrites` the WAL is fsynced before this returns.
    func write(_ batch: WriteBatch) throws(SteerError) {
        if readOnly { throw SteerError.invalid("the item store is open read-only") }
        var errptr: UnsafeMutablePointer<CChar>?
        rocksdb_write(db, writeOptions, batch.pointer, &errptr)
        if let error = takeError(errptr, "write failed") { throw error }
    }
}

/// An owned `rocksdb_writebatch_t`: puts and deletes collected here are applied all at once.
final class WriteBatch {
    let pointer: OpaquePointer
    private let database: RocksDatabase

    init(_ database: RocksDatabase) {
        self.pointer = rocksdb_writebatch_create()
        self.database = database
    }

    deinit { rocksdb_writebatch_destroy(pointer) }

    /// Number of operations collected so far.
    var count: Int { Int(rocksdb_writebatch_count(pointer)) }

    /// Payload index keys (`postings` keys starting with 0x00, see `PayloadKey`) put (true) or deleted
    /// (false), in batch order: `ItemStore` replays them onto its `PayloadColumns` once the batch is written.
    private(set) var payloadChanges: [(put: Bool, key: [UInt8])] = []
    /// Tag posting keys (`postings` keys not starting with 0x00) put (true) or deleted (false), and the
    /// `items` keys (internal ids) put or deleted, in batch order: `ItemStore` replays them onto its
    /// `TagPostings` once the batch is written.
    private(set) var tagChanges: [(put: Bool, key: [UInt8])] = []
    private(set) var itemChanges: [(put: Bool, key: [UInt8])] = []

    /// Notes a put or delete of a key that an in-memory copy mirrors.
    private func record(_ put: Bool, _ family: Family, _ key: [UInt8]) {
        switch family {
        case .postings: if key.first == 0 { payloadChanges.append((put, key)) } else { tagChanges.append((put, key)) }
        case .items: itemChanges.append((put, key))
        default: break
        }
    }

    func put(_ family: Family, _ key: [UInt8], _ value: UnsafeRawBufferPointer) {
        record(true, family, key)
        // An empty value (postings) may have no base address: hand RocksDB a real pointer, length 0.
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 1) { empty in
            key.withUnsafeBytes { keyBytes in
                rocksdb_writebatch_put_cf(
                    pointer, database.handle(family),
                    keyBytes.baseAddress?.assumingMemoryBound(to: CChar.self), keyBytes.count,
                    value.baseAddress?.assumingMemoryBound(to: CChar.self) ?? UnsafePointer(empty.baseAddress!),
                    value.count)
            }
        }
    }

    func put(_ family: Family, _ key: [UInt8], _ value: [UInt8]) {
        value.withUnsafeBytes { put(family, key, $0) }
    }

    func delete(_ family: Family, _ key: [UInt8]) {
        record(false, family, key)
        key.withUnsafeBytes { keyBytes in
            rocksdb_writebatch_delete_cf(
                pointer, database.handle(family),
                keyBytes.baseAddress?.assumingMemoryBound(to: CChar.self), keyBytes.count)
        }
    }

    /// Deletes every key in `[start, end)`. Not for `postings` or `items`: their in-memory copies
    /// (`PayloadColumns`, `TagPostings`) replay single puts and deletes only.
    func deleteRange(_ family: Family, from start: [UInt8], to end: [UInt8]) {
        precondition(family != .postings && family != .items, "deleteRange on a family mirrored in memory")
        start.withUnsafeBytes { startBytes in
            end.withUnsafeBytes { endBytes in
                rocksdb_writebatch_delete_range_cf(
                    pointer, database.handle(family),
                    startBytes.baseAddress?.assumingMemoryBound(to: CChar.self), startBytes.count,
                    endBytes.baseAddress?.assumingMemoryBound(to: CChar.self), endBytes.count)
            }
        }
    }
}
