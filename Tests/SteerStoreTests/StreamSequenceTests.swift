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
}
