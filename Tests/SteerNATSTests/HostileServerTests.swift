import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import SteerNATS

/// A fake NATS server on 127.0.0.1 that sends scripted bytes: a greeting, then (after the client's
/// handshake PING) `afterHandshake`; it answers later PINGs only when `answerPings`.
final class FakeNATSServer: Sendable {
    let channel: any Channel
    var port: Int { channel.localAddress!.port! }

    static let info = #"INFO {"server_id":"FAKE","version":"2.9.10","proto":1,"headers":true,"max_payload":1024} "# + "\r\n"

    init(greeting: String = FakeNATSServer.info, afterHandshake: [UInt8] = [], answerPings: Bool = true, closeAfterScript: Bool = false) async throws {
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(
                        Handler(greeting: Array(greeting.utf8), afterHandshake: afterHandshake, answerPings: answerPings, closeAfterScript: closeAfterScript))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func stop() async { try? await channel.close() }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let greeting: [UInt8]
        let afterHandshake: [UInt8]
        let answerPings: Bool
        let closeAfterScript: Bool
        var received: [UInt8] = []
        var pingsSeen = 0

        init(greeting: [UInt8], afterHandshake: [UInt8], answerPings: Bool, closeAfterScript: Bool) {
            self.greeting = greeting
            self.afterHandshake = afterHandshake
            self.answerPings = answerPings
            self.closeAfterScript = closeAfterScript
        }

        func channelActive(context: ChannelHandlerContext) {
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: greeting)), promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            received += buffer.readBytes(length: buffer.readableBytes) ?? []
            let ping = Array("PING\r\n".utf8)
            var count = 0
            var i = 0
            while i + ping.count <= received.count {
                if Array(received[i..<(i + ping.count)]) == ping { count += 1; i += ping.count } else { i += 1 }
            }
            while pingsSeen < count {
                pingsSeen += 1
                if pingsSeen == 1 {
                    var out = context.channel.allocator.buffer(string: "PONG\r\n")
                    out.writeBytes(afterHandshake)
                    let close = closeAfterScript
                    let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                    context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in
                        if close { bound.value.close(promise: nil) }
                    }
                } else if answerPings {
                    context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: "PONG\r\n")), promise: nil)
                }
            }
        }
    }
}

/// The client treats the server's bytes as hostile: each malformed input ends the connection with a
/// specific error, never a crash or unbounded buffering.
@Suite(.serialized)
struct HostileServerTests {
    /// Connects, sends a request the fake never answers, and returns the error it ends with.
    private func errorAfterHandshake(_ script: [UInt8], options: NATSConnectOptions = .init()) async throws -> NATSError? {
        let server = try await FakeNATSServer(afterHandshake: script)
        let nc = try await NATSConnection.connect(host: "127.0.0.1", port: server.port, options: options)
        let error = await natsError("request over a hostile connection") { try await nc.request("x", payload: [], timeout: .seconds(10)) }
        #expect(nc.closedError == error)
        await nc.close()
        await server.stop()
        return error
    }

    private func connectError(greeting: String) async throws -> NATSError? {
        let server = try await FakeNATSServer(greeting: greeting)
        var options = NATSConnectOptions()
        options.maxControlLineBytes = 4096
        options.connectTimeout = .seconds(1)
        let error = await natsError("connect to a hostile server") { try await NATSConnection.connect(host: "127.0.0.1", port: server.port, options: options) }
        await server.stop()
        return error
    }

    @Test func oversizedControlLine() async throws {
        var options = NATSConnectOptions()
        options.maxControlLineBytes = 4096
        let script = Array("MSG ".utf8) + [UInt8](repeating: 97, count: 200_000)
        let error = try await errorAfterHandshake(script, options: options)
        #expect(error == .protocolViolation(.controlLineTooLong(limitBytes: 4096)))
        // A complete line over the limit too.
        let line = try await errorAfterHandshake(Array(("MSG " + String(repeating: "b", count: 5000) + " 1 0\r\n\r\n").utf8), options: options)
        #expect(line == .protocolViolation(.controlLineTooLong(limitBytes: 4096)))
    }

    @Test func payloadOverMaxPayload() async throws {
        let error = try await errorAfterHandshake(Array("MSG a 1 4096\r\n".utf8))
        #expect(error == .protocolViolation(.payloadTooLarge(bytes: 4096, limitBytes: 1024)))
        let huge = try await errorAfterHandshake(Array("HMSG a 1 12 999999999999999999\r\n".utf8))
        #expect(huge == .protocolViolation(.payloadTooLarge(bytes: 999_999_999_999_999_999, limitBytes: 1024)))
    }

    @Test func garbledLines() async throws {
        let unknown = try await errorAfterHandshake(Array("HELLO WORLD\r\n".utf8))
        #expect(unknown == .protocolViolation(.unknownOperation("HELLO WORLD")))
        let binary = try await errorAfterHandshake([0, 1, 2, 255, 13, 10])
        #expect(binary == .protocolViolation(.unknownOperation("????")))
        let terminator = try await errorAfterHandshake(Array("MSG a 1 3\r\nabcXY".utf8))
        #expect(terminator == .protocolViolation(.missingPayloadTerminator))
        let notNumber = try await errorAfterHandshake(Array("MSG a 1 1x\r\n".utf8))
        #expect(notNumber == .protocolViolation(.malformedControlLine(operation: "MSG")))
        let tooFew = try await errorAfterHandshake(Array("MSG a\r\n".utf8))
        #expect(tooFew == .protocolViolation(.malformedControlLine(operation: "MSG")))
        let headerOverTotal = try await errorAfterHandshake(Array("HMSG a 1 10 5\r\n".utf8))
        #expect(headerOverTotal == .protocolViolation(.malformedControlLine(operation: "HMSG")))
        let badHeaders = try await errorAfterHandshake(Array("HMSG a 1 12 12\r\nXXXX/1.0\r\n\r\n\r\n".utf8))
        #expect(badHeaders == .protocolViolation(.malformedHeaders("no NATS/1.0 status line")))
        let badStatus = try await errorAfterHandshake(Array("HMSG a 1 16 16\r\nNATS/1.0 5x3\r\n\r\n\r\n".utf8))
        #expect(badStatus == .protocolViolation(.malformedHeaders("status code")))
        let pingArgs = try await errorAfterHandshake(Array("PING now\r\n".utf8))
        #expect(pingArgs == .protocolViolation(.malformedControlLine(operation: "PING")))
    }

    /// `-ERR` followed by the server closing: the connection's error is the server's text. The client
    /// writes nothing after the handshake here (a write to the closed socket could draw a reset that
    /// discards the unread `-ERR`).
    @Test func serverErrorThenClose() async throws {
        let server = try await FakeNATSServer(afterHandshake: Array("-ERR 'Authorization Violation'\r\n".utf8), closeAfterScript: true)
        let nc = try await NATSConnection.connect(host: "127.0.0.1", port: server.port)
        let deadline = ContinuousClock.now + .seconds(5)
        while nc.closedError == nil, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(nc.closedError == .serverError("Authorization Violation"))
        let publish = await natsError("publish after the server closed") { try await nc.publish("x", payload: []) }
        #expect(publish == .serverError("Authorization Violation"))
        await server.stop()
    }

    @Test func badGreetings() async throws {
        let notInfo = try await connectError(greeting: "PONG\r\n")
        #expect(notInfo == .protocolViolation(.malformedInfo("the first message is not INFO")))
        let badJSON = try await connectError(greeting: "INFO {not json\r\n")
        #expect(badJSON == .protocolViolation(.malformedInfo("JSON does not decode")))
        let zero = try await connectError(greeting: #"INFO {"server_id":"F","version":"x","headers":true,"max_payload":0}"# + "\r\n")
        #expect(zero == .protocolViolation(.malformedInfo("max_payload 0")))
        let endless = try await connectError(greeting: "INFO " + String(repeating: "{", count: 100_000))
        #expect(endless == .protocolViolation(.controlLineTooLong(limitBytes: 4096)))
        let noHeaders = try await connectError(greeting: #"INFO {"server_id":"F","version":"x","max_payload":10}"# + "\r\n")
        guard case .connectFailed = noHeaders else { Issue.record("got \(String(describing: noHeaders))"); return }
        let silent = try await connectError(greeting: "")
        guard case .connectFailed = silent else { Issue.record("got \(String(describing: silent))"); return }
    }

    @Test func unansweredKeepaliveClosesStaleConnection() async throws {
        let server = try await FakeNATSServer(answerPings: false)
        var options = NATSConnectOptions()
        options.pingInterval = .milliseconds(100)
        options.maxPingsOutstanding = 2
        let nc = try await NATSConnection.connect(host: "127.0.0.1", port: server.port, options: options)
        let sub = try await nc.subscribe("x")
        let error = await natsError("subscription on a stale connection") { for try await _ in sub {} }
        #expect(error == .connectionClosed("stale connection: 2 PINGs unanswered"))
        await server.stop()
    }

    // MARK: Parser, without sockets

    private func parseAll(_ bytes: [UInt8], chunk: Int, maxLine: Int = 1024, maxPayload: Int = 1 << 20) throws -> [String] {
        var parser = NATSParser(maxControlLineBytes: maxLine, initialMaxPayloadBytes: maxPayload, hardMaxPayloadBytes: maxPayload)
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        var out: [String] = []
        var offset = 0
        while offset < bytes.count {
            buffer.writeBytes(bytes[offset..<min(offset + chunk, bytes.count)])
            offset += chunk
            while let item = try parser.next(&buffer) {
                switch item {
                case .info(let info): out.append("INFO \(info.serverID) \(info.maxPayload)")
                case .message(let m, let sid):
                    out.append("MSG \(m.subject) \(sid) \(m.replyTo ?? "-") \(m.status ?? 0) \(m.headers?.fields.map { "\($0.name)=\($0.value)" } ?? []) \(m.payload.count)")
                case .ping: out.append("PING")
                case .pong: out.append("PONG")
                case .ok: out.append("+OK")
                case .err(let text): out.append("-ERR \(text)")
                }
            }
        }
        #expect(buffer.readableBytes == 0)
        return out
    }

    @Test func parserIsIndependentOfChunking() throws {
        let big = String(repeating: "z", count: 70_000)
        let info = #"INFO {"server_id":"FAKE","version":"2.9.10","headers":true,"max_payload":100000}"# + "\r\n"
        let stream = info + "PING\r\n+OK\r\nMSG a.b 7 reply.x 5\r\nhello\r\n"
            + "HMSG c 8 34 36\r\nNATS/1.0 404 No Messages\r\nK: v\r\n\r\nok\r\n"
            + "HMSG _INBOX.x 9  16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
            + "MSG big 1 70000\r\n\(big)\r\n-ERR 'Stale Connection'\r\npong\r\n"
        let bytes = Array(stream.utf8)
        let whole = try parseAll(bytes, chunk: bytes.count, maxPayload: 100_000)
        #expect(whole == [
            "INFO FAKE 100000", "PING", "+OK", "MSG a.b 7 reply.x 0 [] 5", "MSG c 8 - 404 [\"K=v\"] 2",
            "MSG _INBOX.x 9 - 503 [] 0", "MSG big 1 - 0 [] 70000", "-ERR Stale Connection", "PONG",
        ])
        for chunk in [1, 2, 3, 7, 64, 1000] {
            #expect(try parseAll(bytes, chunk: chunk, maxPayload: 100_000) == whole, "chunk \(chunk)")
        }
    }

    @Test func parserRejectsAnEndlessLineAtTheLimit() throws {
        var parser = NATSParser(maxControlLineBytes: 1024, initialMaxPayloadBytes: 1 << 20, hardMaxPayloadBytes: 1 << 20)
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        var fed = 0
        do {
            while fed < 10 << 20 {
                buffer.writeBytes([UInt8](repeating: 65, count: 512))
                fed += 512
                _ = try parser.next(&buffer)
            }
            Issue.record("no error after \(fed) bytes")
        } catch {
            #expect(error == .controlLineTooLong(limitBytes: 1024))
        }
        #expect(fed <= 1024 + 512 + 2)
    }
}
