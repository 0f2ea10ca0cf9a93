import Foundation
import SteerClient
import SteerCore
import SteerNATS
import SteerProtocol
import Testing

/// `steer serve --follow` with user histories and named collections through the stream (docs/scaling.md,
/// "Following a stream"): `event`/`delete_user` and a named collection's item writes are published to
/// the shard's stream and applied in stream order by every replica, against a real `nats-server`.

private let token = "tok"

/// A following replica of shard 0 of `cluster` (4-d, Flat, admin key `tok`).
private func replica(_ nats: NATSNode, cluster: String, directory: String? = nil) throws -> ServerProcess {
    try ServerProcess(directory: directory, arguments: [
        "--dimension", "4", "--admin-token", token, "--follow", nats.url, "--cluster", cluster, "--shard", "0",
    ])
}

private func vector(_ id: Int, round: Int) -> String {
    var generator = SeededGenerator(seed: UInt64(id * 7919 + round * 104_729 + 3))
    return "[" + (0..<4).map { _ in String(Float.random(in: -1...1, using: &generator)) }.joined(separator: ",") + "]"
}

/// An upsert of `ids` into the collection `books`.
private func booksUpsert(_ ids: Range<Int>, round: Int) -> String {
    let items = ids.map { id in #"{"id":\#(id),"vector":\#(vector(id, round: round)),"title":"b\#(id)-r\#(round)"}"# }
    return #"{"op":"upsert","token":"tok","collection":"books","items":[\#(items.joined(separator: ","))]}"#
}

/// Events of round `round` for users u0…u5 (some in the default collection's histories, explicit `ts`
/// for half of them so that equal timestamps and server-filled ones both occur).
private func eventsLine(round: Int) -> String {
    let events = (0..<6).map { user in
        let ts = user % 2 == 0 ? #","ts":\#(1000 + round)"# : ""
        return #"{"user":"u\#(user)","item":\#((round * 7 + user) % 30),"kind":"k\#(round % 3)"\#(ts)}"#
    }
    return #"{"op":"event","token":"tok","events":[\#(events.joined(separator: ","))]}"#
}

/// What a replica holds after `minSequence`: every user's history (default collection and `books`), and
/// `books`' items and a search of it.
private func state(_ connection: SteerConnection, minSequence: UInt64) throws -> [String] {
    var parts: [String] = []
    for user in 0..<6 {
        for collection in ["", #","collection":"books""#] {
            let answer = try ok(connection, #"{"op":"get_user","token":"tok","user":"u\#(user)"\#(collection),"min_sequence":\#(minSequence),"timeout_ms":20000}"#)
            parts.append("\(answer["events"] ?? .null)")
        }
    }
    let ids = (0..<40).map(String.init).joined(separator: ",")
    let items = try ok(connection, #"{"op":"get","token":"tok","collection":"books","ids":[\#(ids)],"min_sequence":\#(minSequence),"timeout_ms":20000}"#)
    parts.append("\(items["items"] ?? .null) \(items["missing"] ?? .null)")
    for query in 0..<3 {
        let hits = try ok(connection, #"{"op":"search","token":"tok","collection":"books","vector":\#(vector(query, round: 77)),"k":8,"min_sequence":\#(minSequence),"timeout_ms":20000}"#)
        parts.append("\(hits["hits"] ?? .null)")
    }
    let stats = try ok(connection, #"{"op":"stats","token":"tok","collection":"books"}"#)
    parts.append("books items \(stats["items"] ?? .null) indexed \(stats["indexed"] ?? .null)")
    return parts
}

@Suite(.serialized) struct FollowHistoryEndToEndTests {
    @Test func eventsAndANamedCollectionGoThroughTheStream_replicasConvergeAfterAKill() throws {
        let nats = try NATSNode()
        let a = try replica(nats, cluster: "h1")
        var b = try replica(nats, cluster: "h1")
        let bDirectory = b.directory
        defer { a.terminate(); b.terminate(); a.removeData(); b.removeData() }
        let toA = try a.connection()
        var toB = try b.connection()
        // Collections go through the stream: the create through B is a no-op after A's, both answered.
        for connection in [toA, toB] {
            let created = try ok(connection, #"{"op":"create_collection","token":"tok","name":"books","dimension":4}"#)
            #expect(created["dimension"] == .int(4) && created["sequence"] != nil, "\(created)")
        }
        // An alias through one replica, its deletion through the other: answered with the targets.
        let aliased = try ok(toA, #"{"op":"alias","token":"tok","alias":"shelf","collection":"books"}"#)
        #expect(aliased["previous"] == .null && aliased["collection"] == .string("books"), "\(aliased)")
        let unaliased = try ok(toB, #"{"op":"delete_alias","token":"tok","alias":"shelf"}"#)
        #expect(unaliased["collection"] == .string("books"), "\(unaliased)")
        let listed = try ok(toA, #"{"op":"list_collections","token":"tok","min_sequence":\#(try sequence(of: unaliased)),"timeout_ms":20000}"#)
        #expect(listed["aliases"] == .object(JSONObject()))

        var last: UInt64 = 0
        // Writes through both replicas: events, a named collection's items, a user's deletion.
        for round in 0..<6 {
            let through = round % 2 == 0 ? toA : toB
            let recorded = try ok(through, eventsLine(round: round))
            #expect(recorded["recorded"] == .int(6))
            last = max(last, try sequence(of: recorded))
            last = max(last, try sequence(of: try ok(through, booksUpsert(0..<20, round: round))))
            last = max(last, try sequence(of: try ok(through, #"{"op":"event","token":"tok","collection":"books","user":"u\#(round % 6)","item":\#(round),"ts":\#(round)}"#)))
        }
        let deletedUser = try ok(toB, #"{"op":"delete_user","token":"tok","user":"u1"}"#)
        #expect(deletedUser["deleted"] == .int(6), "u1 had one event per round: \(deletedUser)")
        last = try sequence(of: deletedUser)
        last = try sequence(of: try ok(toA, #"{"op":"delete","token":"tok","collection":"books","ids":[3,4]}"#))
        // A write answers after its own replica applied it: A reads u1 gone and 3 deleted at once.
        #expect(try ok(toA, #"{"op":"get_user","token":"tok","user":"u1"}"#)["events"] == .array([]))

        let before = try state(toA, minSequence: last)
        #expect(try state(toB, minSequence: last) == before)
        // Items stayed in their collection: the default collection has none of them.
        #expect(try ok(toA, #"{"op":"get","token":"tok","ids":[0,1]}"#)["items"] == .array([]))

        // Kill B while A takes writes from another thread, then restart it on its directory.
        let port = a.port
        let done = Locked(0)
        let writer = Thread {
            guard let connection = try? SteerConnection(host: "127.0.0.1", port: port) else { return }
            for round in 6..<30 {
                _ = try? connection.roundTrip(Array(eventsLine(round: round).utf8))
                _ = try? connection.roundTrip(Array(booksUpsert(10..<30, round: round).utf8))
                done.withLock { $0 += 1 }
            }
        }
        writer.start()
        while done.get() < 3 { usleep(2_000) }
        b.kill()
        #expect(done.get() < 24, "B was killed while A was still taking writes")
        while !writer.isFinished { usleep(20_000) }
        last = try sequence(of: try ok(toA, #"{"op":"delete_user","token":"tok","user":"u2"}"#))
        last = try sequence(of: try ok(toA, #"{"op":"delete","token":"tok","collection":"books","ids":[11,12,13]}"#))

        b = try replica(nats, cluster: "h1", directory: bDirectory)
        toB = try b.connection()
        let fromA = try state(toA, minSequence: last)
        #expect(fromA.count == 17)
        #expect(try state(toB, minSequence: last) == fromA)
        #expect(try ok(toB, #"{"op":"get_user","token":"tok","user":"u2"}"#)["events"] == .array([]), "u2's history was deleted")
        #expect(try ok(toB, #"{"op":"get_user","token":"tok","user":"u3"}"#)["events"] != .array([]))
        let statsA = try ok(toA, #"{"op":"stats","token":"tok"}"#)
        let statsB = try ok(toB, #"{"op":"stats","token":"tok"}"#)
        #expect(statsA["applied_sequence"] == .int(Int64(last)))
        #expect(statsB["applied_sequence"] == .int(Int64(last)))
        let books = try ok(toB, #"{"op":"stats","token":"tok","collection":"books"}"#)
        #expect(books["items"] == .int(25), "ids 0-29 less 3, 4, 11, 12, 13")
        #expect(books["indexed"] == .int(25))
        #expect(statsA["refused_messages"] == .int(0))
        #expect(statsB["refused_messages"] == .int(0))
    }

    @Test func hostileHistoryAndCollectionMessages_areSkippedAndCountedByEveryReplica() async throws {
        let nats = try NATSNode()
        let a = try replica(nats, cluster: "h2")
        let b = try replica(nats, cluster: "h2")
        defer { a.terminate(); b.terminate(); a.removeData(); b.removeData() }
        for server in [a, b] {
            _ = try ok(try server.connection(), #"{"op":"create_collection","token":"tok","name":"books","dimension":4}"#)
        }
        let client = try await NATSConnection.connect(host: "127.0.0.1", port: nats.port)
        let jetStream = JetStreamContext(connection: client)
        let subject = "steer.h2.shard.0"
        let hostile = [
            #"{"op":"event","user":"x","item":1}"#,  // no ts: each replica would use its own clock
            #"{"op":"event","events":[{"user":"x","item":1,"ts":5},{"user":"y","item":2}]}"#,
            #"{"op":"upsert","collection":"nowhere","items":[{"id":1,"vector":[1,0,0,0]}]}"#,  // no such collection
            #"{"op":"upsert","collection":"books","items":[{"id":1,"vector":[1,0,0]}]}"#,  // wrong dimension
            #"{"op":"delete_user","user":"x","token":"tok"}"#,  // a token has no business in the stream
            #"{"op":"swap","collection":"books","generation":"g"}"#,
            #"{"op":"event","user":"x","item":1,"kind":"\#(String(repeating: "k", count: 65))","ts":1}"#,
            #"{"op":"upsert","collection":"../../etc","items":[]}"#,
            // Collection changes: refused when decoded, or alike by every replica when applied.
            #"{"op":"create_collection","name":"ck","checkpoint":"ckpt"}"#,  // a checkpoint is outside the stream
            #"{"op":"create_collection","name":"../x","dimension":4}"#,
            #"{"op":"create_collection","name":"books","dimension":7}"#,  // exists with another dimension
            #"{"op":"drop_collection","name":"books","token":"tok"}"#,
            #"{"op":"drop_collection","name":"books","collection":"books"}"#,
            #"{"op":"alias","alias":"shelf","collection":"nowhere"}"#,  // no such collection
            #"{"op":"list_collections"}"#,
            #"{"op":"create_collection","name":"late","dimension":4}"#.replacingOccurrences(of: "4", with: "99999999999"),
        ]
        for (index, body) in hostile.enumerated() {
            _ = try await jetStream.publish(subject, payload: Array(body.utf8), messageID: "bad-\(index)")
        }
        let good = try await jetStream.publish(subject, payload: Array(#"{"op":"event","collection":"books","user":"x","item":9,"ts":7}"#.utf8), messageID: "good")
        await client.close()
        for server in [a, b] {
            let connection = try server.connection()
            let answer = try ok(connection, #"{"op":"get_user","token":"tok","collection":"books","user":"x","min_sequence":\#(good.seq),"timeout_ms":10000}"#)
            #expect(answer["events"] == .array([.object(JSONObject([("item", .int(9)), ("kind", .string("view")), ("ts", .int(7))]))]))
            #expect(try ok(connection, #"{"op":"get_user","token":"tok","user":"x"}"#)["events"] == .array([]))
            #expect(try ok(connection, #"{"op":"get","token":"tok","collection":"books","ids":[1]}"#)["items"] == .array([]))
            let listed = try ok(connection, #"{"op":"list_collections","token":"tok"}"#)
            #expect(listed["aliases"] == .object(JSONObject()))
            #expect("\(listed["collections"] ?? .null)".contains("\"late\"") == false)
            #expect(try ok(connection, #"{"op":"describe_collection","token":"tok","name":"books"}"#)["dimension"] == .int(4))
            let stats = try ok(connection, #"{"op":"stats","token":"tok"}"#)
            #expect(stats["refused_messages"] == .int(Int64(hostile.count)))
            #expect(stats["applied_sequence"] == .int(Int64(good.seq)))
        }
    }
}

@Suite(.serialized) struct FollowAliasEndToEndTests {
    /// Messages naming a collection by its aliases, and the default collection by an alias, in one batch:
    /// each lands in its collection, in stream order, none skipped as a redelivery.
    @Test func aliasesInOneBatch_applyToTheirCollectionsInStreamOrder() async throws {
        let nats = try NATSNode()
        var a = try replica(nats, cluster: "h3")
        let directory = a.directory
        defer { a.terminate(); a.removeData() }
        let admin = try a.connection()
        _ = try ok(admin, #"{"op":"create_collection","token":"tok","name":"books","dimension":4}"#)
        _ = try ok(admin, #"{"op":"alias","token":"tok","alias":"shelf","collection":"books"}"#)
        _ = try ok(admin, #"{"op":"alias","token":"tok","alias":"main","collection":"default"}"#)
        #expect(a.terminate() == 0)
        // Published while the replica is stopped, so that it fetches and applies them as one batch.
        let client = try await NATSConnection.connect(host: "127.0.0.1", port: nats.port)
        let jetStream = JetStreamContext(connection: client)
        let bodies = [
            #"{"op":"upsert","collection":"books","items":[{"id":1,"vector":[1,0,0,0],"title":"b1"}]}"#,
            #"{"op":"upsert","collection":"shelf","items":[{"id":2,"vector":[0,1,0,0],"title":"b2"}]}"#,
            #"{"op":"upsert","collection":"books","items":[{"id":5,"vector":[0,0,1,0],"title":"b5"}]}"#,
            #"{"op":"upsert","items":[{"id":4,"vector":[0,0,0,1],"title":"d4"}]}"#,
            #"{"op":"upsert","collection":"main","items":[{"id":3,"vector":[1,1,0,0],"title":"d3"}]}"#,
            #"{"op":"event","collection":"shelf","user":"u","item":2,"ts":9}"#,
        ]
        var last: UInt64 = 0
        for (index, body) in bodies.enumerated() {
            last = try await jetStream.publish("steer.h3.shard.0", payload: Array(body.utf8), messageID: "alias-\(index)").seq
        }
        await client.close()
        a = try replica(nats, cluster: "h3", directory: directory)
        let connection = try a.connection()
        let books = try ok(connection, #"{"op":"get","token":"tok","collection":"books","ids":[1,2,3,4,5],"min_sequence":\#(last),"timeout_ms":20000}"#)
        #expect(books["missing"] == .array([.int(3), .int(4)]), "\(books)")
        let defaults = try ok(connection, #"{"op":"get","token":"tok","ids":[1,2,3,4,5]}"#)
        #expect(defaults["missing"] == .array([.int(1), .int(2), .int(5)]), "\(defaults)")
        let events = try ok(connection, #"{"op":"get_user","token":"tok","collection":"books","user":"u"}"#)
        #expect(events["events"] != .array([]))
        let stats = try ok(connection, #"{"op":"stats","token":"tok"}"#)
        #expect(stats["refused_messages"] == .int(0))
        #expect(stats["applied_sequence"] == .int(Int64(last)))
    }
}
