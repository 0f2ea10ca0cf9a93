import Foundation
import SteerCore
import Testing
import SteerStore

@Suite struct ReadOnlyStoreTests {
    @Test func aReadOnlyOpenWorksBesideTheWriterAndSeesTheStoreAsOfTheOpen() throws {
        let path = NSTemporaryDirectory() + "steer-store-readonly-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try ItemStore(options: .init(path: path, syncWrites: false))
        defer { writer.close() }
        try writer.createVersion("v1", dimension: 2)
        _ = try writer.upsert([ItemStore.ItemWrite(id: .int(1), title: "one", vectors: ["v1": [1, 2]])])
        // A second writer is refused by RocksDB's lock; a read-only open is not.
        #expect(throws: SteerError.self) { _ = try ItemStore(options: .init(path: path)) }
        let reader = try ItemStore(options: .init(path: path, readOnly: true))
        defer { reader.close() }
        #expect(reader.latestSequence == writer.latestSequence)
        #expect(try reader.get([.int(1)])[0]?.title == "one")
        #expect(try reader.vector(internalID: 0, version: "v1") == [1, 2])
        // Later writes of the writer are not visible to it; its own writes are refused.
        _ = try writer.upsert([ItemStore.ItemWrite(id: .int(2), vectors: ["v1": [3, 4]])])
        #expect(try reader.get([.int(2)])[0] == nil)
        do {
            _ = try reader.upsert([ItemStore.ItemWrite(id: .int(3), vectors: ["v1": [5, 6]])])
            Issue.record("a read-only store accepted a write")
        } catch {
            #expect(error.code == .invalidRequest && error.message.contains("read-only"))
        }
        #expect(try writer.get([.int(3)])[0] == nil)
        // A missing store is not created.
        #expect(throws: SteerError.self) { _ = try ItemStore(options: .init(path: path + "-missing", readOnly: true)) }
        #expect(!FileManager.default.fileExists(atPath: path + "-missing"))
    }
}
