import Foundation
import SteerClient
import SteerCore
import SteerProtocol
import Testing

/// `steer serve --index-save-seconds`: a server killed with SIGKILL reopens from the index it saved
/// periodically, with the writes after that save replayed from the store (docs/operations.md).
@Suite struct IndexSaveEndToEndTests {
    private static func savedSequence(_ directory: String) -> UInt64? {
        guard let data = FileManager.default.contents(atPath: directory + "/index/index.json"),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return (object["sequence"] as? NSNumber)?.uint64Value
    }

    private static func upsertLine(_ range: Range<Int>) -> String {
        let items = range.map { #"{"id":\#($0),"vector":[\#($0),1,0,\#(-$0)]}"# }.joined(separator: ",")
        return #"{"op":"upsert","token":"tok","items":[\#(items)]}"#
    }

    @Test func aKilledServerHasSavedItsIndex_andReopensWithEveryAcknowledgedWrite() throws {
        let first = try ServerProcess(arguments: ["--dimension", "4", "--metric", "l2", "--admin-token", "tok", "--sync-writes", "true",
                                                  "--index-save-seconds", "1"])
        defer { first.removeData() }
        let writer = try first.connection()
        for start in stride(from: 0, to: 200, by: 50) { _ = try ok(writer, Self.upsertLine(start..<(start + 50))) }
        let deadline = Date().addingTimeInterval(15)
        while Self.savedSequence(first.directory) == nil && Date() < deadline { usleep(50_000) }
        let saved = try #require(Self.savedSequence(first.directory), "no index saved within 15 s of the writes")
        #expect(saved > 0)
        // Writes after that save: the restart must replay them from the store.
        _ = try ok(writer, Self.upsertLine(200..<220))
        _ = try ok(writer, #"{"op":"delete","token":"tok","ids":[1,2,3,4,5]}"#)
        first.kill()

        let second = try ServerProcess(directory: first.directory, arguments: ["--admin-token", "tok"])
        defer { second.terminate() }
        let reader = try second.connection()
        let stats = try ok(reader, #"{"op":"stats","token":"tok"}"#)
        #expect(stats["items"] == .int(215))
        #expect(stats["indexed"] == .int(215))
        let hits = try ok(reader, #"{"op":"search","token":"tok","vector":[219,1,0,-219],"k":1}"#)
        guard case .array(let list)? = hits["hits"], case .object(let top)? = list.first else {
            Issue.record("no hits: \(hits)"); return
        }
        #expect(top["id"] == .int(219))
        let got = try ok(reader, #"{"op":"get","token":"tok","ids":[3,150]}"#)
        guard case .array(let items)? = got["items"], case .object(let found)? = items.first else { Issue.record("no items: \(got)"); return }
        #expect(items.count == 1)
        #expect(found["id"] == .int(150))
        #expect(got["missing"] == .array([.int(3)]))
    }
}
