import NIOCore
import NIOPosix
import NIOSSL
import SteerCore
import SteerServer

/// Why a replica did not answer: these make the router try another replica of the shard (unlike an
/// error the replica answered, which is the request's).
struct ReplicaFailure: Error, Sendable {
    var message: String
}

/// One request waiting for its response line; completed once, by the response, the timeout or the close.
// @unchecked Sendable: created, completed and read only on its connection's event loop.
private final class PendingResponse: @unchecked Sendable {
    let promise: EventLoopPromise<[UInt8]>
    var timeout: Scheduled<Void>?
    var done = false

    init(promise: EventLoopPromise<[UInt8]>) { self.promise = promise }

    func succeed(_ line: [UInt8]) {
        guard !done else { return }
        done = true
        timeout?.cancel()
        promise.succeed(line)
    }

    func fail(_ message: String) {
        guard !done else { return }
        done = true
        timeout?.cancel()
        promise.fail(ReplicaFailure(message: message))
    }
}

/// Matches response lines to requests in order (the protocol answers in request order). Runs on its
/// channel's event loop only.
private final class ResponseMatcher: ChannelInboundHandler {
    typealias InboundIn = Frame

    let endpoint: ShardEndpoint
    var pending = CircularBuffer<PendingResponse>()
    var closed = false

    init(endpoint: ShardEndpoint) { self.endpoint = endpoint }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let next = pending.popFirst() else { return } // unsolicited (e.g. "too many connections")
        switch unwrapInboundIn(data) {
        case .line(let buffer):
            next.succeed(Array(buffer.readableBytesView))
        case .tooLong:
            next.fail("\(endpoint) sent a response longer than the router's limit")
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        while let next = pending.popFirst() { next.fail("connection to \(endpoint) closed") }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A pipelined connection to one replica on a NIO event loop: `send` writes a request line and returns
/// its response line, failing with `ReplicaFailure` on timeout or when the connection closes.
final class ShardConnection: Sendable {
    let channel: any Channel
    private let matcher: NIOLoopBound<ResponseMatcher>

    private init(channel: any Channel, matcher: NIOLoopBound<ResponseMatcher>) {
        self.channel = channel
        self.matcher = matcher
    }

    var isActive: Bool { channel.isActive }

    /// Connects with `timeout`; fails with `ReplicaFailure`.
    static func connect(to endpoint: ShardEndpoint, group: any EventLoopGroup, timeout: TimeAmount,
                        maxLineBytes: Int, tls: NIOSSLContext?) async throws -> ShardConnection {
        let loop = group.next()
        do {
            let channel = try await ClientBootstrap(group: loop)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        if let tls {
                            // An IP address is checked against the certificate's IP names (no SNI).
                            let hostname = Self.isIPAddress(endpoint.host) ? nil : endpoint.host
                            try sync.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: hostname))
                        }
                        try sync.addHandler(ByteToMessageHandler(LineFrameDecoder(maxLineBytes: maxLineBytes)))
                        try sync.addHandler(ResponseMatcher(endpoint: endpoint))
                    }
                }
                .connect(host: endpoint.host, port: endpoint.port).get()
            let matcher = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ResponseMatcher.self), eventLoop: channel.eventLoop)
            }.get()
            return ShardConnection(channel: channel, matcher: matcher)
        } catch let failure as ReplicaFailure {
            throw failure
        } catch {
            throw ReplicaFailure(message: "cannot connect to \(endpoint): \(error)")
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    /// The client TLS context for shard connections: TLS 1.2+, certificates verified against `caFile`.
    ///
    /// - Throws: `.invalidRequest` naming the file when it cannot be read or holds no PEM certificate.
    static func tlsContext(caFile: String) throws(SteerError) -> NIOSSLContext {
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(caFile)
        } catch {
            throw SteerError.invalid("shard TLS CA file '\(caFile)' cannot be read as PEM certificates: \(error)")
        }
        guard !certificates.isEmpty else { throw SteerError.invalid("shard TLS CA file '\(caFile)' holds no certificate") }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(certificates)
        configuration.minimumTLSVersion = .tlsv12
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw SteerError.invalid("shard TLS CA file '\(caFile)' cannot be used: \(error)")
        }
    }

    /// Sends one request line (without `\n`) and returns its response line.
    func send(_ line: [UInt8], timeout: TimeAmount) -> EventLoopFuture<[UInt8]> {
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: [UInt8].self)
        let channel = self.channel
        let matcher = self.matcher
        loop.execute {
            let pending = PendingResponse(promise: promise)
            let handler = matcher.value
            guard !handler.closed, channel.isActive else {
                pending.fail("connection to \(handler.endpoint) is closed")
                return
            }
            let endpoint = handler.endpoint
            pending.timeout = loop.scheduleTask(in: timeout) {
                pending.fail("\(endpoint) did not answer within \(timeout.nanoseconds / 1_000_000) ms")
            }
            handler.pending.append(pending)
            var buffer = channel.allocator.buffer(capacity: line.count + 1)
            buffer.writeBytes(line)
            buffer.writeInteger(UInt8(ascii: "\n"))
            channel.writeAndFlush(buffer, promise: nil)
        }
        return promise.futureResult
    }

    func close() { channel.close(promise: nil) }
}
