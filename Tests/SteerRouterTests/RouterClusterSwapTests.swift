import Logging
import NIOCore
import SteerCore
import SteerProtocol
import SteerWriteLog
import Testing

@testable import SteerRouter

/// One log of what the coordinator and the replicas were asked, in order.
private typealias Events = Locked<[String]>

/// A replica without sockets: answers `stats`/`search` from its generation and `activate` by switching
/// (or failing with a transport error when `failsActivate`).
private final class Replica: ShardTransport {
    let name: String
    let events: Events
    let failsActivate: Bool
    let current = Locked("g1")

    init(_ name: String, events: Events, failsActivate: Bool = false) {
        self.name = name
        self.events = events
        self.failsActivate = failsActivate
    }

    func request(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject { try handle(line) }
    func healthCheck(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject { try handle(line) }
    func request(_ line: [UInt8], timeout: TimeAmount, on loop: any EventLoop) -> EventLoopFuture<JSONObject> {
        do { return loop.makeSucceededFuture(try handle(line)) } catch { return loop.makeFailedFuture(error) }
    }
    func closeConnections() {}

    private func handle(_ line: [UInt8]) throws -> JSONObject {
        guard case .object(let request) = try JSONParser.parse(line), case .string(let op)? = request["op"] else {
            throw ReplicaFailure(.transport, message: "not a request")
        }
        switch op {
        case "stats", "search":
            let hits = op == "search" ? #","hits":[{"id":1,"score":0.5}]"# : ""
            return try Self.object(#"{"ok":true,"generation":"\#(current.get())"\#(hits)}"#)
        case "activate":
            guard case .string(let target)? = request["generation"] else { throw SteerError.invalid("no generation") }
            events.withLock { $0.append("activate \(name) \(target)") }
            if failsActivate { throw ReplicaFailure(.transport, message: "connection reset by peer") }
            let previous = current.withLock { value -> String in
                defer { value = target }
                return value
            }
            return try Self.object(#"{"ok":true,"generation":"\#(target)","previous":"\#(previous)","replayed":0}"#)
        default:
            throw SteerError.invalid("unexpected op \(op)")
        }
    }

    static func object(_ text: String) throws -> JSONObject {
        guard case .object(let value) = try JSONParser.parse(text) else { throw SteerError.invalid("not an object") }
        return value
    }
}

/// A coordinator that records its calls and fails where told.
private struct Coordinator: ClusterSwapCoordinating {
    let events: Events
    var prepareError: SteerError?
    var commitError: SteerError?

    func prepare(generation: String, checkpoint: String?, timeout: Duration, shardCount: Int) async throws(SteerError) -> ClusterSwapRound {
        events.withLock { $0.append("prepare \(generation) \(shardCount)") }
        if let prepareError { throw prepareError }
        return ClusterSwapRound(round: 7, generation: generation, checkpoint: checkpoint, deadlineMillis: 0,
                                replicas: [.init(key: "shard.0.a", shard: 0, address: "127.0.0.1:1")])
    }

    func commit(_ round: ClusterSwapRound) async throws(SteerError) {
        events.withLock { $0.append("commit \(round.generation) \(round.round)") }
        if let commitError { throw commitError }
    }
}

/// `Router.clusterSwap` (RouterClusterSwap.swift) with a fake coordinator and replicas: nothing is
/// activated unless the coordinator committed, and the router moves to the generation only then.
@Suite struct RouterClusterSwapTests {
    private func router(_ shards: [[Replica]], coordinator: Coordinator) async throws -> Router {
        var endpoints: [[ShardEndpoint]] = []
        var byPort: [Int: Replica] = [:]
        for set in shards {
            endpoints.append(set.map { replica in
                let port = 1 + byPort.count
                byPort[port] = replica
                return ShardEndpoint(host: "127.0.0.1", port: port)
            })
        }
        let table = byPort
        let router = try Router(configuration: RouterConfiguration(shards: endpoints), encoder: nil, loadEncoder: nil, shardLog: nil,
                                logger: Logger(label: "test"), transport: { _, endpoint in table[endpoint.port]! })
        router.setClusterSwap(coordinator)
        await router.checkHealth()
        return router
    }

    private func answer(_ router: Router, _ line: String) async throws -> JSONObject {
        let request = try RequestDecoder(limits: ProtocolLimits()).decode(try JSONParser.parse(line))
        return try Replica.object(String(decoding: await router.respond(request), as: UTF8.self))
    }

    @Test func aCommittedSwapActivatesEveryReplicaAfterTheCommit_andTheRouterMoves() async throws {
        let events = Events([])
        let replicas = [[Replica("a", events: events), Replica("b", events: events)], [Replica("c", events: events, failsActivate: true), Replica("d", events: events)]]
        let router = try await router(replicas, coordinator: Coordinator(events: events))
        let swap = try await answer(router, #"{"op":"swap","generation":"g2"}"#)
        #expect(swap["ok"] == .bool(true) && swap["generation"] == .string("g2") && swap["previous"] == .string("g1"), "\(swap)")
        #expect(swap["cluster"] == .bool(true) && swap["round"] == .int(7) && swap["prepared"] == .int(1))
        let log = events.get()
        #expect(Array(log.prefix(2)) == ["prepare g2 2", "commit g2 7"], "\(log)")
        #expect(Set(log.dropFirst(2)) == ["activate a g2", "activate b g2", "activate c g2", "activate d g2"], "\(log)")
        #expect(router.currentGeneration == "g2")
        guard case .array(let listed)? = swap["replicas"] else { Issue.record("no replicas"); return }
        let failed = listed.filter { if case .object(let o) = $0 { o["activated"] == .bool(false) } else { false } }
        #expect(listed.count == 4 && failed.count == 1, "the replica that did not activate is named: \(swap)")
        // Reads of shard 1 go to the replica that serves g2, not to the one still on g1.
        for _ in 0..<4 {
            let read = try await answer(router, #"{"op":"search","vector":[1,0,0,0],"k":1,"timeout_ms":60000}"#)
            #expect(read["generation"] == .string("g2") && read["partial"] == nil, "\(read)")
        }
        await router.shutdown()
    }

    @Test func aFailedPrepareOrALostCommitActivatesNothing_andTheRouterKeepsItsGeneration() async throws {
        for (prepareError, commitError) in [(SteerError(.unavailable, "cluster swap to g2 aborted: shard 1 127.0.0.1:4: not_found"), nil),
                                            (nil, SteerError(.unavailable, "cluster swap: round 7 of g2 was replaced before its commit"))] {
            let events = Events([])
            let replicas = [[Replica("a", events: events)], [Replica("b", events: events)]]
            let router = try await router(replicas, coordinator: Coordinator(events: events, prepareError: prepareError, commitError: commitError))
            let swap = try await answer(router, #"{"op":"swap","generation":"g2"}"#)
            guard case .object(let error)? = swap["error"], case .string(let message)? = error["message"] else {
                Issue.record("the swap did not fail: \(swap)")
                continue
            }
            #expect(message == (prepareError ?? commitError)?.message)
            #expect(!events.get().contains { $0.hasPrefix("activate") }, "\(events.get())")
            #expect(router.currentGeneration == "g1")
            // The gate is open again: reads are answered from g1.
            let read = try await answer(router, #"{"op":"search","vector":[1,0,0,0],"k":1,"timeout_ms":60000}"#)
            #expect(read["generation"] == .string("g1") && read["ok"] == .bool(true))
            await router.shutdown()
        }
    }

    @Test func clusterValuesRoundTrip_andHostileOnesAreRefused() throws {
        let announcement = ClusterSwap.Announcement(generation: "g2", checkpoint: "/ckpt", state: .commit, round: 41, deadlineMillis: 1_700_000_000_000)
        #expect(try ClusterSwap.decodeAnnouncement(ClusterSwap.encode(announcement)) == announcement)
        let report = ClusterSwap.Report(round: 41, generation: "g2", state: .failed, message: String(repeating: "é", count: 400))
        let decoded = try ClusterSwap.decodeReport(ClusterSwap.encode(report))
        #expect(decoded.round == 41 && decoded.state == .failed && (decoded.message?.utf8.count ?? 0) <= ClusterSwap.maxMessageBytes)
        #expect(ClusterSwap.round(of: ClusterSwap.Announcement(generation: "g", checkpoint: nil, state: .prepare, round: 0, deadlineMillis: 0), revision: 9) == 9)
        #expect(ClusterSwap.round(of: announcement, revision: 50) == 41)
        #expect(ClusterSwap.reportKey(heartbeatKey: ClusterDirectory.replicaKey(shard: 1, replicaID: "replica-x")) == "report.shard.1.replica-x")
        for value in [#"{"generation":"g","state":"flip","round":1,"deadline_ms":0}"#, #"{"generation":"","state":"commit","round":1,"deadline_ms":0}"#,
                      #"{"generation":"g","state":"commit","round":-1,"deadline_ms":0}"#, #"{"generation":"g","state":"commit","round":1}"#,
                      #"{"generation":"g","state":"commit","round":1,"deadline_ms":0,"checkpoint":3}"#, "[]", "garbage",
                      #"{"generation":"\#(String(repeating: "g", count: 1100))","state":"commit","round":1,"deadline_ms":0}"#] {
            #expect(throws: SteerError.self, "\(value.prefix(60))") { try ClusterSwap.decodeAnnouncement(Array(value.utf8)) }
        }
        for value in [#"{"round":1,"generation":"g","state":"maybe"}"#, #"{"round":"1","generation":"g","state":"ready"}"#, #"{"generation":"g","state":"ready"}"#] {
            #expect(throws: SteerError.self, "\(value)") { try ClusterSwap.decodeReport(Array(value.utf8)) }
        }
    }
}
