import Foundation
import SteerClient
import SteerCore
import Testing

/// `recommend` and `encode` through `steer serve --checkpoint` against the trainer's golden files (the
/// fixture checkpoints of SteerModelTests): the server's rankings, clauses and query vectors must be the
/// PyTorch reference's.
@Suite(.serialized) struct RecommendEndToEndTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = root.appendingPathComponent("Tests/SteerModelTests/Fixtures").path
    static var minilm: String {
        ProcessInfo.processInfo.environment["STEER_MINILM_DIR"] ?? root.appendingPathComponent("models/all-MiniLM-L6-v2").path
    }

    private func call(_ connection: SteerConnection, _ request: [String: Any]) throws -> [String: Any] {
        let line = try JSONSerialization.data(withJSONObject: request)
        let response = try connection.roundTrip(Array(line))
        guard let object = try JSONSerialization.jsonObject(with: Data(response)) as? [String: Any] else {
            throw SteerError(.internal, "response is not an object: \(String(decoding: response, as: UTF8.self))")
        }
        return object
    }

    private func ids(_ response: [String: Any]) -> [Int] {
        ((response["hits"] as? [[String: Any]]) ?? []).compactMap { ($0["id"] as? NSNumber)?.intValue }
    }

    /// Equal lists, except that two ids may trade places where the reference scores differ by < 1e-4.
    private func sameRanking(_ got: [Int], _ expected: [Int], scores: [Double]?) -> Bool {
        guard got.count == expected.count else { return false }
        guard let scores else { return got == expected }
        for (position, id) in got.enumerated() where id != expected[position] {
            guard let other = expected.firstIndex(of: id), abs(scores[other] - scores[position]) < 1e-4 else { return false }
        }
        return Set(got) == Set(expected)
    }

    @Test(arguments: ["demo-sasrec", "demo-gru4rec"])
    func recommendAndEncodeMatchTheGoldenFile(fixture: String) throws {
        let checkpoint = Self.fixtures + "/" + fixture
        let server = try ServerProcess(arguments: ["--checkpoint", checkpoint, "--minilm", Self.minilm])
        defer {
            server.terminate()
            server.removeData()
        }
        let connection = try server.connection()
        let golden = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: checkpoint + "/golden.json"))) as? [String: Any])
        let cases = try #require(golden["cases"] as? [[String: Any]])
        #expect(cases.count >= 8)
        for (number, entry) in cases.enumerated() {
            let history = (entry["history"] as? [Any]) ?? []
            var request: [String: Any] = ["op": "recommend", "history": history, "k": 10]
            if let prompt = entry["prompt"] as? String { request["prompt"] = prompt }
            if history.isEmpty, entry["prompt"] is NSNull { continue }

            let soft = try call(connection, request)
            #expect(soft["ok"] as? Bool == true, "case \(number): \(soft)")
            let expected = (entry["top10"] as? [NSNumber] ?? []).map(\.intValue)
            let scores = (entry["top10_scores"] as? [NSNumber])?.map(\.doubleValue)
            #expect(sameRanking(ids(soft), expected, scores: scores), "case \(number) soft: \(ids(soft)) vs \(expected)")

            let goldenClauses = (entry["clauses"] as? [[String: Any]]) ?? []
            let clauses = (soft["clauses"] as? [[String: Any]]) ?? []
            #expect(clauses.map { $0["text"] as? String } == goldenClauses.map { $0["text"] as? String }, "case \(number)")
            #expect(clauses.map { ($0["polarity"] as? String) == "positive" ? "+" : "-" } == goldenClauses.map { $0["polarity"] as? String ?? "" }, "case \(number)")
            #expect(clauses.map { ($0["tags"] as? [String]) ?? [] } == goldenClauses.map { ($0["tags"] as? [String]) ?? [] }, "case \(number)")

            request["constraints"] = "hybrid"
            let hybrid = try call(connection, request)
            let expectedHybrid = (entry["top10_hybrid"] as? [NSNumber] ?? []).map(\.intValue)
            #expect(ids(hybrid) == expectedHybrid || sameRanking(ids(hybrid), expectedHybrid, scores: nil), "case \(number) hybrid: \(ids(hybrid)) vs \(expectedHybrid)")

            request["op"] = "encode"
            request["constraints"] = nil
            let encoded = try call(connection, request)
            let vector = (encoded["vector"] as? [NSNumber] ?? []).map(\.floatValue)
            let query = (entry["query"] as? [NSNumber] ?? []).map(\.floatValue)
            #expect(vector.count == query.count && !query.isEmpty, "case \(number)")
            let worst = zip(vector, query).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst <= 1e-4, "case \(number): max |Δ| \(worst)")
        }

        // Unknown history ids are reported and skipped; all unknown is not_found.
        let firstItem = try #require((cases.first?["history"] as? [NSNumber])?.first)
        let mixed = try call(connection, ["op": "recommend", "history": [firstItem, "no-such-item", 987_654_321], "k": 5])
        #expect(mixed["ok"] as? Bool == true)
        let unknown = (mixed["unknown_history"] as? [Any]) ?? []
        #expect(unknown.count == 2, "\(mixed)")
        #expect(ids(mixed).count == 5)
        let none = try call(connection, ["op": "recommend", "history": ["no-such-item"], "k": 5])
        #expect((none["error"] as? [String: Any])?["code"] as? String == "not_found")
        let nothing = try call(connection, ["op": "recommend", "history": [], "k": 5])
        #expect((nothing["error"] as? [String: Any])?["code"] as? String == "invalid_request")

        // The clause cache served the repeated prompts, and stats shows it.
        let stats = try call(connection, ["op": "stats"])
        let counters = try #require(stats["encoder_stats"] as? [String: Any])
        #expect(((counters["clause_cache_hits"] as? NSNumber)?.intValue ?? 0) > 0, "\(counters)")
        #expect(((counters["clause_cache_misses"] as? NSNumber)?.intValue ?? 0) > 0, "\(counters)")
    }
}
