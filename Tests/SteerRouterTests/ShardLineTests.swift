import SteerCore
import SteerProtocol
import Testing

@testable import SteerRouter

/// `Router.shardLine`: the shard credential and the remaining deadline appended to a line the router
/// wrote, as JSON that the shards' decoder accepts (a hostile caller's token is escaped, never spliced).
@Suite struct ShardLineTests {
    private func decode(_ line: [UInt8]) throws -> Request {
        try RequestDecoder(limits: ProtocolLimits()).decode(try JSONParser.parse(line))
    }

    @Test func appendsTokenAndTimeoutAsFields() throws {
        let base = Array(#"{"op":"get","ids":[1,2]}"#.utf8)
        #expect(Router.shardLine(base, token: nil, timeoutMillis: nil) == base)
        let both = try decode(Router.shardLine(base, token: "k-1", timeoutMillis: 250))
        #expect(both.token == "k-1" && both.timeoutMillis == 250)
        guard case .get(let ids) = both.operation else { Issue.record("not a get"); return }
        #expect(ids == [.int(1), .int(2)])
        let onlyTimeout = try decode(Router.shardLine(Array(#"{"op":"stats"}"#.utf8), token: nil, timeoutMillis: 9))
        #expect(onlyTimeout.token == nil && onlyTimeout.timeoutMillis == 9)
    }

    @Test func aHostileTokenStaysOneString() throws {
        let hostile = #"x","op":"swap","generation":"g9"#
        let request = try decode(Router.shardLine(Array(#"{"op":"stats"}"#.utf8), token: hostile, timeoutMillis: nil))
        #expect(request.token == hostile)
        #expect(request.operation.name == "stats")
    }
}
