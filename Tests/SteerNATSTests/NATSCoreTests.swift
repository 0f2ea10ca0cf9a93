import Foundation
import SteerNATS
import Testing

/// Core protocol against a real nats-server: pub/sub with headers, request/reply, no responders,
/// timeouts, PING/PONG both ways, limits.
@Suite(.serialized)
struct NATSCoreTests {
    @Test func publishSubscribeWithHeaders() async throws {
        let server = try NATSServerProcess.start()
        defer { server.stop() }
        let nc = try await server.connect()
        #expect(nc.serverInfo.headers == true)
        #expect(nc.serverInfo.maxPayload == 1_048_576)
        let sub = try await nc.subscribe("steer.test.>")
        try await nc.flush()
        let publisher = try await server.connect()
        try await publisher.publish("steer.test.a", payload: "plain".bytes)
        try await publisher.publish(
            "steer.test.b", payload: "with headers".bytes,
            headers: NATSHeaders([("Nats-Msg-Id", "m-1"), ("X-Tag", "a b: c"), ("X-Tag", "second")]))
        try await publisher.publish("steer.test.c", payload: [], headers: NATSHeaders([("Only", "headers")]), replyTo: "reply.here")
        try await publisher.publish("steer.other", payload: "not matched".bytes)
        try await publisher.publish("steer.test.d", payload: [0, 13, 10, 255])
        var received: [NATSMessage] = []
        for try await message in sub {
            received.append(message)
            if received.count == 4 { break }
        }
        #expect(received.map(\.subject) == ["steer.test.a", "steer.test.b", "steer.test.c", "steer.test.d"])
        #expect(received[0].headers == nil)
        #expect(received[0].payload == "plain".bytes)
        #expect(received[1].headers?["nats-msg-id"] == "m-1")
        #expect(received[1].headers?["X-Tag"] == "a b: c")
        #expect(received[1].headers?.fields.count == 3)
        #expect(received[1].status == nil)
        #expect(received[1].payload == "with headers".bytes)
        #expect(received[2].headers?["Only"] == "headers")
        #expect(received[2].replyTo == "reply.here")
        #expect(received[2].payload == [])
        #expect(received[3].payload == [0, 13, 10, 255])
        await sub.unsubscribe()
        await nc.close()
        await publisher.close()
    }

    @Test func requestReplyNoRespondersAndTimeout() async throws {
        let server = try NATSServerProcess.start()
        defer { server.stop() }
        let nc = try await server.connect()
        let service = try await nc.subscribe("svc.echo")
        let silent = try await nc.subscribe("svc.silent")
        try await nc.flush()
        let responder = Task {
            for try await request in service {
                guard let reply = request.replyTo else { continue }
                try await nc.publish(reply, payload: "echo:".bytes + request.payload, headers: NATSHeaders([("Seen", request.headers?["Ask"] ?? "-")]))
            }
        }
        let client = try await server.connect()
        // Answered requests get a generous timeout: the responder is a task on the cooperative pool, which
        // the whole suite's tests share, and this test is about answers, not latency (the timeout case
        // below has its own bound).
        let answered: Duration = .seconds(60)
        let answer = try await client.request("svc.echo", payload: "hi".bytes, headers: NATSHeaders([("Ask", "yes")]), timeout: answered)
        #expect(answer.payload == "echo:hi".bytes)
        #expect(answer.headers?["Seen"] == "yes")
        // Many concurrent requests share one reply subscription; each gets its own answer.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<50 {
                group.addTask {
                    let a = try await client.request("svc.echo", payload: "\(i)".bytes, timeout: answered)
                    #expect(a.payload == "echo:\(i)".bytes)
                }
            }
            try await group.waitForAll()
        }
        let noResponders = await natsError("request without responders") { try await client.request("svc.nobody", payload: []) }
        #expect(noResponders == .noResponders(subject: "svc.nobody"))
        let start = ContinuousClock.now
        let timeout = await natsError("unanswered request") { try await client.request("svc.silent", payload: [], timeout: .milliseconds(300)) }
        guard case .timeout = timeout else { Issue.record("expected timeout, got \(String(describing: timeout))"); return }
        #expect(ContinuousClock.now - start >= .milliseconds(290))
        // The connection still works after a timeout.
        let again = try await client.request("svc.echo", payload: "x".bytes, timeout: answered)
        #expect(again.payload == "echo:x".bytes)
        await silent.unsubscribe()
        await client.close()
        await nc.close()
        _ = await responder.result
    }

    /// The server PINGs an idle client every 100 ms and drops it after 2 unanswered: the connection
    /// surviving 1.5 s proves the client answers PINGs. (The client's own keepalive is set to 60 s: any
    /// traffic from the client would make the server skip its PINGs.)
    @Test func answersServerPings() async throws {
        let server = try NATSServerProcess.start(configText: "ping_interval: \"100ms\"\nping_max: 2")
        defer { server.stop() }
        var options = NATSConnectOptions()
        options.pingInterval = .seconds(60)
        let nc = try await server.connect(options: options)
        try await Task.sleep(for: .milliseconds(1500))
        #expect(nc.closedError == nil)
        try await nc.flush()
        let sub = try await nc.subscribe("alive")
        try await nc.flush()
        try await nc.publish("alive", payload: "yes".bytes)
        var iterator = sub.makeAsyncIterator()
        let message = try await iterator.next()
        #expect(message?.payload == "yes".bytes)
        await nc.close()
    }

    @Test func limitsAndInvalidArguments() async throws {
        let server = try NATSServerProcess.start(configText: "max_payload: 4096")
        defer { server.stop() }
        let nc = try await server.connect()
        #expect(nc.serverInfo.maxPayload == 4096)
        let big = await natsError("over max_payload") { try await nc.publish("big", payload: [UInt8](repeating: 1, count: 4097)) }
        guard case .invalidArgument = big else { Issue.record("got \(String(describing: big))"); return }
        for subject in ["", "has space", "a..b", ".a", "a\r\nPUB x 1"] {
            let error = await natsError("subject '\(subject)'") { try await nc.publish(subject, payload: []) }
            guard case .invalidArgument = error else { Issue.record("got \(String(describing: error))"); return }
        }
        let header = await natsError("header value with CRLF") {
            try await nc.publish("ok", payload: [], headers: NATSHeaders([("Bad", "x\r\nInjected: y")]))
        }
        guard case .invalidArgument = header else { Issue.record("got \(String(describing: header))"); return }
        // Still usable: the refused calls wrote nothing.
        try await nc.publish("big", payload: [UInt8](repeating: 1, count: 4096))
        try await nc.flush()
        #expect(nc.closedError == nil)
        await nc.close()
    }

    @Test func slowConsumerEndsSubscriptionWithError() async throws {
        let server = try NATSServerProcess.start()
        defer { server.stop() }
        var options = NATSConnectOptions()
        options.subscriptionPendingMessages = 10
        let nc = try await server.connect(options: options)
        let sub = try await nc.subscribe("flood")
        try await nc.flush()
        for i in 0..<50 { try await nc.publish("flood", payload: "\(i)".bytes) }
        try await nc.flush()
        var count = 0
        let slow = await natsError("flooded subscription") { for try await _ in sub { count += 1 } }
        #expect(slow == .slowConsumer(subject: "flood"))
        #expect(count == 10)
        // The connection itself is fine.
        try await nc.flush()
        await nc.close()
    }

    @Test func closeEndsPendingCallsAndSubscriptions() async throws {
        let server = try NATSServerProcess.start()
        defer { server.stop() }
        let nc = try await server.connect()
        let sub = try await nc.subscribe("never")
        let silent = try await nc.subscribe("silent")
        try await nc.flush()
        let pending = Task { try await nc.request("silent", payload: [], timeout: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(100))
        await nc.close()
        let requestError = await natsError("pending request on close") { try await pending.value }
        guard case .connectionClosed = requestError else { Issue.record("got \(String(describing: requestError))"); return }
        let subError = await natsError("subscription on close") { for try await _ in sub {} }
        guard case .connectionClosed = subError else { Issue.record("got \(String(describing: subError))"); return }
        let publishError = await natsError("publish after close") { try await nc.publish("x", payload: []) }
        guard case .connectionClosed = publishError else { Issue.record("got \(String(describing: publishError))"); return }
        _ = silent
    }

    @Test func serverShutdownClosesConnection() async throws {
        let server = try NATSServerProcess.start()
        let nc = try await server.connect()
        let sub = try await nc.subscribe("x")
        try await nc.flush()
        server.kill()
        let subError = await natsError("subscription when the server dies") { for try await _ in sub {} }
        guard case .connectionClosed = subError else { Issue.record("got \(String(describing: subError))"); return }
        #expect(nc.closedError != nil)
        server.stop()
        let connectError = await natsError("connect to a dead port") { try await NATSConnection.connect(host: "127.0.0.1", port: server.port) }
        guard case .connectFailed = connectError else { Issue.record("got \(String(describing: connectError))"); return }
    }
}
