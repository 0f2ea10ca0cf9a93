import SteerCore
import Synchronization

/// An in-memory cache of item records by internal id, in front of the store's `items` column family.
///
/// Search hydration reads the title and tags of every hit; from RocksDB that costs a batched `multi_get`
/// with block decompression (tens of µs per search, docs/benchmarks.md), from memory a dictionary lookup.
///
/// **Coherence.** A reader takes `epoch` before it reads RocksDB and inserts what it read only if the
/// epoch is unchanged, checked under the shard's lock. A writer commits its batch, then advances the
/// epoch, then removes the ids it wrote. A value read before a commit is therefore either inserted
/// before the epoch moved (and removed by the writer afterwards) or not inserted at all: the cache
/// never keeps a record older than an acknowledged write. Absent records (unknown or deleted ids) are
/// never cached.
///
/// **Bound.** Each record is charged an estimate of its heap size; a shard over its share of
/// `capacityBytes` drops entries (in the dictionary's hash order, i.e. pseudo-randomly) until it fits.
final class RecordCache: Sendable {
    private struct Shard {
        var records: [Int64: ItemStore.ItemRecord] = [:]
        var bytes = 0
    }

    private final class LockedShard: Sendable {
        let mutex = Mutex(Shard())
        func withLock<T>(_ body: (inout Shard) -> T) -> T { mutex.withLock { body(&$0) } }
    }

    private static let shardCount = 16
    private let shards: [LockedShard]
    private let epoch = Atomic<UInt64>(0)
    private let hitCount = Atomic<Int>(0)
    private let missCount = Atomic<Int>(0)
    let capacityBytes: Int
    private let shardCapacity: Int

    /// - Parameter capacityBytes: the estimated heap size the records may take; 0 disables the cache.
    init(capacityBytes: Int) {
        self.capacityBytes = max(0, capacityBytes)
        shardCapacity = self.capacityBytes / Self.shardCount
        shards = (0..<Self.shardCount).map { _ in LockedShard() }
    }

    var isEnabled: Bool { capacityBytes > 0 }

    private func shard(_ internalID: Int64) -> Int { Int(UInt64(bitPattern: internalID) % UInt64(Self.shardCount)) }

    /// The estimated heap cost of one cached record (dictionary slot, strings and arrays).
    static func cost(_ record: ItemStore.ItemRecord) -> Int {
        var bytes = 96
        if case .string(let text) = record.id { bytes += text.utf8.count }
        bytes += record.title?.utf8.count ?? 0
        for tag in record.tags { bytes += 24 + tag.utf8.count }
        bytes += record.attributesJSON?.utf8.count ?? 0
        return bytes
    }

    /// The epoch to pass to `insert` for values about to be read from RocksDB.
    func currentEpoch() -> UInt64 { epoch.load(ordering: .acquiring) }

    /// Cached records in input order (nil where not cached), counting hits and misses.
    func lookup(_ internalIDs: [Int64]) -> [ItemStore.ItemRecord?] {
        var found: [ItemStore.ItemRecord?] = []
        found.reserveCapacity(internalIDs.count)
        var hits = 0
        for id in internalIDs {
            let record = shards[shard(id)].withLock { $0.records[id] }
            if record != nil { hits += 1 }
            found.append(record)
        }
        if hits > 0 { hitCount.add(hits, ordering: .relaxed) }
        if hits < internalIDs.count { missCount.add(internalIDs.count - hits, ordering: .relaxed) }
        return found
    }

    /// Inserts records read from RocksDB after `currentEpoch()` returned `readEpoch`; does nothing when a
    /// write has committed since (its value may be newer than the one read).
    func insert(_ records: [ItemStore.ItemRecord], readEpoch: UInt64) {
        guard isEnabled else { return }
        for record in records {
            let cost = Self.cost(record)
            if cost > shardCapacity { continue }
            shards[shard(record.internalID)].withLock { shard in
                guard epoch.load(ordering: .acquiring) == readEpoch else { return }
                if let old = shard.records.updateValue(record, forKey: record.internalID) {
                    shard.bytes -= Self.cost(old)
                }
                shard.bytes += cost
                while shard.bytes > shardCapacity, let victim = shard.records.first {
                    shard.records.removeValue(forKey: victim.key)
                    shard.bytes -= Self.cost(victim.value)
                }
            }
        }
    }

    /// Called after a write batch committed (or failed): advances the epoch, then drops `internalIDs`.
    func invalidate(_ internalIDs: [Int64]) {
        guard isEnabled else { return }
        epoch.add(1, ordering: .sequentiallyConsistent)
        for id in internalIDs {
            shards[shard(id)].withLock { shard in
                if let old = shard.records.removeValue(forKey: id) { shard.bytes -= Self.cost(old) }
            }
        }
    }

    /// Drops everything (the store closed).
    func removeAll() {
        epoch.add(1, ordering: .sequentiallyConsistent)
        for shard in shards { shard.withLock { $0 = Shard() } }
    }

    /// Hits, misses, entries and estimated bytes, for `stats`.
    var statistics: ItemStore.RecordCacheStatistics {
        var entries = 0
        var bytes = 0
        for shard in shards {
            shard.withLock { shard in
                entries += shard.records.count
                bytes += shard.bytes
            }
        }
        return ItemStore.RecordCacheStatistics(capacityBytes: capacityBytes, bytes: bytes, entries: entries,
                                               hits: hitCount.load(ordering: .relaxed), misses: missCount.load(ordering: .relaxed))
    }
}
