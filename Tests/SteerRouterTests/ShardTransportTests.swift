import Dispatch
import Logging
import NIOCore
import NIOPosix
import SteerCore
import SteerProtocol
import SteerServer
import Testing

@testable import SteerRouter

/// A `ShardTransport` without sockets: records every request line it gets and answers it with
/// `answer(op, request)` (which may throw `ReplicaFailure` or `SteerError`, as a real replica's transport does).
private final class FakeTransport: ShardTransport {
    let answer: @Sendable (_ op: String, _ request: JSONObject) throws -> JSONObject
    let received = Locked<[JSONObject]>([])

    init(answer: @escaping @Sendable (_ op: String, _ request: JSONObject) throws -> JSONObject) { self.answer = answer }

    /// The ops of the lines received, in order.
    var ops: [String] {
        received.get().map { request in
            if case .string(let op)? = request["op"] { return op }
            return "?"
        }
    }

    func request(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject { try handle(line) }

    func healthCheck(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject { try handle(line) }

    func request(_ line: [UInt8], timeout: TimeAmount, on loop: any EventLoop) -> EventLoopFuture<JSONObject> {
        do { return loop.makeSucceededFuture(try handle(line)) } catch { return loop.makeFailedFuture(error) }
    }

    func closeConnections() {}

    private func handle(_ line: [UInt8]) throws -> JSONObject {
        guard case .object(let request) = try JSONParser.parse(line), case .string(let op)? = request["op"] else {
            throw ReplicaFailure(.transport, message: "the router sent a line that is not a request")
        }
        received.withLock { $0.append(request) }
        return try answer(op, request)
    }
}

private func object(_ text: String) -> JSONObject {
    guard case .object(let value)? = try? JSONParser.parse(text) else { fatalError("not an object: \(text)") }
    return value
}

/// A replica on generation `generation` that answers health checks, searches (one hit `hit`) and swaps;
/// `failing` ops throw a transport failure (connection reset).
private func replica(generation: String = "g1", hit: Int, failing: Set<String> = []) -> FakeTransport {
    let current = Locked(generation)
    return FakeTransport { op, request in
        if failing.contains(op) { throw ReplicaFailure(.transport, message: "connection reset by peer") }
        switch op {
        case "stats": return object(#"{"ok":true,"generation":"\#(current.get())"}"#)
        case "search": return object(#"{"ok":true,"generation":"\#(current.get())","hits":[{"id":\#(hit),"score":0.5}]}"#)
        case "swap":
            guard case .string(let target)? = request["generation"] else { throw SteerError.invalid("swap without a generation") }
            let previous = current.withLock { value -> String in
                defer { value = target }
                return value
            }
            return object(#"{"ok":true,"generation":"\#(target)","previous":"\#(previous)"}"#)
        default: throw SteerError.invalid("the fake does not answer \(op)")
        }
    }
}

/// Router logic over `ShardTransport` without sockets (RouterReads.swift, RouterSwap.swift): read
/// failover to the next replica on both read paths (tasks and the search fast path with futures),
/// partial answers naming `missing_shards`, and swap rollback when one shard fails to swap.
@Suite struct ShardTransportTests {
    /// A router over `shards` (replica transports per shard; each gets its own port), health-checked once.
    private func router(_ shards: [[FakeTransport]]) async throws -> Router {
        var endpoints: [[ShardEndpoint]] = []
        var byPort: [Int: FakeTransport] = [:]
        for set in shards {
            endpoints.append(set.map { transport in
                let port = 1 + byPort.count
                byPort[port] = transport
                return ShardEndpoint(host: "127.0.0.1", port: port)
            })
        }
        let table = byPort
        let router = try Router(configuration: RouterConfiguration(shards: endpoints), encoder: nil, loadEncoder: nil, shardLog: nil,
                                logger: Logger(label: "test"), transport: { _, endpoint in table[endpoint.port]! })
        await router.checkHealth()
        return router
    }

    private func answer(_ router: Router, _ line: String) async throws -> JSONObject {
        let request = try RequestDecoder(limits: ProtocolLimits()).decode(try JSONParser.parse(line))
        return object(String(decoding: await router.respond(request), as: UTF8.self))
    }

    private func hitIDs(_ answer: JSONObject) -> [Int64] {
        guard case .array(let hits)? = answer["hits"] else { return [] }
        return hits.compactMap { hit in
            if case .object(let fields) = hit, case .int(let id)? = fields["id"] { return id }
            return nil
        }
    }

    /// A search with the longest deadline the router allows: these tests check failover, not deadlines,
    /// and a loaded test run may hold a task for seconds before it reads.
    private let search = #"{"op":"search","vector":[1,0,0,0],"k":3,"timeout_ms":60000}"#

    @Test func readFailsOverToTheNextReplica_andMarksTheFailedOneDown() async throws {
        let failing = replica(hit: 1, failing: ["search"])
        let healthy = replica(hit: 2)
        let router = try await router([[failing, healthy]])
        #expect(router.currentGeneration == "g1")
        // The first read of a shard goes to its first readable replica (round-robin starts there).
        let answer = try await answer(router, search)
        #expect(answer["ok"] == .bool(true))
        #expect(hitIDs(answer) == [2])
        #expect(answer["partial"] == nil)
        #expect(failing.ops == ["stats", "search"] && healthy.ops == ["stats", "search"])
        #expect(!router.replicas[0][0].health.get().up, "a transport failure marks the replica down")
        #expect(router.replicas[0][0].health.get().lastError == "connection reset by peer")
        #expect(router.counters.get().replicaRetries == 1)
        // The replica that is down is not tried again.
        #expect(hitIDs(try await self.answer(router, search)) == [2])
        #expect(failing.ops.count == 2)
        await router.shutdown()
    }

    @Test func searchFastPathFailsOverToo() async throws {
        let failing = replica(hit: 1, failing: ["search"])
        let healthy = replica(hit: 2)
        let router = try await router([[failing, healthy]])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let request = try RequestDecoder(limits: ProtocolLimits()).decode(try JSONParser.parse(search))
        let now = DispatchTime.now().uptimeNanoseconds
        let context = ExecutionContext(startedNanos: now, deadlineNanos: now + 60_000_000_000, connection: 7)
        let output = try await router.execute(request, context: context, on: group.next()).get()
        let answer = object(String(decoding: output, as: UTF8.self))
        #expect(hitIDs(answer) == [2])
        #expect(failing.ops == ["stats", "search"], "the fast path tried the first replica")
        #expect(!router.replicas[0][0].health.get().up)
        #expect(router.counters.get().replicaRetries == 1)
        await router.shutdown()
        try await group.shutdownGracefully()
    }

    @Test func aShardWithEveryReplicaFailing_isReportedInMissingShards() async throws {
        let shard0 = replica(hit: 10)
        let shard1 = [replica(hit: 11, failing: ["search"]), replica(hit: 12, failing: ["search"])]
        let router = try await router([[shard0], shard1])
        let answer = try await answer(router, search)
        #expect(answer["ok"] == .bool(true))
        #expect(hitIDs(answer) == [10])
        #expect(answer["partial"] == .bool(true))
        #expect(answer["missing_shards"] == .array([.int(1)]))
        #expect(shard1.allSatisfy { $0.ops == ["stats", "search"] }, "both replicas of shard 1 were tried")
        #expect(router.replicas[1].allSatisfy { !$0.health.get().up })
        #expect(router.counters.get().partialResponses == 1)
        // With no shard left the read fails as a whole.
        let none = try await self.router([[replica(hit: 1, failing: ["search"])]])
        let refused = try await self.answer(none, search)
        guard case .object(let error)? = refused["error"] else { Issue.record("no error: \(refused)"); return }
        #expect(error["code"] == .string("unavailable"))
        await router.shutdown()
        await none.shutdown()
    }

    @Test func swapRollsBackTheShardsThatSwapped_whenOneFails() async throws {
        let shard0 = replica(hit: 1)
        let shard1 = replica(hit: 2, failing: ["swap"])
        let router = try await router([[shard0], [shard1]])
        let answer = try await answer(router, #"{"op":"swap","generation":"g2"}"#)
        guard case .object(let error)? = answer["error"] else { Issue.record("the swap did not fail: \(answer)"); return }
        #expect(error["code"] == .string("unavailable"))
        #expect(router.currentGeneration == "g1", "the router keeps its generation")
        // Shard 0 swapped to g2, then was asked to swap back to the generation it left.
        let swaps = shard0.received.get().filter { $0["op"] == .string("swap") }.map { $0["generation"] }
        #expect(swaps == [.string("g2"), .string("g1")])
        #expect(router.replicas[0][0].health.get().generation == "g1")
        #expect(router.counters.get().swaps == 0)
        // Reads still go to both shards on g1.
        let read = try await self.answer(router, search)
        #expect(Set(hitIDs(read)) == [1, 2] && read["partial"] == nil)
        // Once every shard swaps, the router moves.
        let good = try await self.router([[replica(hit: 1)], [replica(hit: 2)]])
        let swapped = try await self.answer(good, #"{"op":"swap","generation":"g2"}"#)
        #expect(swapped["generation"] == .string("g2") && swapped["previous"] == .string("g1"))
        #expect(good.currentGeneration == "g2")
        await router.shutdown()
        await good.shutdown()
    }
}
