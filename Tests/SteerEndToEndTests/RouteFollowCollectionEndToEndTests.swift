import Foundation
import SteerClient
import SteerCore
import SteerProtocol
import Testing

/// Collection changes through the streams (docs/scaling.md, "Collections in the stream"): with
/// `steer route --follow`, `create_collection`, `drop_collection` and `alias` are appended to every shard's
/// stream and applied by every replica at its place among the writes; a real `nats-server`, two shards of
/// two `steer serve --follow` replicas.

private let token = "tok"

private func sequences(of answer: JSONObject) throws -> [UInt64] {
    guard case .array(let values)? = answer["sequences"] else { throw SteerError(.internal, "answer has no sequences: \(answer)") }
    return try values.map { value in
        guard case .int(let number) = value, number > 0 else { throw SteerError(.internal, "bad sequence in \(answer)") }
        return UInt64(number)
    }
}

private func merged(_ a: [UInt64], _ b: [UInt64]) -> [UInt64] { zip(a, b).map { max($0, $1) } }

/// Two shards of two following replicas (2-d default collection) and a following router.
private final class Cluster {
    let nats: NATSNode
    let name = "rc" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
    var replicas: [[ServerProcess]] = []
    var router: ServerProcess!

    init() throws {
        nats = try NATSNode()
        for shard in 0..<2 { replicas.append(try (0..<2).map { _ in try replica(shard: shard) }) }
        let shardFlags = replicas.flatMap { set in ["--shard", set.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")] }
        router = try ServerProcess(arguments: shardFlags + [
            "--admin-token", token, "--follow", nats.url, "--cluster", name, "--health-interval-ms", "100",
        ], route: true)
    }

    func replica(shard: Int, directory: String? = nil) throws -> ServerProcess {
        try ServerProcess(directory: directory, arguments: [
            "--dimension", "2", "--admin-token", token, "--public-reads", "true",
            "--follow", nats.url, "--cluster", name, "--shard", String(shard),
        ])
    }

    func stop() {
        router?.terminate()
        for replica in replicas.joined() { replica.terminate(); replica.removeData() }
    }
}

/// What a replica holds of `collection` after `minSequence`: the answer to `get` of `ids` and a search.
private func contents(_ replica: ServerProcess, collection: String, ids: Range<Int>, minSequence: UInt64, dimension: Int) throws -> String {
    let connection = try replica.connection()
    let list = ids.map(String.init).joined(separator: ",")
    let got = try ok(connection, #"{"op":"get","collection":"\#(collection)","ids":[\#(list)],"min_sequence":\#(minSequence),"timeout_ms":20000}"#)
    let query = (0..<dimension).map { String($0 + 1) }.joined(separator: ",")
    let hits = try ok(connection, #"{"op":"search","collection":"\#(collection)","vector":[\#(query)],"k":5}"#)
    return "\(got["items"] ?? .null) \(got["missing"] ?? .null) \(hits["hits"] ?? .null)"
}

/// The collection names and aliases a replica lists after `minSequence`.
private func listing(_ replica: ServerProcess, minSequence: UInt64) throws -> (names: [String], aliases: JSONValue?) {
    let answer = try ok(try replica.connection(), #"{"op":"list_collections","token":"tok","min_sequence":\#(minSequence),"timeout_ms":20000}"#)
    guard case .array(let collections)? = answer["collections"] else { throw SteerError(.internal, "no collections in \(answer)") }
    let names = collections.compactMap { value -> String? in
        if case .object(let object) = value, case .string(let name)? = object["name"] { return name }
        return nil
    }
    return (names.sorted(), answer["aliases"])
}

private func refusedMessages(_ replica: ServerProcess) throws -> JSONValue? {
    try ok(try replica.connection(), #"{"op":"stats","token":"tok"}"#)["refused_messages"]
}

@Suite(.serialized) struct RouteFollowCollectionEndToEndTests {
    @Test func collectionsCreatedThroughTheRouter_reachEveryReplica_surviveAKill_andADropRemovesThem() throws {
        let cluster = try Cluster()
        defer { cluster.stop() }
        let client = try cluster.router.connection()

        var latest = try sequences(of: try ok(client, #"{"op":"create_collection","token":"tok","name":"books","dimension":3}"#))
        for shard in 0..<2 {
            for replica in cluster.replicas[shard] {
                let described = try ok(try replica.connection(), #"{"op":"describe_collection","token":"tok","name":"books","min_sequence":\#(latest[shard]),"timeout_ms":20000}"#)
                #expect(described["dimension"] == .int(3))
            }
        }
        // Through the router, with the create's sequences: every shard lists it.
        let listed = try ok(client, #"{"op":"list_collections","token":"tok","min_sequences":[\#(latest[0]),\#(latest[1])],"timeout_ms":20000}"#)
        #expect(listed["consistent"] == .bool(true), "\(listed)")
        #expect("\(listed["collections"] ?? .null)".contains("books"))
        // A collection from a checkpoint cannot go through the stream: refused by the router and by a replica.
        for connection in [client, try cluster.replicas[0][0].connection()] {
            let refused = try call(connection, #"{"op":"create_collection","token":"tok","name":"ck","checkpoint":"ckpt"}"#)
            guard case .object(let error)? = refused["error"] else { Issue.record("not refused: \(refused)"); continue }
            #expect(error["code"] == .string("invalid_request"))
            #expect("\(error["message"] ?? .null)".contains("checkpoint"))
        }

        // One replica of shard 0 crashes; a collection is created and written while it is down.
        let down = cluster.replicas[0][1]
        down.kill()
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"create_collection","token":"tok","name":"films","dimension":4,"metric":"cosine"}"#)))
        for round in 0..<3 {
            let books = (0..<16).map { id in #"{"id":\#(id),"vector":[\#(id),\#(round),1],"title":"b\#(id)-\#(round)"}"# }
            latest = merged(latest, try sequences(of: try ok(client, #"{"op":"upsert","token":"tok","collection":"books","items":[\#(books.joined(separator: ","))]}"#)))
            let films = (0..<16).map { id in #"{"id":\#(id),"vector":[1,\#(id),\#(round),2]}"# }
            latest = merged(latest, try sequences(of: try ok(client, #"{"op":"upsert","token":"tok","collection":"films","items":[\#(films.joined(separator: ","))]}"#)))
        }
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"delete","token":"tok","collection":"films","ids":[2,3]}"#)))
        cluster.replicas[0][1] = try cluster.replica(shard: 0, directory: down.directory)

        for shard in 0..<2 {
            let (books0, books1) = (try contents(cluster.replicas[shard][0], collection: "books", ids: 0..<16, minSequence: latest[shard], dimension: 3),
                                    try contents(cluster.replicas[shard][1], collection: "books", ids: 0..<16, minSequence: latest[shard], dimension: 3))
            #expect(books0 == books1, "shard \(shard) books")
            #expect(books0.contains("b0-2") || books0.contains("b1-2"), "shard \(shard) holds round 2's items: \(books0)")
            let (films0, films1) = (try contents(cluster.replicas[shard][0], collection: "films", ids: 0..<16, minSequence: latest[shard], dimension: 4),
                                    try contents(cluster.replicas[shard][1], collection: "films", ids: 0..<16, minSequence: latest[shard], dimension: 4))
            #expect(films0 == films1, "shard \(shard) films")
        }
        var itemCount: Int64 = 0
        for shard in 0..<2 {
            let stats = try ok(try cluster.replicas[shard][1].connection(), #"{"op":"stats","token":"tok","collection":"films"}"#)
            guard case .int(let items)? = stats["items"] else { Issue.record("no items in \(stats)"); continue }
            itemCount += items
            #expect(stats["items"] == stats["indexed"])
        }
        #expect(itemCount == 14, "16 films less 2 deleted, over both shards")

        // Dropped through the router: gone on every replica; the same drop and create again are no-ops.
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"drop_collection","token":"tok","name":"films"}"#)))
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"drop_collection","token":"tok","name":"films"}"#)))
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"create_collection","token":"tok","name":"books","dimension":3}"#)))
        for shard in 0..<2 {
            for replica in cluster.replicas[shard] {
                #expect(try listing(replica, minSequence: latest[shard]).names == ["books", "default"])
                #expect(try refusedMessages(replica) == .int(0))
            }
        }
        // A create that conflicts with what the replicas hold is appended, then refused alike by every replica.
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"create_collection","token":"tok","name":"books","dimension":5}"#)))
        for shard in 0..<2 {
            for replica in cluster.replicas[shard] {
                let described = try ok(try replica.connection(), #"{"op":"describe_collection","token":"tok","name":"books","min_sequence":\#(latest[shard]),"timeout_ms":20000}"#)
                #expect(described["dimension"] == .int(3))
                #expect(try refusedMessages(replica) == .int(1))
            }
        }
        // Dropped and created again with another dimension right after, then written: every replica
        // holds the new collection with the new items only.
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"drop_collection","token":"tok","name":"books"}"#)))
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"create_collection","token":"tok","name":"books","dimension":5}"#)))
        let fresh = (0..<16).map { id in #"{"id":\#(id),"vector":[1,2,3,4,\#(id)],"title":"new\#(id)"}"# }
        latest = merged(latest, try sequences(of: try ok(client, #"{"op":"upsert","token":"tok","collection":"books","items":[\#(fresh.joined(separator: ","))]}"#)))
        for shard in 0..<2 {
            let (books0, books1) = (try contents(cluster.replicas[shard][0], collection: "books", ids: 0..<16, minSequence: latest[shard], dimension: 5),
                                    try contents(cluster.replicas[shard][1], collection: "books", ids: 0..<16, minSequence: latest[shard], dimension: 5))
            #expect(books0 == books1, "shard \(shard) books after the re-create")
            #expect(!books0.contains("b0-") && !books0.contains("b1-") && books0.contains("new"), "\(books0)")
            for replica in cluster.replicas[shard] {
                let described = try ok(try replica.connection(), #"{"op":"describe_collection","token":"tok","name":"books"}"#)
                #expect(described["dimension"] == .int(5))
                #expect(described["items"] == described["indexed"])
                #expect(try refusedMessages(replica) == .int(1))
            }
        }
    }

    @Test func anAliasMovedThroughTheLog_splitsInFlightWritesAtTheSameStreamPositionOnEveryReplica() throws {
        let cluster = try Cluster()
        defer { cluster.stop() }
        let client = try cluster.router.connection()
        for name in ["v1", "v2"] {
            _ = try ok(client, #"{"op":"create_collection","token":"tok","name":"\#(name)","dimension":2}"#)
        }
        _ = try ok(client, #"{"op":"alias","token":"tok","alias":"cur","collection":"v1"}"#)

        // Writes to the alias, one item each, from another connection while the alias moves.
        let total = 60
        let written = Locked<[(id: Int, sequences: [UInt64])]>([])
        let failures = Locked<[String]>([])
        let port = cluster.router.port
        let writer = Thread {
            do {
                let connection = try SteerConnection(host: "127.0.0.1", port: port)
                for id in 0..<total {
                    let answer = try ok(connection, #"{"op":"upsert","token":"tok","collection":"cur","items":[{"id":\#(id),"vector":[1,\#(id)]}]}"#)
                    let appended = try answer["sequences"].map { value -> [UInt64] in
                        guard case .array(let values) = value else { throw SteerError(.internal, "bad sequences") }
                        return values.map { if case .int(let n) = $0 { UInt64(max(0, n)) } else { 0 } }
                    } ?? []
                    written.withLock { $0.append((id, appended)) }
                }
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        writer.start()
        while written.get().count < total / 3 && !writer.isFinished { usleep(1_000) }
        let moved = try sequences(of: try ok(client, #"{"op":"alias","token":"tok","alias":"cur","collection":"v2"}"#))
        while !writer.isFinished { usleep(10_000) }
        #expect(failures.get().isEmpty, "\(failures.get())")
        let writes = written.get()
        #expect(writes.count == total)

        let sharding = try Sharding(shardCount: 2)
        var last = moved
        for write in writes where write.sequences.count == 2 { last = merged(last, write.sequences) }
        var before = 0
        for shard in 0..<2 {
            let ids = writes.filter { sharding.shard(of: .int(Int64($0.id))) == shard }
            let expectedV1 = ids.filter { $0.sequences[shard] < moved[shard] }.map { JSONValue.int(Int64($0.id)) }
            let expectedV2 = ids.filter { $0.sequences[shard] > moved[shard] }.map { JSONValue.int(Int64($0.id)) }
            #expect(expectedV1.count + expectedV2.count == ids.count)
            before += expectedV1.count
            let all = (0..<total).map(String.init).joined(separator: ",")
            for replica in cluster.replicas[shard] {
                let connection = try replica.connection()
                for (name, expected) in [("v1", expectedV1), ("v2", expectedV2)] {
                    let got = try ok(connection, #"{"op":"get","collection":"\#(name)","ids":[\#(all)],"min_sequence":\#(last[shard]),"timeout_ms":20000}"#)
                    guard case .array(let items)? = got["items"] else { Issue.record("no items: \(got)"); continue }
                    let found = items.compactMap { item -> JSONValue? in
                        if case .object(let object) = item { return object["id"] }
                        return nil
                    }
                    #expect(found == expected, "shard \(shard) \(name): \(found) vs \(expected)")
                }
                let aliases = try listing(replica, minSequence: last[shard]).aliases
                #expect(aliases == .object(JSONObject([("cur", .string("v2"))])))
                #expect(try refusedMessages(replica) == .int(0))
            }
        }
        #expect(before > 0 && before < total, "the move came while writes were in flight (\(before) of \(total) before it)")
    }
}
