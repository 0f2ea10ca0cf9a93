import Foundation
import SteerCore
import SteerEngine
import SteerProtocol
import Testing
@testable import SteerService

/// `stats` on the wire reports the in-memory filter structures: `tag_posting_bytes` beside
/// `payload_column_bytes` (docs/protocol.md, docs/index.md "Sizing").
@Suite struct StatsMemoryTests {
    @Test func statsReportTagPostingBytesThatFollowTheTags() throws {
        let directory = NSTemporaryDirectory() + "steer-stats-memory-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 2, syncWrites: false))
        defer { try? engine.close() }
        let handler = RequestHandler(engine: engine)
        func stat(_ field: String) throws -> Int64 {
            guard let answer = handler.respond(to: #"{"op":"stats"}"#), case .object(let object) = try JSONParser.parse(Array(answer.utf8)),
                  case .int(let value)? = object[field] else {
                Issue.record("stats has no integer \(field)")
                return -1
            }
            return value
        }
        func upsert(_ tags: (Int) -> String) {
            let items = (0..<200).map { #"{"id":\#($0),"vector":[1,\#($0)],"tags":[\#(tags($0))]}"# }.joined(separator: ",")
            #expect(handler.respond(to: #"{"op":"upsert","items":[\#(items)]}"#)?.contains(#""ok":true"#) == true)
        }
        upsert { _ in "" }
        let untagged = try stat("tag_posting_bytes")
        #expect(try stat("payload_column_bytes") == 0)
        upsert { #""t\#($0)","common""# }
        let tagged = try stat("tag_posting_bytes")
        #expect(tagged >= untagged + 200 * 100, "\(untagged) → \(tagged)")
        upsert { _ in #""common""# }
        let shared = try stat("tag_posting_bytes")
        #expect(shared < tagged, "\(tagged) → \(shared)")
    }
}
