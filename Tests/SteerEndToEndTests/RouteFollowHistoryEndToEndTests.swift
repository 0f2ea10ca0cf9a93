import Foundation
import SteerClient
import SteerCore
import SteerProtocol
import Testing

/// `steer route --follow` with user histories and a named collection (docs/scaling.md, "Through a
/// router"): `event` and `delete_user` go to the stream of the user's shard, a named collection's items
/// to the stream of each item's shard, and every replica applies them; a real `nats-server`, two shards
/// of two `steer serve --follow` replicas.

private let token = "tok"

private func sequences(of answer: JSONObject) throws -> [UInt64] {
    guard case .array(let values)? = answer["sequences"] else { throw SteerError(.internal, "answer has no sequences: \(answer)") }
    return try values.map { value in
        guard case .int(let number) = value, number >= 0 else { throw SteerError(.internal, "bad sequence in \(answer)") }
        return UInt64(number)
    }
}

private func merged(_ a: [UInt64], _ b: [UInt64]) -> [UInt64] { zip(a, b).map { max($0, $1) } }

@Suite(.serialized) struct RouteFollowHistoryEndToEndTests {
    @Test func eventsGoToTheUsersShardStream_andANamedCollectionsItemsToTheirShards() throws {
        let nats = try NATSNode()
        let cluster = "rh" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
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
        let router = try ServerProcess(arguments: shardFlags + [
            "--admin-token", token, "--follow", nats.url, "--cluster", cluster, "--health-interval-ms", "100",
        ], route: true)
        defer { router.terminate() }
        let client = try router.connection()
        let sharding = try Sharding(shardCount: 2)

        // A named collection of another dimension, created on every replica through the router.
        _ = try ok(client, #"{"op":"create_collection","token":"tok","name":"books","dimension":2}"#)
        var latest: [UInt64] = [0, 0]
        let users = (0..<10).map { "u\($0)" }
        for round in 0..<3 {
            let events = users.enumerated().map { index, user in #"{"user":"\#(user)","item":\#(index + round * 10),"ts":\#(round)}"# }
            let answer = try ok(client, #"{"op":"event","token":"tok","events":[\#(events.joined(separator: ","))]}"#)
            #expect(answer["recorded"] == .int(10))
            latest = merged(latest, try sequences(of: answer))
            let items = (0..<12).map { id in #"{"id":\#(id),"vector":[\#(id + round),1],"title":"b\#(id)-\#(round)"}"# }
            latest = merged(latest, try sequences(of: try ok(client, #"{"op":"upsert","token":"tok","collection":"books","items":[\#(items.joined(separator: ","))]}"#)))
        }
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"delete_user","token":"tok","user":"u3"}"#)))
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"delete","token":"tok","collection":"books","ids":[5]}"#)))
        #expect(latest.allSatisfy { $0 > 0 }, "both shards' streams took writes")

        // Each user's events live on both replicas of the user's shard only, identical there.
        for user in users {
            let owner = sharding.shard(of: .string(user))
            var answers: [JSONValue?] = []
            for shard in 0..<2 {
                for replica in replicas[shard] {
                    let answer = try ok(try replica.connection(), #"{"op":"get_user","token":"tok","user":"\#(user)","min_sequence":\#(latest[shard]),"timeout_ms":20000}"#)
                    if shard == owner { answers.append(answer["events"]) } else { #expect(answer["events"] == .array([])) }
                }
            }
            #expect(answers.count == 2 && answers[0] == answers[1])
            guard case .array(let events)? = answers[0] else { Issue.record("no events for \(user)"); continue }
            #expect(events.count == (user == "u3" ? 0 : 3), "\(user)")
            let routed = try ok(client, #"{"op":"get_user","token":"tok","user":"\#(user)","min_sequences":[\#(latest[0]),\#(latest[1])],"timeout_ms":20000}"#)
            #expect(routed["events"] == answers[0])
        }
        // The collection's items are on their own shard's replicas, in the collection, not the default one.
        for id in 0..<12 {
            let owner = sharding.shard(of: .int(Int64(id)))
            var items: [JSONValue?] = []
            for replica in replicas[owner] {
                let connection = try replica.connection()
                items.append(try ok(connection, #"{"op":"get","collection":"books","ids":[\#(id)],"min_sequence":\#(latest[owner]),"timeout_ms":20000}"#)["items"])
                #expect(try ok(connection, #"{"op":"get","ids":[\#(id)]}"#)["items"] == .array([]))
            }
            #expect(items[0] == items[1])
            guard case .array(let found)? = items[0] else { Issue.record("no answer for \(id)"); continue }
            if id == 5 {
                #expect(found.isEmpty)
            } else {
                guard case .object(let item)? = found.first else { Issue.record("item \(id) missing"); continue }
                #expect(item["title"] == .string("b\(id)-2"))
            }
        }
        for replica in replicas.joined() {
            #expect(try ok(try replica.connection(), #"{"op":"stats","token":"tok"}"#)["refused_messages"] == .int(0))
        }
    }
}
