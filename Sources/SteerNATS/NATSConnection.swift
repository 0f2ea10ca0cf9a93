// SteerNATS: a small NATS + JetStream client written by hand over SwiftNIO, because no Swift NATS
// client is among this machine's package copies (/opt/swift-packages); see docs/nats.md.
//
// This file: one client connection (handshake, keepalive, publish, subscribe, request/reply).
// There is no reconnect: when the connection closes, every pending call and subscription ends with the
// closing error and the caller connects again (docs/nats.md).

import NIOCore
import NIOPosix
import Synchronization

/// Settings of one connection. Limits are named with their units.
public struct NATSConnectOptions: Sendable {
    /// Sent in CONNECT's `name` (visible in the server's monitoring).
    public var name: String = "steer"
    /// TCP connect plus the INFO/CONNECT/PING handshake.
    public var connectTimeout: Duration = .seconds(5)
    /// Default deadline of `request` and of JetStream API calls.
    public var requestTimeout: Duration = .seconds(5)
    /// Client PING interval; the connection closes when `maxPingsOutstanding` PINGs go unanswered.
    public var pingInterval: Duration = .seconds(30)
    public var maxPingsOutstanding: Int = 2
    /// Longest control line accepted from the server (an INFO in a cluster lists its connect URLs).
    public var maxControlLineBytes: Int = 64 * 1024
    /// Largest message accepted before INFO arrives, and the cap on INFO's `max_payload`.
    public var maxPayloadCapBytes: Int = 64 << 20
    /// Per subscription: messages and payload bytes buffered before the consumer reads them; past
    /// either, the subscription ends with `NATSError.slowConsumer` (nothing is dropped silently).
    public var subscriptionPendingMessages: Int = 65_536
    public var subscriptionPendingBytes: Int = 64 << 20

    public init() {}
}

// MARK: - Subscription

/// Buffer between the event loop (which yields) and one consumer task (which iterates).
/// `pendingBytes` counts yielded, not yet read payload bytes; `failure` is set before the stream
/// finishes with an error. Thread-safe: `Atomic`/`Mutex` and the continuation are made for sharing.
final class SubscriptionSink: Sendable {
    let sid: UInt64
    let subject: String
    let continuation: AsyncStream<NATSMessage>.Continuation
    let pendingBytes = Atomic<Int>(0)
    let maxPendingBytes: Int
    let failure = Mutex<NATSError?>(nil)

    init(sid: UInt64, subject: String, continuation: AsyncStream<NATSMessage>.Continuation, maxPendingBytes: Int) {
        self.sid = sid
        self.subject = subject
        self.continuation = continuation
        self.maxPendingBytes = maxPendingBytes
    }

    /// Hands a message to the consumer; false when a pending limit was passed (the caller ends it).
    func deliver(_ message: NATSMessage) -> Bool {
        let bytes = message.payload.count
        let total = pendingBytes.add(bytes, ordering: .relaxed).newValue
        if total > maxPendingBytes { return false }
        if case .dropped = continuation.yield(message) { return false }
        return true
    }

    func finish(_ error: NATSError?) {
        if let error { failure.withLock { if $0 == nil { $0 = error } } }
        continuation.finish()
    }
}

/// The messages of one subscription, in arrival order. Iterate it from one task; iteration ends (nil)
/// after `unsubscribe()`, and throws when the connection closed or the consumer was too slow.
public struct NATSSubscription: AsyncSequence, Sendable {
    public typealias Element = NATSMessage
    public typealias Failure = NATSError

    let sink: SubscriptionSink
    let stream: AsyncStream<NATSMessage>
    let connection: NATSConnection

    /// The subject (possibly with wildcards) subscribed to.
    public var subject: String { sink.subject }

    /// Stops delivery (UNSUB) and ends iteration once buffered messages are read.
    public func unsubscribe() async {
        await connection.unsubscribe(sid: sink.sid)
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), sink: sink)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<NATSMessage>.AsyncIterator
        let sink: SubscriptionSink

        public mutating func next() async throws(NATSError) -> NATSMessage? {
            if let message = await base.next() { return consumed(message) }
            if let error = sink.failure.withLock({ $0 }) { throw error }
            return nil
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(NATSError) -> NATSMessage? {
            if let message = await base.next(isolation: actor) { return consumed(message) }
            if let error = sink.failure.withLock({ $0 }) { throw error }
            return nil
        }

        private func consumed(_ message: NATSMessage) -> NATSMessage {
            sink.pendingBytes.subtract(message.payload.count, ordering: .relaxed)
            return message
        }
    }
}

// MARK: - Connection core

/// The shared state of one connection: subscriptions, pending requests, PONG waiters. Every field is
/// under `state`'s lock; continuations are resumed and sinks finished outside it.
final class NATSConnectionCore: Sendable {
    struct PendingRequest {
        let continuation: CheckedContinuation<Result<NATSMessage, NATSError>, Never>
        let timeout: Scheduled<Void>
        let subject: String
    }

    struct State {
        var subscriptions: [UInt64: SubscriptionSink] = [:]
        var requests: [UInt64: PendingRequest] = [:]
        /// One entry per PING written, oldest first: the waiter's id, nil for a keepalive PING.
        var pongQueue: [UInt64?] = []
        var pongWaiters: [UInt64: CheckedContinuation<NATSError?, Never>] = [:]
        var nextID: UInt64 = 1
        var closed: NATSError?
        var pingsOutstanding = 0
        var info: NATSServerInfo?
        var lastServerError: String?
        var keepalive: RepeatedTask?
    }

    let state = Mutex(State())
    let options: NATSConnectOptions
    /// `_INBOX.<random>`; request replies go to `<inbox>.r.<id>`, new inboxes are `<inbox>.i.<id>`.
    let inboxPrefix: String
    /// The sid of the `<inbox>.r.*` subscription that carries every request's reply.
    static let responseSID: UInt64 = 0

    init(options: NATSConnectOptions) {
        self.options = options
        let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        var rng = SystemRandomNumberGenerator()
        inboxPrefix = "_INBOX." + String((0..<22).map { _ in alphabet[Int(rng.next(upperBound: UInt64(alphabet.count)))] })
    }

    func makeID() -> UInt64 {
        state.withLock { s in
            defer { s.nextID += 1 }
            return s.nextID
        }
    }

    var closedError: NATSError? { state.withLock { $0.closed } }

    /// Routes one inbound message: a request's reply, or a subscription's message.
    func deliver(_ message: NATSMessage, sid: UInt64) {
        if sid == Self.responseSID {
            guard let last = message.subject.split(separator: ".").last, let id = UInt64(last) else { return }
            completeRequest(id, .success(message))
            return
        }
        guard let sink = state.withLock({ $0.subscriptions[sid] }) else { return }
        if !sink.deliver(message) {
            state.withLock { _ = $0.subscriptions.removeValue(forKey: sid) }
            sink.finish(.slowConsumer(subject: sink.subject))
        }
    }

    /// Registers a request; the error when the connection is already closed.
    func addRequest(
        _ id: UInt64, subject: String, continuation: CheckedContinuation<Result<NATSMessage, NATSError>, Never>,
        timeout: Duration, eventLoop: any EventLoop
    ) -> NATSError? {
        state.withLock { s in
            if let closed = s.closed { return closed }
            let task = eventLoop.scheduleTask(in: .nanoseconds(timeout.nanoseconds)) { [self] in
                completeRequest(id, .failure(.timeout("no reply on '\(subject)' within \(timeout)")))
            }
            s.requests[id] = PendingRequest(continuation: continuation, timeout: task, subject: subject)
            return nil
        }
    }

    func completeRequest(_ id: UInt64, _ result: Result<NATSMessage, NATSError>) {
        guard let pending = state.withLock({ $0.requests.removeValue(forKey: id) }) else { return }
        pending.timeout.cancel()
        pending.continuation.resume(returning: result)
    }

    func addSubscription(_ sink: SubscriptionSink) -> NATSError? {
        state.withLock { s in
            if let closed = s.closed { return closed }
            s.subscriptions[sink.sid] = sink
            return nil
        }
    }

    func removeSubscription(_ sid: UInt64) -> SubscriptionSink? {
        state.withLock { $0.subscriptions.removeValue(forKey: sid) }
    }

    /// Queues a PONG waiter (`id` non-nil) or a keepalive PING (`id` nil); false when closed or, for a
    /// keepalive, when too many PINGs are unanswered.
    func enqueuePing(waiter id: UInt64?, continuation: CheckedContinuation<NATSError?, Never>?) -> NATSError? {
        state.withLock { s in
            if let closed = s.closed { return closed }
            if id == nil {
                if s.pingsOutstanding >= options.maxPingsOutstanding {
                    return .connectionClosed("stale connection: \(s.pingsOutstanding) PINGs unanswered")
                }
                s.pingsOutstanding += 1
            }
            if let id, let continuation { s.pongWaiters[id] = continuation }
            s.pongQueue.append(id)
            return nil
        }
    }

    func pongReceived() {
        let waiter: CheckedContinuation<NATSError?, Never>? = state.withLock { s in
            s.pingsOutstanding = 0
            guard !s.pongQueue.isEmpty else { return nil }
            guard let id = s.pongQueue.removeFirst() else { return nil }
            return s.pongWaiters.removeValue(forKey: id)
        }
        waiter?.resume(returning: nil)
    }

    func failPongWaiter(_ id: UInt64, _ error: NATSError) {
        state.withLock { $0.pongWaiters.removeValue(forKey: id) }?.resume(returning: error)
    }

    func serverError(_ text: String) {
        state.withLock { $0.lastServerError = text }
    }

    /// Closes the bookkeeping: every pending request, PONG waiter and subscription ends with `error`
    /// (or with the server's last `-ERR`, which explains a close better than "closed by peer").
    func fail(_ error: NATSError, preferServerError: Bool = false) {
        let (requests, waiters, sinks, keepalive, final): ([PendingRequest], [CheckedContinuation<NATSError?, Never>], [SubscriptionSink], RepeatedTask?, NATSError) =
            state.withLock { s in
                if s.closed == nil {
                    if preferServerError, let text = s.lastServerError { s.closed = .serverError(text) } else { s.closed = error }
                }
                let out = (Array(s.requests.values), Array(s.pongWaiters.values), Array(s.subscriptions.values), s.keepalive, s.closed!)
                s.requests.removeAll()
                s.pongWaiters.removeAll()
                s.pongQueue.removeAll()
                s.subscriptions.removeAll()
                s.keepalive = nil
                return out
            }
        keepalive?.cancel()
        for r in requests {
            r.timeout.cancel()
            r.continuation.resume(returning: .failure(final))
        }
        for w in waiters { w.resume(returning: final) }
        for sink in sinks { sink.finish(final) }
    }
}

// MARK: - Channel handler

/// Reads parsed items on the event loop: answers server PINGs, completes the handshake on the first
/// INFO, and hands everything else to the core. Closes the channel on a protocol violation.
final class NATSClientHandler: ChannelInboundHandler {
    typealias InboundIn = NATSInbound
    typealias OutboundOut = ByteBuffer

    let core: NATSConnectionCore
    let infoPromise: EventLoopPromise<NATSServerInfo>
    private var sawInfo = false

    init(core: NATSConnectionCore, infoPromise: EventLoopPromise<NATSServerInfo>) {
        self.core = core
        self.infoPromise = infoPromise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let item = unwrapInboundIn(data)
        if !sawInfo {
            guard case .info(let info) = item else {
                fail(context: context, .protocolViolation(.malformedInfo("the first message is not INFO")))
                return
            }
            sawInfo = true
            core.state.withLock { $0.info = info }
            infoPromise.succeed(info)
            return
        }
        switch item {
        case .info(let info):
            core.state.withLock { $0.info = info }
        case .message(let message, let sid):
            core.deliver(message, sid: sid)
        case .ping:
            var buffer = context.channel.allocator.buffer(capacity: 6)
            buffer.writeString("PONG\r\n")
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        case .pong:
            core.pongReceived()
        case .ok:
            break
        case .err(let text):
            core.serverError(text)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let violation = error as? NATSProtocolViolation {
            fail(context: context, .protocolViolation(violation))
        } else {
            // An I/O error (e.g. a reset) right after `-ERR` is the server closing: its text says why.
            fail(context: context, .connectionClosed("\(error)"), preferServerError: true)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error = NATSError.connectionClosed("closed by the server or the network")
        core.fail(error, preferServerError: true)
        infoPromise.fail(core.closedError ?? error)
        context.fireChannelInactive()
    }

    private func fail(context: ChannelHandlerContext, _ error: NATSError, preferServerError: Bool = false) {
        core.fail(error, preferServerError: preferServerError)
        infoPromise.fail(core.closedError ?? error)
        context.close(promise: nil)
    }
}

// MARK: - Connection

/// One client connection to a NATS server: publish, subscribe, request/reply, flush.
///
/// Threading: all methods may be called from any task. Writes go through the channel (NIO orders them);
/// inbound bytes are parsed on the channel's event loop and handed to subscriptions' buffers.
/// Lifecycle: `connect` returns after the server answered the handshake's PING; `close()` (or the
/// server, or the network, or a protocol violation) ends it for good: pending calls and subscriptions
/// end with the closing error. No reconnect (docs/nats.md).
public final class NATSConnection: Sendable {
    let channel: any Channel
    let core: NATSConnectionCore

    /// The server's latest INFO.
    public var serverInfo: NATSServerInfo {
        core.state.withLock { $0.info! }
    }

    /// Nil while open; the error that closed the connection afterwards.
    public var closedError: NATSError? { core.closedError }

    public var options: NATSConnectOptions { core.options }

    private init(channel: any Channel, core: NATSConnectionCore) {
        self.channel = channel
        self.core = core
    }

    deinit {
        channel.close(promise: nil)
    }

    /// Connects, reads INFO, sends CONNECT (`headers`, `no_responders` on; `verbose` off), and waits for
    /// the PONG of a PING, so a refused CONNECT fails here.
    /// - Throws: `NATSError.connectFailed` (TCP, timeout, a server without headers support),
    ///   `.protocolViolation` (a bad INFO), `.serverError` (the server refused CONNECT).
    public static func connect(host: String, port: Int, options: NATSConnectOptions = .init()) async throws(NATSError) -> NATSConnection {
        let core = NATSConnectionCore(options: options)
        let group = MultiThreadedEventLoopGroup.singleton
        let eventLoop = group.next()
        let infoPromise = eventLoop.makePromise(of: NATSServerInfo.self)
        let parser = NATSParser(
            maxControlLineBytes: options.maxControlLineBytes,
            initialMaxPayloadBytes: options.maxPayloadCapBytes, hardMaxPayloadBytes: options.maxPayloadCapBytes)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.nanoseconds(options.connectTimeout.nanoseconds))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(NATSFrameDecoder(parser: parser)),
                        NATSClientHandler(core: core, infoPromise: infoPromise),
                    ])
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            infoPromise.fail(NATSError.connectFailed("\(error)"))
            throw .connectFailed("\(host):\(port): \(error)")
        }
        let connection = NATSConnection(channel: channel, core: core)
        let deadline = eventLoop.scheduleTask(in: .nanoseconds(options.connectTimeout.nanoseconds)) {
            infoPromise.fail(NATSError.connectFailed("no INFO within \(options.connectTimeout)"))
        }
        let info: NATSServerInfo
        do {
            info = try await infoPromise.futureResult.get()
            deadline.cancel()
        } catch {
            deadline.cancel()
            channel.close(promise: nil)
            throw (error as? NATSError) ?? .connectFailed("\(error)")
        }
        guard info.headers == true else {
            await connection.close()
            throw .connectFailed("server \(info.serverID) does not support headers")
        }
        var buffer = channel.allocator.buffer(capacity: 512)
        NATSWire.connect(&buffer, name: options.name)
        try NATSWire.subscribe(&buffer, subject: core.inboxPrefix + ".r.*", queue: nil, sid: NATSConnectionCore.responseSID)
        channel.writeAndFlush(buffer, promise: nil)
        do {
            try await connection.flush(timeout: options.connectTimeout)
        } catch {
            await connection.close()
            throw error
        }
        let interval = TimeAmount.nanoseconds(options.pingInterval.nanoseconds)
        let task = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [weak connection] task in
            guard let connection else { task.cancel(); return }
            connection.keepaliveTick()
        }
        core.state.withLock { $0.keepalive = task }
        if core.closedError != nil { task.cancel() }
        return connection
    }

    /// Runs on the event loop (a repeated task), like the PING writes of `flush`.
    private func keepaliveTick() {
        if let error = core.enqueuePing(waiter: nil, continuation: nil) {
            core.fail(error)
            channel.close(promise: nil)
            return
        }
        writePing()
    }

    private func writePing() {
        var buffer = channel.allocator.buffer(capacity: 6)
        buffer.writeString("PING\r\n")
        channel.writeAndFlush(buffer, promise: nil)
    }

    /// Closes the connection; pending calls and subscriptions end with `connectionClosed`.
    public func close() async {
        core.fail(.connectionClosed("closed by the client"))
        try? await channel.close()
    }

    /// Sends PING and waits for the PONG: every write before it has reached the server and been
    /// processed.
    /// - Throws: `NATSError.timeout`, or the error that closed the connection.
    public func flush(timeout: Duration? = nil) async throws(NATSError) {
        let id = core.makeID()
        let deadline = timeout ?? options.requestTimeout
        let core = self.core
        let channel = self.channel
        let result: NATSError? = await withCheckedContinuation { continuation in
            // Queue the waiter and write its PING in one event-loop task, so the order of PONG waiters is
            // the order of PINGs on the wire (keepalive PINGs are queued and written on the loop too).
            channel.eventLoop.execute {
                if let error = core.enqueuePing(waiter: id, continuation: continuation) {
                    continuation.resume(returning: error)
                    return
                }
                channel.eventLoop.scheduleTask(in: .nanoseconds(deadline.nanoseconds)) {
                    core.failPongWaiter(id, .timeout("no PONG within \(deadline)"))
                }
                var buffer = channel.allocator.buffer(capacity: 6)
                buffer.writeString("PING\r\n")
                channel.writeAndFlush(buffer, promise: nil)
            }
        }
        if let result { throw result }
    }

    /// A subject no one else uses, for a subscription's or a pull request's replies.
    public func newInbox() -> String {
        "\(core.inboxPrefix).i.\(core.makeID())"
    }

    /// Publishes one message (`PUB`, or `HPUB` with headers) and waits until it is written to the socket.
    /// - Throws: `NATSError.invalidArgument` (bad subject/header, over the server's `max_payload`), or
    ///   the error that closed the connection.
    public func publish(_ subject: String, payload: [UInt8] = [], headers: NATSHeaders? = nil, replyTo: String? = nil) async throws(NATSError) {
        let buffer = try encodePublish(subject, payload: payload, headers: headers, replyTo: replyTo)
        do {
            try await channel.writeAndFlush(buffer).get()
        } catch {
            throw core.closedError ?? .connectionClosed("write failed: \(error)")
        }
    }

    private func encodePublish(_ subject: String, payload: [UInt8], headers: NATSHeaders?, replyTo: String?) throws(NATSError) -> ByteBuffer {
        if let closed = core.closedError { throw closed }
        var buffer = channel.allocator.buffer(capacity: payload.count + subject.utf8.count + 64)
        try NATSWire.publish(&buffer, subject: subject, reply: replyTo, headers: headers, payload: payload)
        let max = serverInfo.maxPayload
        let headerBytes = (try? headers?.encoded().count) ?? 0
        guard payload.count + headerBytes <= max else {
            throw .invalidArgument("message of \(payload.count + headerBytes) bytes exceeds the server's max_payload \(max)")
        }
        return buffer
    }

    /// Publishes with a unique reply subject and waits for the first reply.
    /// - Throws: `NATSError.noResponders` (no subscriber on `subject`), `.timeout`, `.invalidArgument`,
    ///   or the error that closed the connection.
    public func request(_ subject: String, payload: [UInt8] = [], headers: NATSHeaders? = nil, timeout: Duration? = nil) async throws(NATSError) -> NATSMessage {
        let id = core.makeID()
        let reply = "\(core.inboxPrefix).r.\(id)"
        let buffer = try encodePublish(subject, payload: payload, headers: headers, replyTo: reply)
        let deadline = timeout ?? options.requestTimeout
        let core = self.core
        let channel = self.channel
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<NATSMessage, NATSError>, Never>) in
                if let error = core.addRequest(id, subject: subject, continuation: continuation, timeout: deadline, eventLoop: channel.eventLoop) {
                    continuation.resume(returning: .failure(error))
                    return
                }
                channel.writeAndFlush(buffer).whenFailure { error in
                    core.completeRequest(id, .failure(core.closedError ?? .connectionClosed("write failed: \(error)")))
                }
            }
        } onCancel: {
            core.completeRequest(id, .failure(.timeout("request on '\(subject)' cancelled")))
        }
        let message = try result.get()
        if message.status == 503 { throw .noResponders(subject: subject) }
        return message
    }

    /// Subscribes (`SUB`); messages buffer until read (see `NATSConnectOptions.subscriptionPending*`).
    /// The server has registered the interest once a later `flush()` returns.
    /// - Throws: `NATSError.invalidArgument` for a bad subject or queue group, or the closing error.
    public func subscribe(_ subject: String, queue: String? = nil) async throws(NATSError) -> NATSSubscription {
        let sid = core.makeID()
        var buffer = channel.allocator.buffer(capacity: subject.utf8.count + 32)
        try NATSWire.subscribe(&buffer, subject: subject, queue: queue, sid: sid)
        let (stream, continuation) = AsyncStream<NATSMessage>.makeStream(bufferingPolicy: .bufferingOldest(options.subscriptionPendingMessages))
        let sink = SubscriptionSink(sid: sid, subject: subject, continuation: continuation, maxPendingBytes: options.subscriptionPendingBytes)
        if let error = core.addSubscription(sink) { throw error }
        do {
            try await channel.writeAndFlush(buffer).get()
        } catch {
            _ = core.removeSubscription(sid)
            throw core.closedError ?? .connectionClosed("write failed: \(error)")
        }
        return NATSSubscription(sink: sink, stream: stream, connection: self)
    }

    func unsubscribe(sid: UInt64) async {
        guard let sink = core.removeSubscription(sid) else { return }
        sink.finish(nil)
        var buffer = channel.allocator.buffer(capacity: 32)
        NATSWire.unsubscribe(&buffer, sid: sid)
        try? await channel.writeAndFlush(buffer).get()
    }

    /// Ends a subscription's iteration (without error) after `delay` unless it ended before; used as
    /// the local deadline of a pull fetch.
    func endSubscription(_ subscription: NATSSubscription, after delay: Duration) -> Scheduled<Void> {
        let sink = subscription.sink
        return channel.eventLoop.scheduleTask(in: .nanoseconds(delay.nanoseconds)) {
            sink.finish(nil)
        }
    }
}

extension Duration {
    /// Whole nanoseconds, saturating at `Int64.max`.
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? Int64.min : Int64.max }
        return product &+ attoseconds / 1_000_000_000
    }
}
