import Foundation
import SteerCore
import Testing
@testable import SteerStore

/// `stream_applied_through`: the write-log sequence stored in the items' own batch (ItemStore,
/// "Stream sequence").
@Suite struct StreamSequenceTests {
    private typealias Write = ItemStore.ItemWrite

    private static func open(_ path: String) throws -> ItemStore {
        let store = try ItemStore(options: .init(path: path, syncWrites: false))
        try store.createVersion("v1", dimension: 4)
        return store
    }

    @Test func theSequenceIsStoredWithTheWritesAndSurvivesReopening() throws {
        let path = NSTemporaryDirectory() + "steer-stream-seq-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let store = try Self.open(path)
            defer { store.close() }
            #expect(store.appliedStreamSequence == 0)
            _ = try store.upsert([Write(id: .int(1), title: "a", tags: ["x"], vectors: ["v1": [1, 2, 3, 4]])], streamSequence: 1)
            #expect(store.appliedStreamSequence == 1)
            // A plain write (no stream) leaves it alone.
            _ = try store.upsert([Write(id: .int(2), title: "b", tags: [], vectors: ["v1": [1, 1, 1, 1]])])
            #expect(store.appliedStreamSequence == 1)
            // Gaps are allowed (a refused message elsewhere); a delete of unknown ids still records it.
            let none = try store.delete([.int(99)], streamSequence: 5)
            #expect(none.deleted.isEmpty)
            #expect(store.appliedStreamSequence == 5)
            _ = try store.delete([.int(2)], streamSequence: 6)
            _ = try store.upsert([], streamSequence: 7)
            try store.recordStreamSequence(8)
            #expect(store.appliedStreamSequence == 8)
        }
        let reopened = try Self.open(path)
        defer { reopened.close() }
        #expect(reopened.appliedStreamSequence == 8)
        #expect(try reopened.get([.int(1)]).first??.title == "a")
        #expect(try reopened.get([.int(2)]).first! == nil)
    }

    @Test func aSequenceNotAboveTheStoredOneIsRefusedAndWritesNothing() throws {
        let path = NSTemporaryDirectory() + "steer-stream-seq-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try Self.open(path)
        defer { store.close() }
        _ = try store.upsert([Write(id: .int(1), title: "first", tags: [], vectors: ["v1": [1, 2, 3, 4]])], streamSequence: 3)
        let before = store.latestSequence
        for repeated in [UInt64(3), 2, 0] {
            #expect(throws: SteerError.self) {
                _ = try store.upsert([Write(id: .int(1), title: "again", tags: [], vectors: ["v1": [4, 3, 2, 1]])], streamSequence: repeated)
            }
            #expect(throws: SteerError.self) { _ = try store.delete([.int(1)], streamSequence: repeated) }
            #expect(throws: SteerError.self) { try store.recordStreamSequence(repeated) }
        }
        #expect(store.latestSequence == before)
        #expect(try store.get([.int(1)]).first??.title == "first")
        #expect(store.appliedStreamSequence == 3)
    }

    @Test func anInvalidBatchLeavesTheSequenceWhereItWas() throws {
        let path = NSTemporaryDirectory() + "steer-stream-seq-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try Self.open(path)
        defer { store.close() }
        _ = try store.upsert([Write(id: .int(1), title: nil, tags: [], vectors: ["v1": [1, 2, 3, 4]])], streamSequence: 1)
        #expect(throws: SteerError.self) {
            _ = try store.upsert([Write(id: .int(2), title: nil, tags: [], vectors: ["v1": [1, 2, 3]])], streamSequence: 2)
        }
        #expect(store.appliedStreamSequence == 1)
        #expect(try store.get([.int(2)]).first! == nil)
    }

    // MARK: Batches (`applyStream`)

    private typealias Message = (sequence: UInt64, write: ItemStore.StreamWrite)

    /// Everything a reader can see of the store, for comparing two stores.
    private static func contents(_ store: ItemStore, ids: [ItemID]) throws -> String {
        let records = try store.get(ids)
        let internalIDs = records.compactMap { $0?.internalID }
        let vectors = try store.vectors(internalIDs: internalIDs, version: "v1")
        var lines = records.map { record in
            guard let record else { return "nil" }
            return "\(record.id) \(record.internalID) \(record.title ?? "-") \(record.tags) \(record.attributesJSON ?? "-")"
        }
        lines.append("vectors \(vectors)")
        lines.append("count \(store.count) live \(try store.liveInternalIDs().sorted())")
        lines.append("tags \(try store.tagCounts().sorted { $0.key < $1.key })")
        for tag in ["x", "y", "z"] { lines.append("tag \(tag) \(try store.internalIDs(withTag: tag).sorted())") }
        lines.append("payload red \(try store.internalIDs(payload: "color", .values([.string("red")]))?.sorted() ?? [])")
        lines.append("payload blue \(try store.internalIDs(payload: "color", .values([.string("blue")]))?.sorted() ?? [])")
        lines.append("applied \(store.appliedStreamSequence)")
        return lines.joined(separator: "\n")
    }

    private static func write(_ id: Int64, _ title: String, tags: [String] = [], color: String? = nil, _ vector: [Float]) -> Write {
        Write(id: .int(id), title: title, tags: tags, attributesJSON: color.map { "{\"color\":\"\($0)\"}" }, vectors: ["v1": vector])
    }

    /// The messages applied one call each, as a follower did before batches.
    private static func applyOneByOne(_ messages: [Message], to store: ItemStore) throws -> [Result<Int, SteerError>] {
        try messages.map { message in
            do throws(SteerError) {
                switch message.write {
                case .upsert(let items): return .success(try store.upsert(items, streamSequence: message.sequence).internalIDs.count)
                case .delete(let ids): return .success(try store.delete(ids, streamSequence: message.sequence).deleted.count)
                case .refused:
                    try store.recordStreamSequence(message.sequence)
                    return .success(0)
                }
            } catch {
                guard [.invalidRequest, .tooLarge, .notFound, .dimensionMismatch].contains(error.code) else { throw error }
                try store.recordStreamSequence(message.sequence)
                return .failure(error)
            }
        }
    }

    @Test func aBatchEqualsItsMessagesOneByOne_laterWritesWin_andRefusalsChangeNothing() throws {
        let base = NSTemporaryDirectory() + "steer-stream-batch-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: base) }
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let batched = try Self.open(base + "/batched")
        defer { batched.close() }
        let reference = try Self.open(base + "/reference")
        defer { reference.close() }
        // The same starting state: items 1-4, with tags and a payload index.
        for store in [batched, reference] {
            _ = try store.declarePayloadIndex("color", kind: .keyword)
            _ = try store.upsert([
                Self.write(1, "one", tags: ["x"], color: "red", [1, 0, 0, 0]), Self.write(2, "two", tags: ["x", "y"], [0, 1, 0, 0]),
                Self.write(3, "three", tags: ["y"], color: "blue", [0, 0, 1, 0]), Self.write(4, "four", [0, 0, 0, 1]),
            ], streamSequence: 10)
        }
        let before = batched.latestSequence
        let messages: [Message] = [
            // Item 1 written twice, then a third time in a later message: the last wins.
            (11, .upsert([Self.write(1, "one-b", tags: ["y"], color: "blue", [2, 0, 0, 0]), Self.write(5, "five", tags: ["z"], [5, 5, 5, 5])])),
            (12, .upsert([Self.write(6, "refused", [1, 2, 3])])),  // wrong dimension: refused, nothing written
            (13, .delete([.int(2), .int(2), .int(99)])),  // existed once
            (14, .upsert([Self.write(2, "two-again", tags: ["x"], [0, 2, 0, 0])])),  // deleted, then back: new internal id
            (15, .refused),
            (16, .upsert([Self.write(7, "seven", tags: ["z"], color: "red", [7, 0, 0, 0])])),
            (17, .delete([.int(7), .int(3)])),  // written and deleted in the same batch; 3 deleted
            (19, .upsert([Self.write(1, "one-c", tags: ["x", "z"], color: "red", [3, 0, 0, 0]), Self.write(8, "dup", [1, 1, 1, 1]),
                          Self.write(8, "dup", [1, 1, 1, 1])])),  // duplicate id in one message: refused whole
            (20, .upsert([Self.write(1, "one-d", tags: ["z"], [4, 0, 0, 0])])),
        ]
        let result = try batched.applyStream(messages)
        let expected = try Self.applyOneByOne(messages, to: reference)
        let ids: [ItemID] = (1...9).map { .int(Int64($0)) }
        #expect(try Self.contents(batched, ids: ids) == Self.contents(reference, ids: ids))
        #expect(result.outcomes.map { try? $0.get() } == expected.map { try? $0.get() })
        #expect(result.outcomes.map { (try? $0.get()) == nil } == [false, true, false, false, false, false, false, true, false])
        #expect(result.outcomes.map { (try? $0.get()) ?? -1 } == [2, -1, 1, 1, 0, 1, 2, -1, 1])
        // Explicitly: the later write of item 1 won, item 2 has a new internal id, 3 and 7 are gone.
        let records = try batched.get(ids)
        #expect(records[0]?.title == "one-d")
        #expect(records[0]?.tags == ["z"])
        #expect(try batched.vectors(internalIDs: [records[0]!.internalID], version: "v1") == [[4, 0, 0, 0]])
        #expect(records[1]?.title == "two-again")
        #expect(records[1]?.internalID != 1)
        #expect(records[2] == nil && records[6] == nil && records[7] == nil)
        #expect(batched.appliedStreamSequence == 20)
        // One batch: the change log replays its net effect (old internal ids of 2 and 3 deleted; 1, 2, 5 written).
        let changes = try batched.changes(since: before, version: "v1")
        #expect(Set(changes.deletes) == Set([1, 2]))
        #expect(Set(changes.upserts.map(\.0)) == Set([0, 4, records[1]!.internalID]))
        #expect(batched.latestSequence > before)
        // The index side of the result: what was removed, and the final vector of each written item.
        #expect(Set(result.removedInternalIDs) == Set([1, 2]))
        #expect(Set(result.written.map(\.id)) == Set([.int(1), .int(2), .int(5)]))
        #expect(result.written.first { $0.id == .int(1) }?.vectors["v1"] == [4, 0, 0, 0])
    }

    /// `applyStream(parts:)`: entries sharing a sequence are the parts of one message (in order, each with
    /// its outcome); a sequence at the stored one or decreasing still writes nothing.
    @Test func partsShareTheirMessagesSequence_andBadSequencesStillWriteNothing() throws {
        let path = NSTemporaryDirectory() + "steer-stream-parts-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try Self.open(path)
        defer { store.close() }
        let result = try store.applyStream(parts: [
            (3, .upsert([Self.write(1, "a", [1, 2, 3, 4])])), (3, .delete([.int(1)])), (3, .upsert([Self.write(1, "b", [4, 3, 2, 1])])),
            (4, .refused), (4, .upsert([Self.write(2, "c", [1, 1, 1, 1])])),
        ])
        #expect(result.outcomes.map { try? $0.get() } == [1, 1, 1, 0, 1])
        #expect(store.appliedStreamSequence == 4)
        #expect(try store.get([.int(1), .int(2)]).map { $0?.title } == ["b", "c"])
        // The plain entry point still wants increasing sequences.
        #expect(throws: SteerError.self) { _ = try store.applyStream([(5, .refused), (5, .refused)]) }
        let before = store.latestSequence
        for bad: [Message] in [
            [(4, .upsert([Self.write(3, "stale", [1, 1, 1, 1])]))],  // at the stored sequence
            [(4, .refused), (5, .upsert([Self.write(3, "x", [1, 1, 1, 1])]))],
            [(6, .upsert([Self.write(3, "x", [1, 1, 1, 1])])), (5, .refused)],  // decreasing
        ] {
            #expect(throws: SteerError.self) { _ = try store.applyStream(parts: bad) }
        }
        #expect(store.latestSequence == before)
        #expect(store.appliedStreamSequence == 4)
    }

    @Test func aBatchSurvivesReopening_andBadSequencesWriteNothing() throws {
        let path = NSTemporaryDirectory() + "steer-stream-batch-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let store = try Self.open(path)
            defer { store.close() }
            _ = try store.applyStream([
                (3, .upsert([Self.write(1, "a", [1, 2, 3, 4])])), (4, .upsert([Self.write(1, "b", [4, 3, 2, 1])])), (6, .refused),
            ])
            #expect(store.appliedStreamSequence == 6)
            let before = store.latestSequence
            for bad: [Message] in [
                [(6, .upsert([Self.write(2, "stale", [1, 1, 1, 1])]))],  // at the stored sequence
                [(8, .upsert([Self.write(2, "x", [1, 1, 1, 1])])), (8, .refused)],  // not increasing
                [(9, .upsert([Self.write(2, "x", [1, 1, 1, 1])])), (7, .delete([.int(1)]))],
            ] {
                #expect(throws: SteerError.self) { _ = try store.applyStream(bad) }
            }
            #expect(store.latestSequence == before)
            #expect(store.appliedStreamSequence == 6)
            #expect(try store.get([.int(2)]).first! == nil)
        }
        let reopened = try Self.open(path)
        defer { reopened.close() }
        #expect(reopened.appliedStreamSequence == 6)
        #expect(try reopened.get([.int(1)]).first??.title == "b")
        #expect(reopened.count == 1)
    }
}
