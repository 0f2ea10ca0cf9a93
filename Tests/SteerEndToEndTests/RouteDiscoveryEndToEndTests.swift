import Foundation
import SteerClient
import SteerCore
import SteerNATS
import SteerProtocol
import Testing

/// Cluster metadata in JetStream key-value buckets (docs/scaling.md, "Cluster metadata"): `steer route
/// --follow … --cluster C` without `--shard` flags finds its shards and replicas in the buckets the
/// replicas write (`--shard-count`, heartbeats), drops a replica that stops heartbeating and reads from
/// one that registers later; against a real `nats-server`.

private let token = "tok"

/// The router's replica addresses per shard (its `stats`).
private func membership(_ router: SteerConnection) throws -> [[String]] {
    guard case .array(let shards)? = try ok(router, #"{"op":"stats","token":"tok"}"#)["shards"] else { throw SteerError(.internal, "no shards") }
    return shards.map { shard in
        guard case .object(let object) = shard, case .array(let replicas)? = object["replicas"] else { return [] }
        return replicas.compactMap { replica in
            guard case .object(let fields) = replica, case .string(let address)? = fields["address"] else { return nil }
            return address
        }.sorted()
    }
}

/// Polls `membership` until `wanted` holds or `seconds` pass; returns the last membership seen.
private func waitForMembership(_ router: SteerConnection, seconds: Double, _ wanted: ([[String]]) -> Bool) throws -> [[String]] {
    let deadline = Date().addingTimeInterval(seconds)
    var last = try membership(router)
    while !wanted(last) && Date() < deadline {
        usleep(200_000)
        last = try membership(router)
    }
    return last
}

/// The number of `get` requests a replica answered (its own `stats`).
private func getCount(_ server: ServerProcess) throws -> Int64 {
    let stats = try ok(try server.connection(), #"{"op":"stats","token":"tok"}"#)
    guard case .object(let ops)? = stats["ops"], case .object(let get)? = ops["get"], case .int(let count)? = get["count"] else { return 0 }
    return count
}

@Suite(.serialized) struct RouteDiscoveryEndToEndTests {
    @Test func aRouterFindsItsReplicasInTheBucket_dropsOneThatStopsHeartbeating_andReadsFromANewOne() throws {
        let nats = try NATSNode()
        let cluster = "rd" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        func replica(shard: Int) throws -> ServerProcess {
            try ServerProcess(arguments: [
                "--dimension", "4", "--admin-token", token, "--follow", nats.url, "--cluster", cluster, "--shard", String(shard),
                "--shard-count", "2",
            ])
        }
        let a0 = try replica(shard: 0)
        let a1 = try replica(shard: 1)
        var b0: ServerProcess?
        defer {
            for server in [a0, a1] + (b0.map { [$0] } ?? []) {
                Foundation.kill(server.process.processIdentifier, SIGCONT)
                server.terminate()
                server.removeData()
            }
        }
        // The recorded shard count holds: a replica that names another one does not start.
        do {
            let wrong = try ServerProcess(arguments: [
                "--dimension", "4", "--admin-token", token, "--follow", nats.url, "--cluster", cluster, "--shard", "0", "--shard-count", "3",
            ])
            wrong.terminate()
            wrong.removeData()
            Issue.record("a replica with another --shard-count started")
        } catch {
            #expect("\(error)".contains("shard count"), "\(error)")
        }
        // No --shard flags: the shard count and the replicas come from the cluster's buckets.
        let router = try ServerProcess(arguments: [
            "--admin-token", token, "--shard-key-file", try keyFile(), "--follow", nats.url, "--cluster", cluster,
            "--health-interval-ms", "200", "--shard-timeout-ms", "30000",
        ], route: true)
        defer { router.terminate() }
        let client = try router.connection()
        #expect(try membership(client) == [["127.0.0.1:\(a0.port)"], ["127.0.0.1:\(a1.port)"]])

        // Writes and reads through the discovered replicas.
        let items = (0..<20).map { #"{"id":\#($0),"vector":[1,\#($0),0,0],"title":"t\#($0)"}"# }
        let written = try ok(client, #"{"op":"upsert","token":"tok","items":[\#(items.joined(separator: ","))]}"#)
        guard case .array(let sequences)? = written["sequences"] else { Issue.record("no sequences: \(written)"); return }
        let minSequences = "[" + sequences.map { value -> String in
            if case .int(let number) = value { return String(number) }
            return "0"
        }.joined(separator: ",") + "]"
        let read = try ok(client, #"{"op":"get","token":"tok","ids":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19],"min_sequences":\#(minSequences),"timeout_ms":20000}"#)
        guard case .array(let found)? = read["items"] else { Issue.record("no items"); return }
        #expect(found.count == 20)

        // A new replica of shard 0 registers itself: the router adds it and sends it reads.
        let added = try replica(shard: 0)
        b0 = added
        let grown = try waitForMembership(client, seconds: 15) { $0[0].count == 2 }
        #expect(grown[0] == ["127.0.0.1:\(a0.port)", "127.0.0.1:\(added.port)"].sorted())
        let before = try getCount(added)
        for _ in 0..<20 {
            _ = try ok(client, #"{"op":"get","token":"tok","ids":[0,1,2,3,4,5,6,7],"min_sequences":\#(minSequences),"timeout_ms":20000}"#)
        }
        #expect(try getCount(added) > before, "the new replica received reads")

        // It stops heartbeating (frozen: its sockets stay open, and a 30 s shard timeout keeps the health
        // check from marking it down): its heartbeat expires and the router drops it.
        Foundation.kill(added.process.processIdentifier, SIGSTOP)
        let shrunk = try waitForMembership(client, seconds: 20) { $0[0].count == 1 }
        #expect(shrunk[0] == ["127.0.0.1:\(a0.port)"], "a replica that stopped heartbeating is dropped")
        // Reads go on from the replica that is left, without waiting on the frozen one.
        let started = Date()
        for _ in 0..<5 {
            _ = try ok(client, #"{"op":"get","token":"tok","ids":[0,1,2,3,4,5,6,7],"timeout_ms":5000}"#)
        }
        #expect(Date().timeIntervalSince(started) < 5)
        // Thawed, it heartbeats again and comes back.
        Foundation.kill(added.process.processIdentifier, SIGCONT)
        let back = try waitForMembership(client, seconds: 15) { $0[0].count == 2 }
        #expect(back[0].count == 2)
    }
}

/// A file holding the admin key the router sends to the shards.
private func keyFile() throws -> String {
    let path = NSTemporaryDirectory() + "steer-discovery-key-" + UUID().uuidString
    try Data((token + "\n").utf8).write(to: URL(fileURLWithPath: path))
    return path
}
