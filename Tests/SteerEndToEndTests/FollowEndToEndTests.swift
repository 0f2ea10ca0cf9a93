import Foundation
import SteerClient
import SteerCore
import SteerNATS
import SteerProtocol
import Testing

/// `steer serve --follow` (docs/scaling.md, "Following a stream"): replicas of one shard applying the
/// shard's NATS JetStream stream, against a real `nats-server` this file starts.

/// One `nats-server -js` on a free loopback port with its own store directory, stopped on deinit (also
/// used by RouteFollowEndToEndTests).
/// (SteerNATSTests has a fuller helper with clusters; test targets cannot share code, and these tests
/// need only this.)
final class NATSNode {
    let process = Process()
    let port: Int
    let directory = NSTemporaryDirectory() + "steer-follow-nats-" + UUID().uuidString

    init() throws {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
            .first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let binary else { throw SteerError(.notFound, "nats-server not found: run `make setup-system` (Debian package nats-server)") }
        port = try freeTCPPort()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", directory + "/store"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(15)
        while (try? SteerConnection(host: "127.0.0.1", port: port)) == nil {
            guard process.isRunning, Date() < deadline else { throw SteerError(.unavailable, "nats-server did not listen on \(port)") }
            usleep(50_000)
        }
    }

    var url: String { "nats://127.0.0.1:\(port)" }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SteerError(.io, "socket failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw SteerError(.io, "bind failed") }
    return Int(UInt16(bigEndian: address.sin_port))
}

private let token = "tok"

/// A following replica of shard 0 of `cluster` (4-d, Flat, admin key `tok`).
private func replica(_ nats: NATSNode, cluster: String, directory: String? = nil) throws -> ServerProcess {
    try ServerProcess(directory: directory, arguments: [
        "--dimension", "4", "--admin-token", token, "--follow", nats.url, "--cluster", cluster, "--shard", "0",
    ])
}

/// Deterministic 4-d vectors.
private func vector(_ id: Int, round: Int) -> String {
    var generator = SeededGenerator(seed: UInt64(id * 7919 + round * 104_729 + 1))
    return "[" + (0..<4).map { _ in String(Float.random(in: -1...1, using: &generator)) }.joined(separator: ",") + "]"
}

private func upsertLine(_ ids: Range<Int>, round: Int) -> String {
    let items = ids.map { id in
        #"{"id":\#(id),"vector":\#(vector(id, round: round)),"title":"t\#(id)-r\#(round)","tags":["r\#(round % 3)"]}"#
    }
    return #"{"op":"upsert","token":"tok","items":[\#(items.joined(separator: ","))]}"#
}

/// The answer of `get` for `ids` after `minSequence` was applied (items and missing ids).
private func contents(_ connection: SteerConnection, ids: Range<Int>, minSequence: UInt64) throws -> (JSONValue?, JSONValue?) {
    let answer = try ok(connection, #"{"op":"get","token":"tok","ids":[\#(ids.map(String.init).joined(separator: ","))],"min_sequence":\#(minSequence),"timeout_ms":20000}"#)
    return (answer["items"], answer["missing"])
}

private func searchHits(_ connection: SteerConnection, query: Int, minSequence: UInt64) throws -> JSONValue? {
    try ok(connection, #"{"op":"search","token":"tok","vector":\#(vector(query, round: 99)),"k":10,"min_sequence":\#(minSequence),"timeout_ms":20000}"#)["hits"]
}

private func appliedSequence(_ connection: SteerConnection) throws -> JSONValue? {
    try ok(connection, #"{"op":"stats","token":"tok"}"#)["applied_sequence"]
}

@Suite(.serialized) struct FollowEndToEndTests {
    @Test func writesThroughOneReplica_appearOnTheOther_andMinSequenceReadsYourWrites() throws {
        let nats = try NATSNode()
        let a = try replica(nats, cluster: "t1")
        let b = try replica(nats, cluster: "t1")
        defer { a.terminate(); b.terminate(); a.removeData(); b.removeData() }
        let toA = try a.connection()
        let toB = try b.connection()

        var last: UInt64 = 0
        for start in stride(from: 0, to: 40, by: 8) {
            let answer = try ok(toA, upsertLine(start..<start + 8, round: 0))
            #expect(answer["upserted"] == .int(8))
            let next = try sequence(of: answer)
            #expect(next == last + 1, "sequences increase by one per write")
            last = next
        }
        let deleted = try ok(toA, #"{"op":"delete","token":"tok","ids":[3,4,999]}"#)
        #expect(deleted["deleted"] == .int(2))
        last = try sequence(of: deleted)
        // A write answers after its own replica applied it: A reads it at once, without min_sequence.
        let onA = try ok(toA, #"{"op":"get","token":"tok","ids":[0,3]}"#)
        #expect(onA["missing"] == .array([.int(3)]))

        let ids = 0..<41
        let fromA = try contents(toA, ids: ids, minSequence: last)
        let fromB = try contents(toB, ids: ids, minSequence: last)
        #expect(fromA.0 == fromB.0)
        #expect(fromA.1 == fromB.1)
        #expect(fromB.1 == .array([.int(3), .int(4), .int(40)]))
        for query in 0..<5 {
            let hitsA = try searchHits(toA, query: query, minSequence: last)
            #expect(hitsA != nil)
            #expect(hitsA == (try searchHits(toB, query: query, minSequence: last)))
        }
        #expect(try appliedSequence(toB) == .int(Int64(last)))

        // Read-your-writes on the other replica: write through A, read through B with the sequence.
        for round in 1...5 {
            let written = try sequence(of: try ok(toA, upsertLine(100 + round..<101 + round, round: round)))
            let read = try ok(toB, #"{"op":"get","token":"tok","ids":[\#(100 + round)],"min_sequence":\#(written),"timeout_ms":10000}"#)
            guard case .array(let items)? = read["items"], case .object(let item)? = items.first else {
                Issue.record("B did not return item \(100 + round) at min_sequence \(written): \(read)")
                continue
            }
            #expect(item["title"] == .string("t\(100 + round)-r\(round)"))
        }

        // A sequence nobody wrote: B waits until (just before) the deadline, then answers unavailable.
        let started = Date()
        let ahead = try call(toB, #"{"op":"get","token":"tok","ids":[1],"min_sequence":\#(last + 1000),"timeout_ms":400}"#)
        let waited = Date().timeIntervalSince(started)
        guard case .object(let error)? = ahead["error"] else {
            Issue.record("expected an error, got \(ahead)")
            return
        }
        #expect(error["code"] == .string("unavailable"))
        #expect(waited >= 0.3 && waited < 5, "waited \(waited) s for a 400 ms deadline")
    }

    @Test func aReplicaKilledDuringWrites_catchesUpWithoutLosingOrDoubleApplying() throws {
        let nats = try NATSNode()
        let a = try replica(nats, cluster: "t2")
        var b = try replica(nats, cluster: "t2")
        let bDirectory = b.directory
        defer { a.terminate(); b.terminate(); a.removeData(); b.removeData() }
        let toA = try a.connection()

        // Writes through A that overwrite the same ids with new titles and vectors each round, and delete
        // some: a message applied twice, out of order, or lost leaves B different from A.
        var last: UInt64 = 0
        func write(round: Int) throws {
            last = try sequence(of: try ok(toA, upsertLine(0..<20, round: round)))
            last = try sequence(of: try ok(toA, #"{"op":"delete","token":"tok","ids":[\#(round % 20),\#((round * 7) % 20)]}"#))
        }
        for round in 0..<10 { try write(round: round) }
        // Kill B while A keeps writing from another thread, so B is likely applying when it dies.
        let port = a.port
        let done = Locked(0)
        let writer = Thread {
            guard let connection = try? SteerConnection(host: "127.0.0.1", port: port) else { return }
            for round in 10..<40 {
                _ = try? connection.roundTrip(Array(upsertLine(0..<20, round: round).utf8))
                done.withLock { $0 += 1 }
            }
        }
        writer.start()
        while done.get() < 5 { usleep(2_000) }
        b.kill()
        #expect(done.get() < 30, "B was killed while A was still taking writes")
        while !writer.isFinished { usleep(20_000) }
        for round in 40..<50 { try write(round: round) }

        b = try replica(nats, cluster: "t2", directory: bDirectory)
        let toB = try b.connection()
        let ids = 0..<20
        let fromA = try contents(toA, ids: ids, minSequence: last)
        let fromB = try contents(toB, ids: ids, minSequence: last)
        #expect(fromA.0 != nil)
        #expect(fromA.0 == fromB.0)
        #expect(fromA.1 == fromB.1)
        for query in 0..<5 {
            #expect(try searchHits(toA, query: query, minSequence: last) == (try searchHits(toB, query: query, minSequence: last)))
        }
        let statsA = try ok(toA, #"{"op":"stats","token":"tok"}"#)
        let statsB = try ok(toB, #"{"op":"stats","token":"tok"}"#)
        #expect(statsA["items"] == statsB["items"])
        #expect(statsA["indexed"] == statsB["indexed"])
        #expect(statsB["items"] == statsB["indexed"])
        // (`store_sequence` differs: B applied its backlog in fewer, larger RocksDB batches, each writing
        // only the net change of its messages. A message at or below the stored sequence is never applied
        // again: ApplyTests and StreamSequenceTests.)
        #expect(statsB["applied_sequence"] == .int(Int64(last)))
        #expect(statsA["applied_sequence"] == .int(Int64(last)))
    }

    @Test func aDuplicatePublish_isAppliedOnce_andAHostileMessageIsSkippedByEveryReplica() async throws {
        let nats = try NATSNode()
        let a = try replica(nats, cluster: "t3")
        defer { a.terminate(); a.removeData() }
        let client = try await NATSConnection.connect(host: "127.0.0.1", port: nats.port)
        let jetStream = JetStreamContext(connection: client)
        let subject = "steer.t3.shard.0"
        let first = #"{"op":"upsert","items":[{"id":7,"vector":[1,0,0,0],"title":"first"}]}"#
        let second = #"{"op":"upsert","items":[{"id":7,"vector":[0,1,0,0],"title":"second"}]}"#
        let ack1 = try await jetStream.publish(subject, payload: Array(first.utf8), messageID: "write-7")
        let ack2 = try await jetStream.publish(subject, payload: Array(second.utf8), messageID: "write-7")
        #expect(ack2.isDuplicate)
        #expect(ack2.seq == ack1.seq)
        // Bytes no client could have sent, then a valid write: the replica records the first as refused
        // and applies the second.
        let bad = try await jetStream.publish(subject, payload: Array(#"{"op":"swap","generation":"x"}"#.utf8), messageID: "bad-1")
        let garbage = try await jetStream.publish(subject, payload: [0xFF, 0x00, 0x7B], messageID: "bad-2")
        let after = try await jetStream.publish(subject, payload: Array(#"{"op":"upsert","items":[{"id":8,"vector":[0,0,1,0],"title":"after"}]}"#.utf8), messageID: "write-8")
        #expect(bad.seq == ack1.seq + 1 && garbage.seq == bad.seq + 1 && after.seq == garbage.seq + 1)
        await client.close()

        let toA = try a.connection()
        let read = try ok(toA, #"{"op":"get","token":"tok","ids":[7,8],"min_sequence":\#(after.seq),"timeout_ms":10000}"#)
        guard case .array(let items)? = read["items"], items.count == 2,
              case .object(let seven) = items[0], case .object(let eight) = items[1] else {
            Issue.record("expected items 7 and 8: \(read)")
            return
        }
        #expect(seven["title"] == .string("first"))
        #expect(eight["title"] == .string("after"))
        #expect(try appliedSequence(toA) == .int(Int64(after.seq)))
        // A replica started afterwards reads the same history the same way.
        let b = try replica(nats, cluster: "t3")
        defer { b.terminate(); b.removeData() }
        let toB = try b.connection()
        let readB = try ok(toB, #"{"op":"get","token":"tok","ids":[7,8],"min_sequence":\#(after.seq),"timeout_ms":10000}"#)
        #expect(readB["items"] == read["items"])
    }

    /// Batch messages (several writes in one message, as a router's group commit appends them:
    /// `WriteLogMessage.encodeBatch`): each line applies in order; a batch published again with its
    /// message id is stored once; a bad line is refused alone; a replica SIGKILLed while it applies a
    /// backlog of batch messages (between a pull and its apply, or inside one) converges with a replica
    /// that applied the whole stream once.
    @Test func batchMessages_applyLineByLine_aRepublishedBatchIsStoredOnce_andAKilledReplicaConverges() async throws {
        let nats = try NATSNode()
        var a = try replica(nats, cluster: "t5")
        let aDirectory = a.directory
        defer { a.terminate(); a.removeData() }
        let client = try await NATSConnection.connect(host: "127.0.0.1", port: nats.port)
        let jetStream = JetStreamContext(connection: client)
        let subject = "steer.t5.shard.0"
        let batch = [
            #"{"op":"upsert","items":[{"id":1,"vector":[1,0,0,0],"title":"a"}]}"#,
            #"{"op":"delete","ids":[1]}"#,
            #"{"op":"upsert","items":[{"id":1,"vector":[0,1,0,0],"title":"b"},{"id":2,"vector":[0,0,1,0],"title":"c"}]}"#,
            #"{"op":"upsert","items":[{"id":3,"vector":[1,2,3]}]}"#,
            #"{"op":"event","events":[{"user":"u","item":1,"kind":"click","ts":5}]}"#,
            #"{"op":"upsert","items":[{"id":4,"vector":[0,0,0,1],"title":"d"}]}"#,
        ].joined(separator: "\n")
        let first = try await jetStream.publish(subject, payload: Array(batch.utf8), messageID: "batch-1")
        let again = try await jetStream.publish(subject, payload: Array(batch.utf8), messageID: "batch-1")
        #expect(again.isDuplicate)
        #expect(again.seq == first.seq)
        let toA = try a.connection()
        let read = try ok(toA, #"{"op":"get","token":"tok","ids":[1,2,3,4],"min_sequence":\#(first.seq),"timeout_ms":10000}"#)
        guard case .array(let items)? = read["items"] else { Issue.record("no items: \(read)"); return }
        let titles = items.compactMap { item -> String? in
            guard case .object(let fields) = item, case .string(let title)? = fields["title"] else { return nil }
            return title
        }
        #expect(titles == ["b", "c", "d"])
        #expect(read["missing"] == .array([.int(3)]))
        let stats = try ok(toA, #"{"op":"stats","token":"tok"}"#)
        #expect(stats["refused_messages"] == .int(2))
        #expect(stats["applied_sequence"] == .int(Int64(first.seq)))

        // A backlog of batch messages (overwrites and deletions of the same ids), A killed while applying it.
        var last = first.seq
        func publishRounds(_ rounds: Range<Int>) async throws {
            for round in rounds {
                var lines = (0..<8).map { part in upsertLine((part * 5)..<(part * 5 + 5), round: round * 8 + part).replacingOccurrences(of: #""token":"tok","#, with: "") }
                lines.append(#"{"op":"delete","ids":[\#(round % 40),\#((round * 7) % 40)]}"#)
                last = try await jetStream.publish(subject, payload: Array(lines.joined(separator: "\n").utf8), messageID: "round-\(round)").seq
            }
        }
        try await publishRounds(0..<150)
        a.kill()
        try await publishRounds(150..<200)
        await client.close()
        a = try replica(nats, cluster: "t5", directory: aDirectory)
        let b = try replica(nats, cluster: "t5")
        defer { b.terminate(); b.removeData() }
        let ids = 0..<40
        let fromA = try contents(try a.connection(), ids: ids, minSequence: last)
        let fromB = try contents(try b.connection(), ids: ids, minSequence: last)
        #expect(fromA.0 != nil)
        #expect(fromA.0 == fromB.0)
        #expect(fromA.1 == fromB.1)
        let statsA = try ok(try a.connection(), #"{"op":"stats","token":"tok"}"#)
        let statsB = try ok(try b.connection(), #"{"op":"stats","token":"tok"}"#)
        #expect(statsA["items"] == statsB["items"])
        #expect(statsA["items"] == statsA["indexed"])
        #expect(statsB["applied_sequence"] == .int(Int64(last)))
    }

    @Test func withoutFollow_minSequenceIsUnavailableAtOnce_andWritesCarryNoSequence() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", token])
        defer { server.terminate(); server.removeData() }
        let connection = try server.connection()
        let written = try ok(connection, upsertLine(0..<2, round: 0))
        #expect(written["sequence"] == nil)
        let answer = try call(connection, #"{"op":"get","token":"tok","ids":[1],"min_sequence":1,"timeout_ms":2000}"#)
        guard case .object(let error)? = answer["error"] else {
            Issue.record("expected an error, got \(answer)")
            return
        }
        #expect(error["code"] == .string("unavailable"))
        #expect(try ok(connection, #"{"op":"get","token":"tok","ids":[1],"min_sequence":0}"#)["items"] != nil)
    }
}
