import Foundation
import Logging
import Metrics
import Prometheus
import SteerClient
import SteerCore
import SteerEngine
import SteerProtocol
import SteerService
import Testing
@testable import SteerServer

/// An encoder that blocks until released, to hold requests in flight.
private final class GatedEncoder: QueryEncoder, @unchecked Sendable {
    // @unchecked: the semaphore is thread-safe; the other fields are immutable.
    let dimension: Int
    let gate = DispatchSemaphore(value: 0)

    init(dimension: Int) { self.dimension = dimension }

    func encode(history: [ItemID], prompt: String?) throws(SteerError) -> EncodedQuery {
        gate.wait()
        return EncodedQuery(vector: [Float](repeating: 1, count: dimension), baseVector: [Float](repeating: 1, count: dimension))
    }
}

/// swift-metrics can be bootstrapped once per process: every server in these tests reports to this registry.
private let testRegistry: PrometheusCollectorRegistry = {
    let registry = PrometheusCollectorRegistry()
    var factory = PrometheusMetricsFactory(registry: registry)
    factory.defaultDurationHistogramBuckets = ServerMetricsBuckets.duration
    MetricsSystem.bootstrap(factory)
    return registry
}()

/// A write log that takes no writes: the server follows "a stream" whose sequences the test applies to
/// the engine itself (`RetrievalEngine.apply(sequence:_:)`).
private struct IdleWriteLog: WriteLog {
    func append(_ operation: WriteOperation, collection: String?, deadlineNanos: UInt64) throws(SteerError) -> LoggedWrite {
        throw SteerError(.unavailable, "this test's write log takes no writes")
    }

    func appendChange(_ change: Request.Operation, deadlineNanos: UInt64) throws(SteerError) -> LoggedChange {
        throw SteerError(.unavailable, "this test's write log takes no writes")
    }

    var refusedMessages: Int { 0 }
}

/// Starts a server on a free port over a fresh data directory.
private final class TestServer: Sendable {
    let directory = NSTemporaryDirectory() + "steer-server-test-" + UUID().uuidString
    let server: SteerServer
    let engine: RetrievalEngine
    let port: Int

    /// - Parameter collections: serve the data directory's named collections too (`CollectionSet`).
    init(configure: (inout ServerConfiguration) -> Void = { _ in }, encoder: GatedEncoder? = nil, collections: Bool = false) async throws {
        var configuration = ServerConfiguration(port: 0, workerThreads: 4)
        configure(&configuration)
        let engineConfiguration = RetrievalEngine.Configuration(
            dataDirectory: directory, dimension: 2, syncWrites: false,
            encoderFactory: encoder.map { gated in { @Sendable _, _, _ in gated } })
        let engine = try RetrievalEngine(configuration: engineConfiguration)
        self.engine = engine
        server = SteerServer(configuration: configuration, engine: engine, logger: Logger(label: "test"), metricsRegistry: testRegistry,
                             collections: collections ? try CollectionSet(defaultEngine: engine) : nil)
        port = try await server.start()
    }

    func connection() throws -> SteerConnection { try SteerConnection(host: "127.0.0.1", port: port) }

    func stop() async {
        await server.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

private func text(_ bytes: [UInt8]?) -> String { bytes.map { String(decoding: $0, as: UTF8.self) } ?? "<eof>" }

@Suite(.serialized) struct SteerServerTests {
    @Test func pipelinedResponsesComeBackInRequestOrderWithReadYourWrites() async throws {
        let server = try await TestServer()
        let connection = try server.connection()
        var batch: [UInt8] = []
        for index in 0..<300 {
            switch index % 3 {
            case 0: batch += Array(#"{"id":\#(index),"op":"upsert","items":[{"id":\#(index),"vector":[1,\#(index)]}]}"#.utf8)
            case 1: batch += Array(#"{"id":\#(index),"op":"get","ids":[\#(index - 1)]}"#.utf8)
            default: batch += Array(#"{"id":\#(index),"op":"ping"}"#.utf8)
            }
            batch.append(UInt8(ascii: "\n"))
        }
        try connection.write(batch)
        for index in 0..<300 {
            let object = try SteerClient.check(try #require(try connection.readLine()))
            #expect(object["id"] == .int(Int64(index)))
            if index % 3 == 1, case .array(let items)? = object["items"] {
                #expect(items.count == 1, "get after upsert on the same connection must see it")
            }
        }
        await server.stop()
    }

    @Test func lineLimitIsExactAndTheStreamResynchronises() async throws {
        let server = try await TestServer { $0.limits.maxLineBytes = 200 }
        let connection = try server.connection()
        func pingLine(length: Int) -> [UInt8] {
            let prefix = #"{"op":"ping","id":""#
            let suffix = #""}"#
            return Array((prefix + String(repeating: "x", count: length - prefix.count - suffix.count) + suffix).utf8)
        }
        #expect(pingLine(length: 200).count == 200)
        #expect(text(try connection.roundTrip(pingLine(length: 200))).contains(#""ok":true"#))
        #expect(text(try connection.roundTrip(pingLine(length: 201))).contains(#""code":"too_large""#))
        // A much longer line, sent in pieces, gets one error and the next line works.
        try connection.write(Array(repeating: UInt8(ascii: "y"), count: 5000))
        try connection.write(Array(repeating: UInt8(ascii: "y"), count: 5000) + [UInt8(ascii: "\n")])
        #expect(text(try connection.readLine()).contains("too_large"))
        #expect(text(try connection.roundTrip(Array(#"{"id":9,"op":"ping"}"#.utf8))) == #"{"id":9,"ok":true}"#)
        await server.stop()
    }

    @Test func connectionsBeyondTheLimitAreRefusedWithAnError() async throws {
        let server = try await TestServer { $0.maxConnections = 2 }
        let first = try server.connection()
        let second = try server.connection()
        _ = try first.roundTrip(RequestLine.ping())
        _ = try second.roundTrip(RequestLine.ping())
        let third = try server.connection()
        #expect(text(try third.readLine()).contains(#""code":"unavailable""#))
        #expect(try third.readLine() == nil)
        _ = try first.roundTrip(RequestLine.ping())
        await server.stop()
    }

    @Test func idleConnectionsAreClosed() async throws {
        let server = try await TestServer { $0.idleTimeoutSeconds = 1 }
        let connection = try server.connection()
        _ = try connection.roundTrip(RequestLine.ping())
        let started = Date()
        #expect(try connection.readLine() == nil)
        let waited = Date().timeIntervalSince(started)
        #expect(waited > 0.8 && waited < 5)
        await server.stop()
    }

    /// A read still running at its deadline is answered `deadline_exceeded` then, not when its worker is done;
    /// the connection goes on serving.
    @Test func aReadPastItsDeadlineIsAnsweredAtOnce() async throws {
        let gated = GatedEncoder(dimension: 2)
        let server = try await TestServer(encoder: gated)
        let connection = try server.connection()
        _ = try connection.roundTrip(Array(#"{"op":"upsert","items":[{"id":1,"vector":[1,0]}]}"#.utf8))
        let started = Date()
        let answer = text(try connection.roundTrip(Array(#"{"id":5,"op":"encode","history":[1],"timeout_ms":300}"#.utf8)))
        let waited = Date().timeIntervalSince(started)
        #expect(answer.contains(#""code":"deadline_exceeded""#), "\(answer)")
        #expect(answer.contains(#""id":5"#))
        #expect(waited > 0.25 && waited < 3, "answered after \(waited) s")
        gated.gate.signal() // the abandoned encode finishes in the background
        #expect(text(try connection.roundTrip(RequestLine.ping(id: 6))) == #"{"id":6,"ok":true}"#)
        let later = text(try connection.roundTrip(Array(#"{"op":"get","ids":[1]}"#.utf8)))
        #expect(later.contains(#""ok":true"#))
        await server.stop()
    }

    /// Requests waiting for a `min_sequence` the server has not applied hold no worker: with more of them
    /// than workers, another client's request is answered at once; they run when the sequence is applied,
    /// or are answered `unavailable` at their deadline with nothing left registered.
    @Test func requestsWaitingForASequenceHoldNoWorker() async throws {
        let server = try await TestServer(configure: { $0.workerThreads = 2; $0.writeLog = IdleWriteLog() })
        let setup = try server.connection()
        _ = try server.engine.apply(sequence: 1, .upsert([ItemInput(id: .int(1), vector: [1, 0])]))
        #expect(text(try setup.roundTrip(Array(#"{"op":"get","ids":[1],"min_sequence":1}"#.utf8))).contains(#""id":1"#))

        // Six readers (three times the workers) wait for sequence 2, two of them behind a pipelined ping.
        let waiters = try (0..<6).map { _ in try server.connection() }
        for (index, waiter) in waiters.enumerated() {
            try waiter.writeLine(Array(#"{"id":\#(index),"op":"get","ids":[2],"min_sequence":2,"timeout_ms":20000}"#.utf8))
            if index < 2 { try waiter.writeLine(RequestLine.ping(id: Int64(100 + index))) }
        }
        let deadline = Date().addingTimeInterval(5)
        while server.engine.appliedWaiterCount < 6 && Date() < deadline { usleep(2_000) }
        #expect(server.engine.appliedWaiterCount == 6)
        let started = Date()
        #expect(text(try setup.roundTrip(Array(#"{"op":"get","ids":[1]}"#.utf8))).contains(#""ok":true"#))
        #expect(Date().timeIntervalSince(started) < 2, "another client waited \(Date().timeIntervalSince(started)) s behind the parked requests")

        _ = try server.engine.apply(sequence: 2, .upsert([ItemInput(id: .int(2), vector: [0, 1])]))
        for (index, waiter) in waiters.enumerated() {
            let answer = text(try waiter.readLine())
            #expect(answer.contains(#""id":\#(index),"ok":true"#) && answer.contains(#""items":[{"id":2"#), "\(answer)")
            // The pipelined ping waited behind the parked read in its lane.
            if index < 2 { #expect(text(try waiter.readLine()) == #"{"id":\#(100 + index),"ok":true}"#) }
        }
        #expect(server.engine.appliedWaiterCount == 0)

        // A sequence that never comes: `unavailable` just before the deadline, and nothing stays registered.
        let late = try server.connection()
        let asked = Date()
        let answer = text(try late.roundTrip(Array(#"{"op":"get","ids":[1],"min_sequence":99,"timeout_ms":400}"#.utf8)))
        let waited = Date().timeIntervalSince(asked)
        #expect(answer.contains(#""code":"unavailable""#), "\(answer)")
        #expect(waited > 0.3 && waited < 3, "answered after \(waited) s")
        #expect(server.engine.appliedWaiterCount == 0)
        await server.stop()
    }

    /// A batch search costing more than one step runs in slices against one pinned generation and
    /// answers exactly what the one-step path answers.
    @Test func aBatchSearchInStepsAnswersLikeOneStep() async throws {
        let server = try await TestServer()
        let connection = try server.connection()
        var items: [String] = []
        for n in 0..<400 { items.append(#"{"id":\#(n),"vector":[\#(Float(n % 37) - 18),\#(Float(n % 11) - 5)],"tags":["t\#(n % 3)"]}"#) }
        _ = try connection.roundTrip(Array(#"{"op":"upsert","items":[\#(items.joined(separator: ","))]}"#.utf8))
        let vectors = (0..<300).map { n in "[\(Float(n % 13) - 6),\(Float(n % 7) - 3)]" }.joined(separator: ",")
        let line = Array(#"{"id":"b","op":"search","vectors":[\#(vectors)],"k":10,"filter":{"tags_none":["t1"]}}"#.utf8)
        let handler = try #require(server.server.handler)
        guard case .request(let request, let started) = line.withUnsafeBufferPointer({ handler.prepare($0) }) else {
            Issue.record("the line did not parse")
            return
        }
        let oneStep = handler.execute(request, startedNanos: started)
        let job = handler.job(for: request, startedNanos: started)
        var steps = 1
        var answer = job.step()
        while answer == nil {
            steps += 1
            answer = job.step()
        }
        #expect(steps == 5, "300 queries of 64 units in steps of 4096 units")
        #expect(text(answer) == text(oneStep))
        #expect(text(try connection.roundTrip(line)) + "\n" == text(oneStep))
        await server.stop()
    }

    @Test func maxInFlightStopsReadingUntilARequestCompletes() async throws {
        let gated = GatedEncoder(dimension: 2)
        let server = try await TestServer(configure: { $0.maxInFlight = 2 }, encoder: gated)
        let connection = try server.connection()
        let observer = try server.connection()
        _ = try observer.roundTrip(Array(#"{"op":"upsert","items":[{"id":1,"vector":[1,0]}]}"#.utf8))
        let recommend = Array(#"{"op":"encode","history":[1]}"#.utf8) + [10]
        try connection.write(recommend + recommend + Array(#"{"op":"ping"}"#.utf8) + [10])
        try await Task.sleep(for: .milliseconds(300))
        let before = try SteerClient.check(try observer.roundTrip(RequestLine.stats()))
        guard case .object(let opsBefore)? = before["ops"] else { throw SteerError(.internal, "no ops") }
        #expect(opsBefore["ping"] == nil, "the third request must not be read while two are in flight")
        gated.gate.signal()
        gated.gate.signal()
        for _ in 0..<3 { #expect(text(try connection.readLine()).contains(#""ok":true"#)) }
        await server.stop()
    }

    @Test(arguments: [0, 100_000])
    func loopSpinAnswersTheOnlyRunningRequestWithTheSameResults(spin: Int) async throws {
        // A generous spin time (100 ms) so that every lone search can be answered from the spin; with 0 the
        // loop never spins. Either way each answer must be the exact one, in order.
        let server = try await TestServer { $0.loopSpinMicroseconds = spin }
        let connection = try server.connection()
        let items = (0..<20).map { ClientItem(id: .int(Int64($0)), vector: [1, Float($0)], title: "item \($0)") }
        _ = try SteerClient.check(try connection.roundTrip(RequestLine.upsert(items)))
        for round in 0..<100 {
            let k = 1 + round % 5
            let answer = try SteerClient.check(try connection.roundTrip(RequestLine.search([0, 1], k: k)))
            guard case .array(let hits)? = answer["hits"] else { throw SteerError(.internal, "no hits") }
            let ids = hits.map { hit -> JSONValue? in if case .object(let object) = hit { object["id"] } else { nil } }
            #expect(ids == (0..<k).map { JSONValue.int(Int64(19 - $0)) })
            if case .object(let best)? = hits.first { #expect(best["title"] == .string("item 19")) }
        }
        let stats = try SteerClient.check(try connection.roundTrip(RequestLine.stats()))
        guard case .object(let serverStats)? = stats["server"], case .object(let threads)? = serverStats["threads"],
              case .int(let answered)? = threads["loop_spin_answered"], case .int(let gaveUp)? = threads["loop_spin_gave_up"] else {
            throw SteerError(.internal, "stats has no server.threads.loop_spin_* counters")
        }
        #expect(threads["loop_spin_us"] == .int(Int64(spin)))
        if spin == 0 {
            #expect(answered == 0 && gaveUp == 0)
        } else {
            // 101 lone requests (the upsert is a write and never spins): nearly all are answered in the spin.
            #expect(answered + gaveUp == 100)
            #expect(answered > 0)
        }
        await server.stop()
    }

    @Test func adminOperationsNeedTheToken() async throws {
        let keys = try AccessKeys(adminToken: "s3cret", publicReads: true)
        let server = try await TestServer { $0.accessKeys = keys }
        let connection = try server.connection()
        let items = [ClientItem(id: .int(1), vector: [1, 2])]
        #expect(text(try connection.roundTrip(RequestLine.upsert(items))).contains("unauthorized"))
        #expect(text(try connection.roundTrip(RequestLine.upsert(items, token: "wrong"))).contains("unauthorized"))
        #expect(text(try connection.roundTrip(RequestLine.upsert(items, token: "s3cret" + String(repeating: "x", count: 256)))).contains("unauthorized"))
        #expect(text(try connection.roundTrip(RequestLine.delete([.int(1)]))).contains("unauthorized"))
        #expect(text(try connection.roundTrip(RequestLine.upsert(items, token: "s3cret"))).contains(#""upserted":1"#))
        #expect(text(try connection.roundTrip(RequestLine.search([1, 2], k: 1))).contains(#""id":1"#))
        await server.stop()
    }

    /// With keys configured and no public reads, a read needs a read (or admin) key; a read key cannot
    /// write; `ping` stays public.
    @Test func readKeysReadAndOnlyAdminKeysWrite() async throws {
        let reader = "reader-key-0123456789", admin = "admin-key-0123456789"
        let keys = try AccessKeys(keys: [AccessKeys.Key(name: "app", scope: .read, key: reader),
                                         AccessKeys.Key(name: "ops", scope: .admin, key: admin)])
        let server = try await TestServer { $0.accessKeys = keys }
        let connection = try server.connection()
        func send(_ line: String) throws -> String { text(try connection.roundTrip(Array(line.utf8))) }
        #expect(try send(#"{"op":"ping"}"#).contains(#""ok":true"#))
        #expect(try send(#"{"op":"upsert","token":"\#(admin)","items":[{"id":1,"vector":[1,2]}]}"#).contains(#""upserted":1"#))
        #expect(try send(#"{"op":"search","vector":[1,2],"k":1}"#).contains("unauthorized"))
        #expect(try send(#"{"op":"stats"}"#).contains("unauthorized"))
        #expect(try send(#"{"op":"get","ids":[1],"token":"wrong-key-0123456789"}"#).contains("unauthorized"))
        #expect(try send(#"{"op":"search","vector":[1,2],"k":1,"token":"\#(reader)"}"#).contains(#""id":1"#))
        #expect(try send(#"{"op":"get","ids":[1],"token":"\#(reader)"}"#).contains(#""id":1"#))
        #expect(try send(#"{"op":"delete","ids":[1],"token":"\#(reader)"}"#).contains("read-only"))
        #expect(try send(#"{"op":"swap","generation":"g9","token":"\#(reader)"}"#).contains("unauthorized"))
        #expect(try send(#"{"op":"get","ids":[1],"token":"\#(admin)"}"#).contains(#""id":1"#))
        await server.stop()
    }

    @Test func shutdownAnswersRequestsInFlight() async throws {
        let gated = GatedEncoder(dimension: 2)
        let server = try await TestServer(encoder: gated)
        let connection = try server.connection()
        _ = try connection.roundTrip(Array(#"{"op":"upsert","items":[{"id":1,"vector":[1,0]}]}"#.utf8))
        try connection.write(Array(#"{"id":"held","op":"encode","history":[1]}"#.utf8) + [10])
        try await Task.sleep(for: .milliseconds(100))
        async let stopped: Void = server.stop()
        try await Task.sleep(for: .milliseconds(200))
        gated.gate.signal()
        #expect(text(try connection.readLine()).contains(#""id":"held","ok":true"#))
        await stopped
        #expect(try connection.readLine() == nil)
    }

    @Test func asyncClientDeclaresPayloadIndexes() async throws {
        let server = try await TestServer()
        let client = try SteerClient(port: server.port)
        _ = try await client.upsert((0..<10).map { ClientItem(id: .int(Int64($0)), vector: [1, Float($0)], attributesJSON: #"{"rank":\#($0)}"#) })
        #expect(try await client.declareIndex(attribute: "rank", kind: .numeric) == 10)
        #expect(try await client.declareIndex(attribute: "rank", kind: .numeric) == 0, "already declared")
        let rank = FilterExpression.attribute(AttributePredicate(name: "rank", conditions: [.gte(7)]))
        let response = try await client.searchResponse([0, 1], k: 5, expression: rank, explain: true)
        guard case .array(let hits)? = response["hits"], case .object(let explain)? = response["explain"] else {
            Issue.record("no hits or explain: \(response)")
            return
        }
        #expect(hits.count == 3 && explain["scanned_records"] == .int(0), "answered from the payload index: \(explain)")
        do {
            _ = try await client.declareIndex(attribute: "", kind: .keyword)
            Issue.record("declared an empty attribute path")
        } catch let error as SteerError {
            #expect(error.code == .invalidRequest, "\(error)")
        }
        client.close()
        await server.stop()
    }

    @Test func asyncClientPipelinesFromManyTasks() async throws {
        let server = try await TestServer()
        let client = try SteerClient(port: server.port)
        _ = try await client.upsert((0..<50).map { ClientItem(id: .int(Int64($0)), vector: [1, Float($0)], tags: $0 % 2 == 0 ? ["even"] : []) })
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<50 {
                group.addTask {
                    let hits = try await client.search([0, 1], k: 3, base64: index % 2 == 0, filter: (any: ["even"], none: []))
                    #expect(hits.map(\.id) == [.int(48), .int(46), .int(44)])
                }
            }
            try await group.waitForAll()
        }
        let stats = try await client.stats()
        #expect(stats["items"] == .int(50))
        #expect(try await client.stats(collection: "default")["collection"] == .string("default"))
        // A server over a bare engine has only the default collection and refuses the catalog ops.
        do {
            _ = try await client.search([0, 1], k: 1, collection: "other")
            Issue.record("searched a collection that does not exist")
        } catch let error as SteerError {
            #expect(error.code == .notFound, "\(error)")
        }
        let create = try await client.send(RequestLine.collections(.createCollection(CollectionSettings(name: "c", dimension: 2))))
        #expect(String(decoding: create, as: UTF8.self).contains("invalid_request"))
        client.close()
        await server.stop()
    }

    @Test func metricsAreServedInPrometheusTextFormat() async throws {
        let server = try await TestServer { $0.metricsPort = 0 }
        let connection = try server.connection()
        _ = try connection.roundTrip(Array(#"{"op":"upsert","items":[{"id":1,"vector":[1,0]},{"id":2,"vector":[0,1]},{"id":3,"vector":[1,1]}]}"#.utf8))
        _ = try connection.roundTrip(RequestLine.search([1, 0], k: 2))
        _ = try connection.roundTrip(Array("{\"op\":\"search\"}".utf8))
        let http = try SteerConnection(host: "127.0.0.1", port: try #require(server.server.metricsPort))
        try http.write(Array("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        var lines: [String] = []
        while let line = try http.readLine() { lines.append(text(line).trimmingCharacters(in: .whitespaces)) }
        #expect(lines.first?.hasPrefix("HTTP/1.1 200") == true)
        #expect(lines.contains("steer_items 3.0"))
        #expect(lines.contains("steer_collection_items{collection=\"default\"} 3.0"), "\(lines.filter { $0.contains("collection") })")
        #expect(lines.contains { $0.hasPrefix("steer_requests_total{op=\"search\"}") })
        #expect(lines.contains { $0.hasPrefix("steer_errors_total{code=\"invalid_request\"}") })
        #expect(lines.contains { $0.hasPrefix("steer_request_duration_seconds_bucket{op=\"search\",le=\"0.0001\"}") })
        await server.stop()
    }

    /// The metrics text of a server's `/metrics`, lines trimmed.
    private func scrape(_ server: TestServer) throws -> [String] {
        let http = try SteerConnection(host: "127.0.0.1", port: try #require(server.server.metricsPort))
        try http.write(Array("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        var lines: [String] = []
        while let line = try http.readLine() { lines.append(text(line).trimmingCharacters(in: .whitespaces)) }
        return lines
    }

    @Test func requestAndErrorCountersAreLabelledByServedCollection() async throws {
        let server = try await TestServer(configure: { $0.metricsPort = 0 }, collections: true)
        let connection = try server.connection()
        func call(_ line: String) throws -> String { text(try connection.roundTrip(Array(line.utf8))) }
        #expect(try call(#"{"op":"create_collection","token":"admin","name":"metered","dimension":3}"#).contains(#""ok":true"#))
        #expect(try call(#"{"op":"alias","token":"admin","alias":"meter","collection":"metered"}"#).contains(#""ok":true"#))
        #expect(try call(#"{"op":"upsert","collection":"metered","items":[{"id":1,"vector":[1,0,0]}]}"#).contains(#""ok":true"#))
        #expect(try call(#"{"op":"search","collection":"meter","vector":[1,0,0],"k":1}"#).contains(#""collection":"metered""#))
        #expect(try call(#"{"op":"search","collection":"metered","vector":[1,0],"k":1}"#).contains("dimension_mismatch"))
        // Names that resolve to nothing are counted per op and code only, never as a label.
        #expect(try call(#"{"op":"search","collection":"ghost1","vector":[1,0,0],"k":1}"#).contains("not_found"))
        #expect(try call(#"{"op":"search","collection":"ghost2","vector":[1,0,0],"k":1}"#).contains("not_found"))
        var lines = try scrape(server)
        let labelled = lines.filter { $0.hasPrefix("steer_collection_requests_total") || $0.hasPrefix("steer_collection_errors_total") }
        #expect(labelled.contains("steer_collection_requests_total{collection=\"metered\"} 3"), "\(labelled)")
        #expect(labelled.contains("steer_collection_errors_total{collection=\"metered\"} 1"), "\(labelled)")
        #expect(!labelled.contains { $0.contains("ghost") || $0.contains("\"meter\"") }, "\(labelled)")
        // Dropping the collection removes its series at the next scrape (the label set stays bounded).
        #expect(try call(#"{"op":"delete_alias","token":"admin","alias":"meter"}"#).contains(#""ok":true"#))
        #expect(try call(#"{"op":"drop_collection","token":"admin","name":"metered"}"#).contains(#""ok":true"#))
        lines = try scrape(server)
        #expect(!lines.contains { $0.contains("collection=\"metered\"") }, "\(lines.filter { $0.contains("metered") })")
        await server.stop()
    }
}
