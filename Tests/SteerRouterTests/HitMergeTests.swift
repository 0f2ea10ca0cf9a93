import SteerCore
import SteerProtocol
import Testing

@testable import SteerRouter

@Suite struct HitMergeTests {
    private func hit(_ id: ItemID, _ score: Float) -> ShardHit {
        ShardHit(id: id, score: score, object: .object(JSONObject([("id", id.json), ("score", .double(Double(score)))])))
    }

    @Test func mergesByScoreThenIDAcrossShards() {
        let merged = HitMerge.top([[hit(.int(3), 0.9), hit(.int(1), 0.5)], [hit(.int(2), 0.7), hit(.string("a"), 0.5)], [hit(.int(0), 0.5)]], k: 4)
        #expect(merged.map(\.id) == [.int(3), .int(2), .int(0), .int(1)])
    }

    @Test func dropsExcludedIDsBeforeTakingK() {
        let merged = HitMerge.top([[hit(.int(1), 0.9), hit(.int(2), 0.8)], [hit(.int(3), 0.7)]], k: 2, excluding: [.int(1)])
        #expect(merged.map(\.id) == [.int(2), .int(3)])
    }

    @Test func integerIDsPrecedeStringIDsOnTies() {
        #expect(HitMerge.idPrecedes(.int(99), .string("0")))
        #expect(!HitMerge.idPrecedes(.string("b"), .string("a")))
        #expect(HitMerge.idPrecedes(.int(-1), .int(0)))
    }

    @Test func parsesShardHitsAndRejectsMalformedOnes() throws {
        let parsed = try JSONParser.parse(#"[{"id":5,"score":0.25,"title":"t"},{"id":"x","score":1}]"#)
        let hits = try ShardHit.list(parsed, shard: 0)
        #expect(hits.map(\.id) == [.int(5), .string("x")])
        #expect(hits.map(\.score) == [0.25, 1])
        #expect(throws: SteerError.self) { try ShardHit.list(try JSONParser.parse(#"[{"score":1}]"#), shard: 2) }
        #expect(throws: SteerError.self) { try ShardHit.list(.string("no"), shard: 2) }
    }
}

@Suite struct RouterConfigurationTests {
    @Test func parsesShardsWithReplicas() throws {
        let shards = try RouterConfiguration.parseShards(["127.0.0.1:7000,127.0.0.1:7001", "host-b:7002", "[::1]:7003"])
        #expect(shards.map(\.count) == [2, 1, 1])
        #expect(shards[2][0].host == "::1")
        #expect(shards[2][0].description == "[::1]:7003")
    }

    @Test(arguments: ["", "host", "host:0", "host:70000", ":7000", "a:1,,b:2"])
    func rejectsBadShardSpecs(spec: String) {
        #expect(throws: SteerError.self) { try RouterConfiguration.parseShards([spec]) }
    }

    @Test func rejectsAReplicaListedTwice() {
        #expect(throws: SteerError.self) { try RouterConfiguration.parseShards(["a:1", "b:2,a:1"]) }
        #expect(throws: SteerError.self) { try RouterConfiguration.parseShards([]) }
    }
}

private extension ItemID {
    var json: JSONValue {
        switch self {
        case .int(let value): return .int(value)
        case .string(let value): return .string(value)
        }
    }
}
