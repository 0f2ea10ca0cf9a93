import Foundation
import SteerCore
import Testing
@testable import SteerProtocol

@Suite struct HistoryRequestTests {
    let decoder = RequestDecoder(limits: ProtocolLimits(maxK: 100, maxBatch: 3, maxHistory: 4, maxQueryCost: 10_000, maxExamples: 2))

    private func decode(_ text: String) throws -> Request { try decoder.decode(try JSONParser.parse(text)) }

    private func code(_ text: String) -> String? {
        do {
            _ = try decode(text)
            return nil
        } catch let error as SteerError {
            return error.code.rawValue
        } catch {
            return "\(error)"
        }
    }

    @Test func decodesSingleAndBatchEventsWithDefaults() throws {
        let before = RequestDecoder.nowMillis()
        guard case .event(let single) = try decode(#"{"op":"event","user":"u42","item":17}"#).operation else {
            Issue.record("not an event")
            return
        }
        #expect(single.count == 1 && single[0].user == .string("u42") && single[0].item == .int(17) && single[0].kind == "view")
        #expect(single[0].timestampMillis >= before && single[0].timestampMillis <= RequestDecoder.nowMillis())
        guard case .event(let batch) = try decode(#"{"op":"event","events":[{"user":1,"item":"a","kind":"buy","ts":-5},{"user":"1","item":2}]}"#).operation else {
            Issue.record("not an event")
            return
        }
        #expect(batch.map(\.user) == [.int(1), .string("1")])
        #expect(batch[0] == UserEvent(user: .int(1), item: .string("a"), kind: "buy", timestampMillis: -5))
        #expect(try decode(#"{"op":"event","user":"u","item":1}"#).operation.isAdmin)
        #expect(try !decode(#"{"op":"get_user","user":"u"}"#).operation.isAdmin)
        #expect(code(#"{"op":"event","events":[{"user":"u","item":1},{"user":"u","item":2},{"user":"u","item":3},{"user":"u","item":4}]}"#) == "too_large")
        #expect(code(#"{"op":"event","user":"u","item":1,"ts":"now"}"#) == "invalid_request")
    }

    @Test func decodesRecommendByUserAndExamples() throws {
        guard case .recommend(let byUser) = try decode(#"{"op":"recommend","user":"u","max_history":3,"history":[1]}"#).operation else {
            Issue.record("not a recommend")
            return
        }
        #expect(byUser.user == .string("u") && byUser.maxHistory == 3 && byUser.history == [.int(1)])
        guard case .recommend(let plain) = try decode(#"{"op":"recommend","user":"u"}"#).operation else { return }
        #expect(plain.maxHistory == RecommendRequest.defaultMaxHistory && plain.history.isEmpty)
        #expect(code(#"{"op":"recommend","user":"u","max_history":5}"#) == "too_large")

        guard case .recommend(let examples) = try decode(#"{"op":"recommend","positive":[1,"b"],"negative":[3],"strategy":"best_score","k":5}"#).operation else {
            Issue.record("not a recommend")
            return
        }
        #expect(examples.positive == [.int(1), .string("b")] && examples.negative == [.int(3)] && examples.strategy == .bestScore)
        guard case .recommend(let average) = try decode(#"{"op":"recommend","positive":[1],"prompt":"funny"}"#).operation else { return }
        #expect(average.strategy == .averageVector && average.prompt == "funny")
        #expect(code(#"{"op":"recommend","positive":[1,2,3]}"#) == "too_large")
        #expect(code(#"{"op":"recommend","positive":[1],"strategy":"sum_scores"}"#) == "invalid_request")
        #expect(code(#"{"op":"recommend","history":[1],"strategy":"best_score"}"#) == "invalid_request")
        #expect(code(#"{"op":"encode","positive":[1]}"#) == "invalid_request")
        // best_score is charged (positives + 1) × (4k + 32) × (examples + 1) units: 3 × 72 × 4 = 864 here,
        // 3 × 432 × 5 = 6480 > 5000 with k = 100 below; average_vector costs one query of k.
        #expect(code(#"{"op":"recommend","positive":[1,2],"negative":[3],"strategy":"best_score","k":10}"#) == nil)
        let tight = RequestDecoder(limits: ProtocolLimits(maxK: 100, maxQueryCost: 5_000, maxExamples: 2))
        #expect(throws: SteerError.self) {
            _ = try tight.decode(try JSONParser.parse(#"{"op":"recommend","positive":[1,2],"negative":[3,4],"strategy":"best_score","k":100}"#))
        }
        _ = try tight.decode(try JSONParser.parse(#"{"op":"recommend","positive":[1,2],"negative":[3,4],"k":100}"#))
    }

    @Test func theEncoderWritesLinesTheDecoderReadsBack() throws {
        let decoder = RequestDecoder(limits: ProtocolLimits())
        func roundTrip(_ operation: Request.Operation) throws -> Request.Operation {
            try decoder.decode(try JSONParser.parse(RequestEncoder.encode(Request(operation: operation)))).operation
        }
        let events = [UserEvent(user: .string("u"), item: .int(3), kind: "buy", timestampMillis: -4),
                      UserEvent(user: .int(7), item: .string("x"), kind: "view", timestampMillis: 9)]
        guard case .event(let decoded) = try roundTrip(.event(events)) else { Issue.record("not an event"); return }
        #expect(decoded == events)
        guard case .getUser(let user, let limit) = try roundTrip(.getUser(.int(5), limit: 3)) else { Issue.record("not get_user"); return }
        #expect(user == .int(5) && limit == 3)
        guard case .deleteUser(let deleted) = try roundTrip(.deleteUser(.string("z"))) else { Issue.record("not delete_user"); return }
        #expect(deleted == .string("z"))
        let items = [VersionItem(id: .int(1), vector: [0.5, -2], title: "t", tags: ["a"]), VersionItem(id: .string("s"), vector: [1, 2])]
        guard case .ingestVectors(let version, let dimension, let hash, let decodedItems, let complete) =
            try roundTrip(.ingestVectors(version: "v2", dimension: 2, checkpointHash: "h", items: items, complete: true)) else {
            Issue.record("not ingest_vectors")
            return
        }
        #expect(version == "v2" && dimension == 2 && hash == "h" && complete)
        #expect(decodedItems.map(\.id) == [.int(1), .string("s")] && decodedItems.map(\.vector) == [[0.5, -2], [1, 2]])
        #expect(decodedItems.map(\.title) == ["t", nil] && decodedItems.map(\.tags) == [["a"], nil])
        var recommend = RecommendRequest(history: [.int(1)], k: 4)
        recommend.user = .string("u")
        recommend.maxHistory = 7
        recommend.positive = [.int(2)]
        recommend.negative = [.string("n")]
        recommend.strategy = .bestScore
        guard case .recommend(let back) = try roundTrip(.recommend(recommend)) else { Issue.record("not recommend"); return }
        #expect(back.user == .string("u") && back.maxHistory == 7 && back.positive == [.int(2)] && back.negative == [.string("n")])
        #expect(back.strategy == .bestScore && back.history == [.int(1)])
    }
}
