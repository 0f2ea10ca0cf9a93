import Logging
import SteerCore
import SteerEngine
import SteerProtocol
import SteerWriteLog
import Testing

@testable import SteerRouter

/// A `ShardLog` in memory: records every append, answers increasing sequences per shard, and fails the
/// shards in `failing` with the given error.
private final class MemoryShardLog: ShardLog {
    struct Append: Sendable {
        var shard: Int
        var body: [UInt8]
    }

    let appends = Locked<[Append]>([])
    let next = Locked<[Int: UInt64]>([:])
    let failing: [Int: SteerError]

    init(failing: [Int: SteerError] = [:]) { self.failing = failing }

    func append(_ operation: WriteOperation, collection: String?, shard: Int, deadlineNanos: UInt64) async throws(SteerError) -> UInt64 {
        if let error = failing[shard] { throw error }
        appends.withLock { $0.append(Append(shard: shard, body: WriteLogMessage.encode(operation, collection: collection))) }
        return next.withLock { table in
            table[shard, default: 100 * UInt64(shard)] += 1
            return table[shard]!
        }
    }

    func appendChange(_ change: Request.Operation, shard: Int, deadlineNanos: UInt64) async throws(SteerError) -> UInt64 {
        if let error = failing[shard] { throw error }
        let body = try CollectionChange.encode(change)
        appends.withLock { $0.append(Append(shard: shard, body: body)) }
        return next.withLock { table in
            table[shard, default: 100 * UInt64(shard)] += 1
            return table[shard]!
        }
    }

    func close() async {}
}

/// `steer route --follow` without sockets (RouterStreams.swift): writes are split by the sharding function
/// and appended to each shard's log, answered with per-shard sequences; `min_sequence(s)` are checked.
@Suite struct StreamWriteTests {
    /// A router over `shards` shards whose replicas are never contacted (writes go to `log`).
    private func router(shards: Int, log: MemoryShardLog) throws -> Router {
        let endpoints = (0..<shards).map { [ShardEndpoint(host: "127.0.0.1", port: 1 + $0)] }
        return try Router(configuration: RouterConfiguration(shards: endpoints), shardLog: log, logger: Logger(label: "test"))
    }

    private func request(_ line: String) throws -> Request {
        try RequestDecoder(limits: ProtocolLimits()).decode(try JSONParser.parse(line))
    }

    private func answer(_ router: Router, _ line: String) async throws -> JSONObject {
        let output = await router.respond(try request(line))
        guard case .object(let object) = try JSONParser.parse(output) else { throw SteerError(.internal, "not an object") }
        return object
    }

    private func upsertLine(_ ids: [Int]) -> String {
        let items = ids.map { #"{"id":\#($0),"vector":[1,0,0,\#($0)],"tags":["t"]}"# }
        return #"{"op":"upsert","items":[\#(items.joined(separator: ","))]}"#
    }

    @Test func eventsGoToTheUsersShardStream_withTimestampsAndTheCollection() async throws {
        let log = MemoryShardLog()
        let router = try router(shards: 3, log: log)
        defer { Task { await router.shutdown() } }
        let users = (0..<12).map { "u\($0)" }
        // Half without ts: the router's decoder fills them in, and the messages carry them.
        let events = users.enumerated().map { index, user in
            index % 2 == 0 ? #"{"user":"\#(user)","item":\#(index),"ts":\#(index * 10)}"# : #"{"user":"\#(user)","item":\#(index)}"#
        }
        let object = try await answer(router, #"{"op":"event","collection":"books","events":[\#(events.joined(separator: ","))]}"#)
        #expect(object["ok"] == .bool(true), "\(object)")
        #expect(object["recorded"] == .int(12))
        let sharding = try Sharding(shardCount: 3)
        let decoder = RequestDecoder(limits: ProtocolLimits())
        var seen: [String] = []
        for append in log.appends.get() {
            let entry = try WriteLogMessage.decode(append.body, decoder: decoder)
            #expect(entry.collection == "books")
            guard case .events(let logged) = entry.operation else { Issue.record("not events"); continue }
            for event in logged {
                #expect(sharding.shard(of: event.user) == append.shard, "each user's events go to the user's shard")
                guard case .string(let name) = event.user, case .int(let item) = event.item else { continue }
                seen.append(name)
                if item % 2 == 0 { #expect(event.timestampMillis == item * 10) } else { #expect(event.timestampMillis > 1_700_000_000_000) }
            }
        }
        #expect(seen.sorted() == users.sorted())
        guard case .array(let sequences)? = object["sequences"] else { Issue.record("no sequences"); return }
        #expect(sequences.count == 3)

        let deleted = try await answer(router, #"{"op":"delete_user","user":"u4"}"#)
        #expect(deleted["ok"] == .bool(true), "\(deleted)")
        guard let last = log.appends.get().last else { Issue.record("nothing appended"); return }
        #expect(last.shard == sharding.shard(of: .string("u4")))
        guard case .deleteUser(.string("u4")) = try WriteLogMessage.decode(last.body, decoder: decoder).operation else {
            Issue.record("not a delete_user of u4"); return
        }
    }

    @Test func collectionChangesGoToEveryShardsStream_checkpointRefused_aFailedShardNamed() async throws {
        let log = MemoryShardLog()
        let routed = try router(shards: 3, log: log)
        defer { Task { await routed.shutdown() } }
        let created = try await answer(routed, #"{"op":"create_collection","name":"books","dimension":4,"metric":"cosine"}"#)
        #expect(created["ok"] == .bool(true), "\(created)")
        #expect(created["name"] == .string("books"))
        #expect(created["sequences"] == .array([.int(1), .int(101), .int(201)]))
        let moved = try await answer(routed, #"{"op":"alias","alias":"shelf","collection":"books"}"#)
        #expect(moved["collection"] == .string("books"))
        let decoder = RequestDecoder(limits: ProtocolLimits())
        let appends = log.appends.get()
        #expect(appends.map(\.shard).sorted() == [0, 0, 1, 1, 2, 2])
        for append in appends {
            switch try WriteLogMessage.decodeMessage(append.body, decoder: decoder) {
            case .collectionChange(.createCollection(let settings)):
                #expect(settings == CollectionSettings(name: "books", dimension: 4, metric: .cosine))
            case .collectionChange(.alias(let alias, let collection)):
                #expect(alias == "shelf" && collection == "books")
            default:
                Issue.record("not a collection change: \(String(decoding: append.body, as: UTF8.self))")
            }
        }
        // A change is not a write: the write decoder refuses it.
        #expect(throws: SteerError.self) { try WriteLogMessage.decode(appends[0].body, decoder: decoder) }

        let checkpoint = try await answer(routed, #"{"op":"create_collection","name":"ck","checkpoint":"ckpt"}"#)
        guard case .object(let error)? = checkpoint["error"] else { Issue.record("not refused: \(checkpoint)"); return }
        #expect(error["code"] == .string("invalid_request"))
        #expect(log.appends.get().count == 6, "nothing appended for the refused create")

        let failing = MemoryShardLog(failing: [1: SteerError(.unavailable, "quorum lost")])
        let partial = try router(shards: 3, log: failing)
        defer { Task { await partial.shutdown() } }
        let dropped = try await answer(partial, #"{"op":"drop_collection","name":"books"}"#)
        guard case .object(let failure)? = dropped["error"] else { Issue.record("not refused: \(dropped)"); return }
        #expect(failure["code"] == .string("unavailable"))
        let message = "\(failure["message"] ?? .null)"
        #expect(message.contains("shard 1") && message.contains("0 (sequence 1)") && message.contains("2 (sequence 201)"), "\(message)")
    }

    @Test func anUpsertIsSplitByShard_andAnsweredWithEachShardsSequence() async throws {
        let log = MemoryShardLog()
        let router = try router(shards: 3, log: log)
        defer { Task { await router.shutdown() } }
        let ids = Array(0..<20)
        let object = try await answer(router, upsertLine(ids))
        #expect(object["ok"] == .bool(true), "\(object)")
        #expect(object["upserted"] == .int(20))
        let sharding = try Sharding(shardCount: 3)
        let appends = log.appends.get()
        let touched = Set(ids.map { sharding.shard(of: .int(Int64($0))) })
        #expect(Set(appends.map(\.shard)) == touched)
        #expect(appends.count == touched.count, "one message per shard")
        let decoder = RequestDecoder(limits: ProtocolLimits())
        for append in appends {
            guard case .upsert(let items) = try WriteLogMessage.decode(append.body, decoder: decoder).operation else {
                Issue.record("not an upsert"); continue
            }
            #expect(items.allSatisfy { sharding.shard(of: $0.id) == append.shard }, "each shard's stream gets only its items")
            for item in items {
                guard case .int(let number) = item.id else { Issue.record("not an int id"); continue }
                #expect(item.vector == [1, 0, 0, Float(number)], "exact vectors")
            }
        }
        let expected: [JSONValue] = (0..<3).map { touched.contains($0) ? .int(Int64(100 * $0 + 1)) : .int(0) }
        #expect(object["sequences"] == .array(expected))
        #expect(object["sequence"] == nil, "one sequence means nothing across several streams")
        let deleted = try await answer(router, #"{"op":"delete","ids":[0]}"#)
        #expect(deleted["deleted"] == .int(1))
        let shard = sharding.shard(of: .int(0))
        guard case .array(let sequences)? = deleted["sequences"] else { Issue.record("no sequences"); return }
        #expect(sequences[shard] == .int(Int64(100 * shard + 2)))
    }

    @Test func aShardThatCannotAppend_failsTheWrite_andNamesTheShardsThatDid() async throws {
        let sharding = try Sharding(shardCount: 2)
        let ids = Array(0..<10)
        let log = MemoryShardLog(failing: [1: SteerError(.unavailable, "NATS lost its quorum")])
        let router = try router(shards: 2, log: log)
        defer { Task { await router.shutdown() } }
        let object = try await answer(router, upsertLine(ids))
        #expect(object["ok"] == .bool(false))
        guard case .object(let error)? = object["error"], case .string(let message)? = error["message"] else {
            Issue.record("no error: \(object)"); return
        }
        #expect(error["code"] == .string("unavailable"))
        #expect(message.contains("shard 1: NATS lost its quorum"))
        if ids.contains(where: { sharding.shard(of: .int(Int64($0))) == 0 }) {
            #expect(message.contains("shard 0 (sequence 1) appended their part"), "\(message)")
        }
    }

    @Test func aOneShardClusterAlsoAnswersSequence_andTakesMinSequence() async throws {
        let log = MemoryShardLog()
        let router = try router(shards: 1, log: log)
        defer { Task { await router.shutdown() } }
        let object = try await answer(router, upsertLine([7]))
        #expect(object["sequence"] == .int(1))
        #expect(object["sequences"] == .array([.int(1)]))
        try router.checkSequences(try request(#"{"op":"get","ids":[7],"min_sequence":1}"#))
    }

    @Test func minSequencesMustNameEveryShard_andMinSequenceIsRefusedAcrossShards() async throws {
        let router = try router(shards: 2, log: MemoryShardLog())
        defer { Task { await router.shutdown() } }
        #expect(throws: SteerError.self) { try router.checkSequences(try request(#"{"op":"get","ids":[1],"min_sequences":[1]}"#)) }
        #expect(throws: SteerError.self) { try router.checkSequences(try request(#"{"op":"get","ids":[1],"min_sequence":3}"#)) }
        #expect(throws: SteerError.self) {
            try router.checkSequences(try request(#"{"op":"get","ids":[1],"min_sequence":3,"min_sequences":[1,2]}"#))
        }
        try router.checkSequences(try request(#"{"op":"get","ids":[1],"min_sequences":[0,5]}"#))
        // Without streams, min_sequences is refused (min_sequence passes as before: it is not forwarded).
        let plain = try Router(configuration: RouterConfiguration(shards: [[ShardEndpoint(host: "127.0.0.1", port: 1)]]), logger: Logger(label: "test"))
        defer { Task { await plain.shutdown() } }
        #expect(throws: SteerError.self) { try plain.checkSequences(try request(#"{"op":"get","ids":[1],"min_sequences":[1]}"#)) }
        try plain.checkSequences(try request(#"{"op":"get","ids":[1],"min_sequence":1}"#))
    }

    @Test func vectorsTheShardsWouldRefuse_areRefusedBeforeAppending() async throws {
        let log = MemoryShardLog()
        let router = try router(shards: 2, log: log)
        defer { Task { await router.shutdown() } }
        for replica in router.replicas.joined() {
            replica.health.withLock { $0.dimension = 4; $0.cosine = true }
        }
        let wrong = try await answer(router, #"{"op":"upsert","items":[{"id":1,"vector":[1,2,3]}]}"#)
        guard case .object(let error)? = wrong["error"] else { Issue.record("accepted: \(wrong)"); return }
        #expect(error["code"] == .string("dimension_mismatch"))
        let zero = try await answer(router, #"{"op":"upsert","items":[{"id":1,"vector":[0,0,0,0]}]}"#)
        guard case .object(let zeroError)? = zero["error"] else { Issue.record("accepted: \(zero)"); return }
        #expect(zeroError["code"] == .string("invalid_request"))
        #expect(log.appends.get().isEmpty, "nothing refused reaches the log")
    }

    @Test func minSequenceIsAddedToAShardLine() throws {
        let line = Router.withMinSequence(Array(#"{"op":"get","ids":[1]}"#.utf8), 42)
        let decoded = try RequestDecoder(limits: ProtocolLimits()).decode(try JSONParser.parse(line))
        #expect(decoded.minSequence == 42)
        #expect(Router.withMinSequence(Array("{}".utf8), 1) == Array(#"{"min_sequence":1}"#.utf8))
    }

    @Test func natsAddressLists() {
        #expect(NATSAddresses("nats://127.0.0.1:4222,127.0.0.1:4223, host")?.addresses.map(\.port) == [4222, 4223, 4222])
        #expect(NATSAddresses("") == nil)
        #expect(NATSAddresses("nats://a:1,") == nil)
        #expect(NATSAddresses("nats://user@a:1") == nil)
        #expect(NATSAddresses("a:70000") == nil)
        #expect(NATSAddresses(Array(repeating: "a:1", count: 17).joined(separator: ",")) == nil)
    }
}
