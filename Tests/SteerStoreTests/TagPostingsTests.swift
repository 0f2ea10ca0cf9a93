import Foundation
import SteerCore
import Testing
@testable import SteerStore

/// `TagPostings`: the in-memory tag postings and live ids equal the RocksDB postings and item keys
/// after every write path (upsert, delete, re-upsert with other tags, stream batches with parts, a
/// reopen), through sparse ↔ dense changes, and their bytes follow the live postings.
@Suite struct TagPostingsTests {
    private typealias Write = ItemStore.ItemWrite

    private static func open(_ path: String) throws -> ItemStore {
        let store = try ItemStore(options: .init(path: path, syncWrites: false))
        if store.version(named: "v1") == nil { try store.createVersion("v1", dimension: 2) }
        return store
    }

    /// Tags of very different sizes; "é" precomposed and decomposed are equal Swift strings but distinct
    /// tags in RocksDB (their UTF-8 differs), and must stay distinct in memory.
    static let pool = ["common", "half", "rare", "x", "y", "z", "\u{E9}", "e\u{301}", "tag with spaces", "日本"]

    private static func randomTags(_ generator: inout SeededGenerator) -> [String] {
        var tags: [String] = []
        if Int.random(in: 0..<10, using: &generator) < 9 { tags.append("common") }
        if Bool.random(using: &generator) { tags.append("half") }
        if Int.random(in: 0..<50, using: &generator) == 0 { tags.append("rare") }
        for tag in pool.dropFirst(3) where Int.random(in: 0..<6, using: &generator) == 0 { tags.append(tag) }
        return tags
    }

    private static func write(_ id: Int64, _ generator: inout SeededGenerator) -> Write {
        Write(id: .int(id), tags: randomTags(&generator), vectors: ["v1": [Float(id), 1]])
    }

    /// Every pool tag, a few unions and the live set, from memory and from RocksDB.
    private static func check(_ store: ItemStore, _ label: String, _ generator: inout SeededGenerator) throws {
        for tag in pool + ["absent"] {
            let memory = try #require(store.tagBits(anyOf: [tag]), "\(label): in-memory postings unusable")
            #expect(memory.labels == (try store.internalIDs(withTag: tag)), "\(label): tag \(tag)")
        }
        for _ in 0..<5 {
            let group = pool.filter { _ in Bool.random(using: &generator) }
            var expected = Set<Int64>()
            for tag in group { expected.formUnion(try store.internalIDs(withTag: tag)) }
            #expect(Set(try #require(store.tagBits(anyOf: group)).labels) == expected, "\(label): union of \(group)")
        }
        #expect(try #require(store.liveBits()).labels == (try store.liveInternalIDs()), "\(label): live ids")
        #expect(store.replayedSequence == store.latestSequence, "\(label): nothing pending")
    }

    @Test func memoryEqualsRocksDBThroughEveryWritePathAndReopen() throws {
        let path = NSTemporaryDirectory() + "steer-tag-postings-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: path) }
        var generator = SeededGenerator(seed: 91)
        var nextID: Int64 = 0
        var stream: UInt64 = 0
        do {
            let store = try Self.open(path)
            defer { store.close() }
            _ = try store.upsert((0..<2000).map { Self.write($0, &generator) })
            nextID = 2000
            try Self.check(store, "first upsert", &generator)
            for round in 0..<6 {
                // Re-upserts with other tags (inside sparse and dense postings), new items, deletes.
                var batch = (0..<300).map { _ in Int64.random(in: 0..<nextID, using: &generator) }
                batch = Array(Set(batch))
                _ = try store.upsert(batch.map { Self.write($0, &generator) } + [Self.write(nextID, &generator)])
                nextID += 1
                try Self.check(store, "round \(round) re-upsert", &generator)
                _ = try store.delete((0..<200).map { _ in .int(Int64.random(in: 0..<nextID, using: &generator)) })
                try Self.check(store, "round \(round) delete", &generator)
                // A stream batch: upserts, deletes and re-upserts of the same ids (new internal ids), and
                // a message of several parts.
                let ids = (0..<40).map { _ in Int64.random(in: 0..<nextID, using: &generator) }
                stream += 1
                let first = stream
                stream += 1
                let messages: [(sequence: UInt64, write: ItemStore.StreamWrite)] = [
                    (first, .upsert(Array(Set(ids)).map { Self.write($0, &generator) })),
                    (stream, .delete(ids.prefix(20).map { .int($0) })),
                    (stream, .upsert(Array(Set(ids.prefix(10))).map { Self.write($0, &generator) } + [Self.write(nextID, &generator)])),
                ]
                nextID += 1
                _ = try store.applyStream(parts: messages)
                try Self.check(store, "round \(round) stream", &generator)
            }
            // Most items lose "common": the dense posting turns sparse, and back.
            let live = try store.liveInternalIDs()
            let records = try store.records(internalIDs: live)
            _ = try store.upsert(records.compactMap { $0 }.map { Write(id: $0.id, tags: $0.tags.filter { $0 != "common" }, vectors: [:]) })
            try Self.check(store, "common removed", &generator)
            #expect(try store.internalIDs(withTag: "common").isEmpty)
            _ = try store.upsert(records.compactMap { $0 }.prefix(1500).map { Write(id: $0.id, tags: $0.tags + ["common"], vectors: [:]) })
            try Self.check(store, "common back", &generator)
        }
        let reopened = try Self.open(path)
        defer { reopened.close() }
        try Self.check(reopened, "reopened", &generator)
        // Writes after the reopen are replayed onto what the scan loaded.
        _ = try reopened.upsert((0..<50).map { Self.write(Int64($0) * 7, &generator) })
        _ = try reopened.delete((0..<50).map { .int(Int64($0) * 11) })
        try Self.check(reopened, "reopened and written", &generator)
    }

    @Test func bytesFollowTheLivePostings() throws {
        let path = NSTemporaryDirectory() + "steer-tag-postings-bytes-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try Self.open(path)
        defer { store.close() }
        let empty = store.tagPostingBytes
        // 1000 distinct tags on 1000 items: each costs its per-tag estimate and bytes.
        _ = try store.upsert((0..<1000).map { Write(id: .int(Int64($0)), tags: ["t\($0)"], vectors: ["v1": [1, 1]]) })
        let distinct = store.tagPostingBytes
        #expect(distinct >= empty + 1000 * TagPostings.bytesPerTag)
        // One tag on every item instead: the distinct tags are dropped, the one tag is a bitset.
        _ = try store.upsert((0..<1000).map { Write(id: .int(Int64($0)), tags: ["all"], vectors: [:]) })
        let shared = store.tagPostingBytes
        #expect(shared < distinct / 10, "\(shared) vs \(distinct)")
        // Deleting every item frees the postings (the live set's words stay allocated).
        _ = try store.delete((0..<1000).map { .int(Int64($0)) })
        #expect(store.tagPostingBytes < shared)
        #expect(try store.internalIDs(withTag: "all").isEmpty && store.tagBits(anyOf: ["all"])?.isEmpty == true)
        store.close()
        #expect(store.tagBits(anyOf: ["all"]) == nil && store.liveBits() == nil, "closed: the caller reads RocksDB (and fails)")
    }

    @Test func mergeAndSettle() {
        #expect(TagPostings.merge([1, 3, 5, 7], adding: [0, 4, 9], removing: [3, 7, 8]) == [0, 1, 4, 5, 9])
        #expect(TagPostings.merge([], adding: [2], removing: [1]) == [2])
        #expect(TagPostings.merge([2], adding: [2], removing: []) == [2])
        // 200 postings below 64 × 3 internal ids: dense; 2 of them: sparse.
        guard case .dense(let bits, let count) = TagPostings.settle(.sparse((0..<200).map { UInt32($0) })) else {
            Issue.record("200 postings in 4 words stayed sparse"); return
        }
        #expect(count == 200 && bits.count == 200)
        guard case .sparse(let ids) = TagPostings.settle(.dense(LabelBitset([5, 1000]), count: 2)) else {
            Issue.record("2 postings in 16 words stayed dense"); return
        }
        #expect(ids == [5, 1000])
        #expect(TagPostings.decode(Array("ab".utf8) + [0] + StoreKey.internalID(7))! == (Array("ab".utf8)[...], 7))
        #expect(TagPostings.decode([0] + StoreKey.internalID(7)) == nil, "an empty tag")
        #expect(TagPostings.decode(Array("a".utf8) + [0, 0] + StoreKey.internalID(7)) == nil, "a NUL in the tag")
        #expect(TagPostings.decode(Array("a".utf8) + [0] + StoreKey.internalID(-1)) == nil, "a negative id")
    }

    /// An internal id past the bitsets cannot be held: the postings say so (nil) rather than answer
    /// without it, and filters read RocksDB.
    @Test func anIDPastTheBitsetsMakesThePostingsUnusable() {
        let postings = TagPostings()
        #expect(postings.apply(tags: [(true, Array("a".utf8) + [0] + StoreKey.internalID(3))], items: [(true, StoreKey.internalID(3))]))
        #expect(postings.bits(anyOf: ["a"])?.labels == [3] && postings.liveBits()?.labels == [3])
        #expect(!postings.apply(tags: [(true, Array("a".utf8) + [0] + StoreKey.internalID(TagPostings.maxLabels))], items: []))
        #expect(postings.bits(anyOf: ["a"]) == nil && postings.liveBits() == nil)
    }
}
