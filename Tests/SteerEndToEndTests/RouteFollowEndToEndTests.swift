import Foundation
import SteerClient
import SteerCore
import SteerProtocol
import Testing

/// `steer route --follow` (docs/scaling.md, "Through a router"): a real `nats-server`, two shards of two
/// `steer serve --follow` replicas each, and a router that writes to the shards' streams and reads with
/// `min_sequences` from replicas that applied them.

private let token = "tok"

private func vector(_ id: Int, round: Int) -> String {
    var generator = SeededGenerator(seed: UInt64(id * 7919 + round * 104_729 + 1))
    return "[" + (0..<4).map { _ in String(Float.random(in: -1...1, using: &generator)) }.joined(separator: ",") + "]"
}

private func upsertLine(_ ids: [Int], round: Int) -> String {
    let items = ids.map { id in #"{"id":\#(id),"vector":\#(vector(id, round: round)),"title":"t\#(id)-r\#(round)","tags":["r\#(round % 3)"]}"# }
    return #"{"op":"upsert","token":"tok","items":[\#(items.joined(separator: ","))]}"#
}

/// The `sequences` of a router's write answer.
private func sequences(of answer: JSONObject) throws -> [UInt64] {
    guard case .array(let values)? = answer["sequences"] else { throw SteerError(.internal, "answer has no sequences: \(answer)") }
    return try values.map { value in
        guard case .int(let number) = value, number >= 0 else { throw SteerError(.internal, "bad sequence in \(answer)") }
        return UInt64(number)
    }
}

private func tokenJSON(_ sequences: [UInt64]) -> String { "[" + sequences.map(String.init).joined(separator: ",") + "]" }

/// Element-wise maximum: the consistency token after several writes.
private func merged(_ a: [UInt64], _ b: [UInt64]) -> [UInt64] { zip(a, b).map { max($0, $1) } }

private func idsJSON(_ ids: some Sequence<Int>) -> String { "[" + ids.map(String.init).joined(separator: ",") + "]" }

/// FNV-1a 64 of the decimal key, mod 2: SteerCore's `Sharding` for integer ids (checked against the router below).
private func shard(of id: Int) throws -> Int { try Sharding(shardCount: 2).shard(of: .int(Int64(id))) }

@Suite(.serialized) struct RouteFollowEndToEndTests {
    @Test func writesThroughTheRouterGoToTheStreams_andMinSequencesReadsYourWrites() throws {
        let nats = try NATSNode()
        let cluster = "rt" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        // Two shards × two replicas, each following its shard's stream.
        var replicas: [[ServerProcess]] = []
        for shard in 0..<2 {
            replicas.append(try (0..<2).map { _ in
                try ServerProcess(arguments: [
                    "--dimension", "4", "--admin-token", token, "--public-reads", "true",
                    "--follow", nats.url, "--cluster", cluster, "--shard", String(shard),
                ])
            })
        }
        defer { for replica in replicas.joined() { replica.terminate(); replica.removeData() } }
        let shardFlags = replicas.flatMap { set in ["--shard", set.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")] }
        // A long health timeout: a replica stopped for a few seconds below stays up (it only lags).
        let router = try ServerProcess(arguments: shardFlags + [
            "--admin-token", token, "--follow", nats.url, "--cluster", cluster,
            "--health-interval-ms", "100", "--shard-timeout-ms", "10000",
        ], route: true)
        defer { router.terminate() }
        let client = try router.connection()

        // Writes: answered after the PubAck with one sequence per shard.
        var latest: [UInt64] = [0, 0]
        for start in stride(from: 0, to: 40, by: 10) {
            let answer = try ok(client, upsertLine(Array(start..<start + 10), round: 0))
            #expect(answer["upserted"] == .int(10))
            let next = try sequences(of: answer)
            #expect(next.count == 2)
            #expect(next[0] > latest[0] && next[1] > latest[1], "both shards got a part: \(next) after \(latest)")
            latest = merged(latest, next)
        }
        let deleted = try ok(client, #"{"op":"delete","token":"tok","ids":[3,4,999]}"#)
        #expect(deleted["deleted"] == .int(3), "the router counts the ids it appended")
        latest = merged(latest, try sequences(of: deleted))

        // Read-your-writes through the router; every item on its own shard's replicas, identically.
        let all = 0..<41
        let got = try ok(client, #"{"op":"get","token":"tok","ids":\#(idsJSON(all)),"min_sequences":\#(tokenJSON(latest)),"timeout_ms":20000}"#)
        #expect(got["missing"] == .array([.int(3), .int(4), .int(40)]))
        for (shard, set) in replicas.enumerated() {
            let owned = all.filter { (try? RouteFollowEndToEndTests.owner($0)) == shard }
            let answers = try set.map { replica in
                try ok(try replica.connection(), #"{"op":"get","token":"tok","ids":\#(idsJSON(owned)),"min_sequence":\#(latest[shard]),"timeout_ms":20000}"#)
            }
            #expect(answers[0]["items"] == answers[1]["items"], "replicas of shard \(shard) agree")
            #expect(answers[0]["missing"] == answers[1]["missing"])
            guard case .array(let items)? = answers[0]["items"] else { Issue.record("no items"); continue }
            #expect(items.count == owned.filter { ![3, 4, 40].contains($0) }.count, "shard \(shard) holds exactly its items")
        }
        for query in 0..<4 {
            let line = #"{"op":"search","token":"tok","vector":\#(vector(query, round: 99)),"k":10,"min_sequences":\#(tokenJSON(latest)),"timeout_ms":20000}"#
            let first = try ok(client, line)
            let second = try ok(client, line)
            #expect(first["hits"] == second["hits"], "whichever replicas answer, the hits are the same")
            #expect(first["partial"] == nil)
        }

        // A lagging replica: stop one replica of shard 0 (it stays up for the router), write through the
        // router, and read with min_sequences: the router must not answer from the stopped replica and
        // must move on to the one that applied the write.
        let stopped = replicas[0][1]
        Foundation.kill(stopped.process.processIdentifier, SIGSTOP)
        var stoppedRunning = false
        defer { if !stoppedRunning { Foundation.kill(stopped.process.processIdentifier, SIGCONT) } }
        let shard0IDs = all.filter { (try? RouteFollowEndToEndTests.owner($0)) == 0 }.prefix(3)
        for round in 1...4 {
            let answer = try ok(client, upsertLine(Array(shard0IDs), round: round))
            let written = try sequences(of: answer)
            #expect(written[1] == 0, "no part for shard 1")
            latest = merged(latest, written)
            let read = try ok(client, #"{"op":"get","token":"tok","ids":\#(idsJSON(shard0IDs)),"min_sequences":\#(tokenJSON(latest)),"timeout_ms":4000}"#)
            guard case .array(let items)? = read["items"] else { Issue.record("no items: \(read)"); continue }
            #expect(items.count == shard0IDs.count)
            for item in items {
                guard case .object(let object) = item, case .string(let title)? = object["title"] else { Issue.record("no title"); continue }
                #expect(title.hasSuffix("-r\(round)"), "read-your-writes: \(title) after round \(round)")
            }
        }
        let stats = try ok(client, #"{"op":"stats","token":"tok"}"#)
        guard case .object(let counters)? = stats["counters"], case .int(let retries)? = counters["replica_retries"] else {
            Issue.record("no counters: \(stats)"); return
        }
        #expect(retries >= 1, "the round-robin put the stopped replica first at least once, and the router moved on")
        #expect(stats["writes"] == .string("streams"))
        Foundation.kill(stopped.process.processIdentifier, SIGCONT)
        stoppedRunning = true
        // The stopped replica catches up and agrees with its peer.
        let ids = idsJSON(all)
        let lagged = try ok(try stopped.connection(), #"{"op":"get","token":"tok","ids":\#(ids),"min_sequence":\#(latest[0]),"timeout_ms":20000}"#)
        let peer = try ok(try replicas[0][0].connection(), #"{"op":"get","token":"tok","ids":\#(ids),"min_sequence":\#(latest[0]),"timeout_ms":20000}"#)
        #expect(lagged["items"] == peer["items"])
    }

    @Test func routerRefusals() throws {
        let nats = try NATSNode()
        let cluster = "rr" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let replicas = try (0..<2).map { shard in
            try ServerProcess(arguments: ["--dimension", "4", "--admin-token", token, "--public-reads", "true",
                                          "--follow", nats.url, "--cluster", cluster, "--shard", String(shard)])
        }
        defer { for replica in replicas { replica.terminate(); replica.removeData() } }
        let router = try ServerProcess(arguments: replicas.flatMap { ["--shard", "127.0.0.1:\($0.port)"] } + [
            "--admin-token", token, "--follow", nats.url, "--cluster", cluster, "--health-interval-ms", "100",
        ], route: true)
        defer { router.terminate() }
        let client = try router.connection()
        // Wait for a health check to report the shards' dimension, then a wrong one is refused before
        // anything is appended.
        var refused = JSONObject()
        for _ in 0..<50 {
            refused = try call(client, #"{"op":"upsert","token":"tok","items":[{"id":1,"vector":[1,2,3]}]}"#)
            if refused["ok"] == .bool(false) { break }
            usleep(100_000)
        }
        guard case .object(let error)? = refused["error"] else { Issue.record("accepted: \(refused)"); return }
        #expect(error["code"] == .string("dimension_mismatch"))
        let single = try call(client, #"{"op":"get","token":"tok","ids":[1],"min_sequence":1}"#)
        guard case .object(let singleError)? = single["error"] else { Issue.record("accepted: \(single)"); return }
        #expect(singleError["code"] == .string("invalid_request"))
        // A shard server refuses min_sequences (only a router takes it).
        let direct = try call(try replicas[0].connection(), #"{"op":"get","token":"tok","ids":[1],"min_sequences":[1]}"#)
        guard case .object(let directError)? = direct["error"] else { Issue.record("accepted: \(direct)"); return }
        #expect(directError["code"] == .string("invalid_request"))
        // A sequence nobody wrote: unavailable at the deadline, not a partial answer.
        let ahead = try call(client, #"{"op":"search","token":"tok","vector":[1,0,0,0],"k":3,"min_sequences":[0,1000000],"timeout_ms":600}"#)
        guard case .object(let aheadError)? = ahead["error"] else { Issue.record("answered: \(ahead)"); return }
        #expect(aheadError["code"] == .string("unavailable") || aheadError["code"] == .string("deadline_exceeded"), "\(ahead)")
    }

    static func owner(_ id: Int) throws -> Int { try shard(of: id) }
}
