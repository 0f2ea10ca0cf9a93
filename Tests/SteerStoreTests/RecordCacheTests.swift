import Foundation
import SteerCore
import Synchronization
import Testing
@testable import SteerStore

private typealias Write = ItemStore.ItemWrite

/// Opens a store with a record cache of `cacheBytes` in a temporary directory, with a 2-d version `v1`.
private func withCachedStore<T>(cacheBytes: Int = 1 << 20, _ body: (ItemStore) throws -> T) throws -> T {
    let path = NSTemporaryDirectory() + "steer-record-cache-test-" + UUID().uuidString
    defer { try? FileManager.default.removeItem(atPath: path) }
    let store = try ItemStore(options: .init(path: path, syncWrites: false, recordCacheBytes: cacheBytes))
    defer { store.close() }
    try store.createVersion("v1", dimension: 2)
    return try body(store)
}

@Suite struct RecordCacheTests {
    @Test func cachedRecordsEqualStoredOnesAndCountHits() throws {
        try withCachedStore { store in
            let ids = try store.upsert((0..<50).map {
                Write(id: .int(Int64($0)), title: "item \($0)", tags: ["t\($0 % 3)"], attributesJSON: #"{"n":\#($0)}"#, vectors: ["v1": [1, 0]])
            }).internalIDs
            let first = try store.records(internalIDs: ids)
            #expect(store.recordCacheStatistics.misses == 50)
            #expect(store.recordCacheStatistics.hits == 0)
            let second = try store.records(internalIDs: ids)
            #expect(second == first)
            #expect(store.recordCacheStatistics.hits == 50)
            #expect(store.recordCacheStatistics.entries == 50)
            // The same answers as the store without a cache, read through `get`.
            #expect(try store.get((0..<50).map { .int(Int64($0)) }) == first)
            #expect(first[7]?.title == "item 7" && first[7]?.tags == ["t1"] && first[7]?.attributesJSON == #"{"n":7}"#)
        }
    }

    @Test func writesReplaceAndDeletesRemoveCachedRecords() throws {
        try withCachedStore { store in
            let ids = try store.upsert([Write(id: .string("a"), title: "old", tags: ["x"], vectors: ["v1": [1, 0]]),
                                        Write(id: .string("b"), title: "keep", vectors: ["v1": [0, 1]])]).internalIDs
            _ = try store.records(internalIDs: ids) // cached now
            _ = try store.upsert([Write(id: .string("a"), title: "new", tags: ["y"], vectors: ["v1": [1, 0]])])
            let afterUpsert = try store.records(internalIDs: ids)
            #expect(afterUpsert[0]?.title == "new" && afterUpsert[0]?.tags == ["y"])
            #expect(afterUpsert[1]?.title == "keep")
            _ = try store.delete([.string("a")])
            let afterDelete = try store.records(internalIDs: ids)
            #expect(afterDelete[0] == nil)
            #expect(afterDelete[1]?.title == "keep")
            // Absent records are not cached: the deleted id misses again.
            let misses = store.recordCacheStatistics.misses
            _ = try store.records(internalIDs: [ids[0]])
            #expect(store.recordCacheStatistics.misses == misses + 1)
        }
    }

    @Test func theCacheStaysWithinItsBound() throws {
        // 16 shards of 1 KiB: room for a handful of ~150-byte records per shard.
        try withCachedStore(cacheBytes: 16 * 1024) { store in
            let ids = try store.upsert((0..<2000).map {
                Write(id: .int(Int64($0)), title: String(repeating: "t", count: 40), tags: ["tag"], vectors: ["v1": [1, 0]])
            }).internalIDs
            let records = try store.records(internalIDs: ids)
            #expect(records.allSatisfy { $0 != nil })
            let statistics = store.recordCacheStatistics
            #expect(statistics.bytes <= 16 * 1024)
            #expect(statistics.entries > 0 && statistics.entries < 2000)
            // Every answer is still right, cached or not.
            #expect(try store.records(internalIDs: ids).map { $0?.id } == (0..<2000).map { ItemID.int(Int64($0)) })
        }
    }

    @Test func aDisabledCacheReadsEveryRecordFromTheStore() throws {
        try withCachedStore(cacheBytes: 0) { store in
            let ids = try store.upsert([Write(id: .int(1), title: "one", vectors: ["v1": [1, 0]])]).internalIDs
            _ = try store.records(internalIDs: ids)
            _ = try store.records(internalIDs: ids)
            #expect(store.recordCacheStatistics == .init(capacityBytes: 0, bytes: 0, entries: 0, hits: 0, misses: 0))
        }
    }

    @Test func readersRacingAWriterNeverKeepAnOlderRecordThanTheLastWrite() throws {
        // Readers hydrate the same ids over and over while a writer renames them round after round. After
        // each acknowledged write every read must see that round or a later one, never an older one
        // (a reader that read before the write and cached afterwards would bring the old title back).
        // Plain threads: readers that never suspend would starve a writer task on the cooperative pool.
        try withCachedStore { store in
            let count = 64
            let ids = try store.upsert((0..<count).map { Write(id: .int(Int64($0)), title: "0", vectors: ["v1": [1, 0]]) }).internalIDs
            let acknowledged = Counter()
            let stop = Counter()
            let stale = Counter()
            let failures = Counter()
            let readers = DispatchGroup()
            for _ in 0..<3 {
                readers.enter()
                Thread.detachNewThread {
                    defer { readers.leave() }
                    while stop.value == 0 {
                        let floor = acknowledged.value
                        guard let records = try? store.records(internalIDs: ids) else {
                            failures.add(1)
                            return
                        }
                        for record in records {
                            if let title = record?.title, let round = Int(title), round < floor { stale.add(1) }
                        }
                    }
                }
            }
            for round in 1...300 {
                _ = try store.upsert((0..<count).map { Write(id: .int(Int64($0)), title: String(round), vectors: ["v1": [1, 0]]) })
                acknowledged.set(round)
            }
            stop.set(1)
            readers.wait()
            #expect(failures.value == 0)
            #expect(stale.value == 0)
            #expect(try store.records(internalIDs: ids).allSatisfy { $0?.title == "300" })
            #expect(store.recordCacheStatistics.hits > 0)
        }
    }
}

private final class Counter: Sendable {
    private let atomic = Atomic<Int>(0)
    var value: Int { atomic.load(ordering: .sequentiallyConsistent) }
    func set(_ value: Int) { atomic.store(value, ordering: .sequentiallyConsistent) }
    func add(_ value: Int) { atomic.add(value, ordering: .sequentiallyConsistent) }
}
