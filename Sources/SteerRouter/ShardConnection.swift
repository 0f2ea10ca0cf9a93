import NIOCore
import NIOPosix
import NIOSSL
import SteerCore
import SteerServer

/// Why a replica gave no usable answer to one request. Only `.transport` says the replica (or the way to
/// it) is broken and may mark it down; the others are about one request (docs/scaling.md "Failures").
struct ReplicaFailure: Error, Sendable {
    enum Kind: Sendable {
        /// Connection refused, reset or closed by the peer, or an answer that is not protocol (garbage):
        /// the replica is marked down and the request tries another replica.
        case transport
        /// The request's deadline passed before the answer came: the request fails alone
        /// (`deadline_exceeded`); the connection is retired, the replica stays up.
        case timeout
        /// The answer line exceeded the router's limit: the request fails alone (`too_large`); the rest
        /// of the line is skipped, so the connection stays in step and in use.
        case tooLarge
        /// The request was on a connection the router retired (after a timeout on it) and closed before
        /// the answer came: another connection or replica is tried; nothing is marked down.
        case retired
        /// The replica answered an error that blames it, not the request (`unavailable`, `internal`,
        /// `io_error`, `corrupt`): another replica is tried; the health check decides whether it is down.
        case answered
    }

    var kind: Kind
    var message: String

    init(_ kind: Kind = .transport, message: String) {
        self.kind = kind
        self.message = message
    }
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

    func fail(_ kind: ReplicaFailure.Kind, _ message: String) {
        guard !done else { return }
        done = true
        timeout?.cancel()
        promise.fail(ReplicaFailure(kind, message: message))
    }
}

/// Matches response lines to requests in order (the protocol answers in request order). Runs on its
/// channel's event loop only.
///
/// A request that timed out keeps its place in `pending` (completed, so its late answer is dropped when
/// it arrives): the stream stays in step. A retired connection takes no new request and closes once
/// every answer it waits for has arrived.
private final class ResponseMatcher: ChannelInboundHandler {
    typealias InboundIn = Frame

    let endpoint: ShardEndpoint
    let maxLineBytes: Int
    var pending = CircularBuffer<PendingResponse>()
    var closed = false
    var retiring = false

    init(endpoint: ShardEndpoint, maxLineBytes: Int) {
        self.endpoint = endpoint
        self.maxLineBytes = maxLineBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let next = pending.popFirst() else { return } // unsolicited (e.g. "too many connections")
        switch unwrapInboundIn(data) {
        case .line(let buffer):
            next.succeed(Array(buffer.readableBytesView))
        case .tooLong:
            // The framer skips the rest of this line: the next line answers the next request.
            next.fail(.tooLarge, "\(endpoint) answered more than the router's limit of \(maxLineBytes) bytes (--max-shard-response-bytes)")
        }
        if retiring, pending.isEmpty { context.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        let kind: ReplicaFailure.Kind = retiring ? .retired : .transport
        while let next = pending.popFirst() { next.fail(kind, "connection to \(endpoint) closed") }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A pipelined connection to one replica on a NIO event loop: `send` writes a request line and returns
/// its response line, failing with `ReplicaFailure` on timeout, an over-long answer, or when the
/// connection closes.
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
                        try sync.addHandler(ResponseMatcher(endpoint: endpoint, maxLineBytes: maxLineBytes))
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
            throw ReplicaFailure(.transport, message: "cannot connect to \(endpoint): \(error)")
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
                pending.fail(handler.retiring ? .retired : .transport, "connection to \(handler.endpoint) is closed")
                return
            }
            guard !handler.retiring else {
                pending.fail(.retired, "connection to \(handler.endpoint) is retired")
                return
            }
            let endpoint = handler.endpoint
            pending.timeout = loop.scheduleTask(in: timeout) {
                pending.fail(.timeout, "\(endpoint) did not answer within \(timeout.nanoseconds / 1_000_000) ms")
            }
            handler.pending.append(pending)
            var buffer = channel.allocator.buffer(capacity: line.count + 1)
            buffer.writeBytes(line)
            buffer.writeInteger(UInt8(ascii: "\n"))
            channel.writeAndFlush(buffer, promise: nil)
        }
        return promise.futureResult
    }

    /// Takes no new request from now on and closes once every answer it waits for has arrived (at once
    /// when none). Used after a request timed out on it: later requests must not queue behind the slow one.
    func retire() {
        let channel = self.channel
        let matcher = self.matcher
        channel.eventLoop.execute {
            let handler = matcher.value
            handler.retiring = true
            if handler.pending.isEmpty { channel.close(promise: nil) }
        }
    }

    func close() { channel.close(promise: nil) }
}
