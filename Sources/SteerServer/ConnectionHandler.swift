import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix
import SteerCore
import SteerProtocol

/// A mutable flag confined to one event loop.
final class Flag {
    var value = false
}

/// Sent to every connection when the server shuts down: finish what was received, then close once the
/// client has been quiet for `ServerConfiguration.drainQuietMillis`.
struct DrainEvent: Sendable {}

/// One connection: numbers requests, runs them on the worker pool, writes responses in request order,
/// and stops reading while `maxInFlight` requests are unanswered (backpressure through TCP).
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = Frame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let shared: ServerShared
    private var nextSequence = 0
    private var nextToWrite = 0
    /// Finished responses waiting for earlier ones; nil for blank lines (no response).
    private var finished: [Int: [UInt8]?] = [:]
    private var inFlight = 0
    private var readHeld = false
    private var draining = false
    private var lastReadAt = NIODeadline.now()
    private var drainTask: RepeatedTask?
    private var closed = false

    init(shared: ServerShared) { self.shared = shared }

    /// Validated requests not started yet, in arrival order.
    private var waiting: [(sequence: Int, request: Request, started: UInt64)] = []
    private var waitingHead = 0
    private var running = 0
    private var writeRunning = false
    /// Inside a loop spin (and the answer it handles): no nested spin.
    private var spinning = false

    /// Lines received while `maxInFlight` requests were unanswered: not parsed yet. Bounded by one
    /// socket read, because reading stops while it is non-empty.
    private var backlog: [Frame] = []
    private var backlogHead = 0
    private var admitting = false
    /// Draining: the previous check found the connection idle (see `startDraining`).
    private var closeCandidate = false
    /// The client half-closed its side: nothing more can arrive, so the connection closes as soon as
    /// every request it sent has been answered (no quiet period to wait for).
    private var inputEnded = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastReadAt = .now()
        closeCandidate = false
        backlog.append(unwrapInboundIn(data))
        admit(context: context)
    }

    /// Moves lines from the backlog into processing while fewer than `maxInFlight` are unanswered.
    private func admit(context: ChannelHandlerContext) {
        // `process` may complete synchronously, and `complete` admits again: loop here instead of recursing.
        if admitting { return }
        admitting = true
        defer { admitting = false }
        while backlogHead < backlog.count && inFlight < shared.configuration.maxInFlight {
            let frame = backlog[backlogHead]
            backlogHead += 1
            process(frame, context: context)
        }
        if backlogHead == backlog.count {
            backlog.removeAll(keepingCapacity: true)
            backlogHead = 0
        }
    }

    private func process(_ frame: Frame, context: ChannelHandlerContext) {
        let sequence = nextSequence
        nextSequence += 1
        inFlight += 1
        switch frame {
        case .tooLong:
            shared.service.stats.recordError(.tooLarge)
            let error = SteerError(.tooLarge, "request line exceeds \(shared.configuration.limits.maxLineBytes) bytes (maxLineBytes); it was skipped up to the next newline")
            complete(sequence, RequestHandler.errorLine(id: nil, error), context: context)
        case .line(let buffer):
            // Parsing and validation are cheap and tell whether the request writes (see `pump`).
            let prepared = buffer.withUnsafeReadableBytes { raw in
                shared.service.prepare(raw.bindMemory(to: UInt8.self))
            }
            switch prepared {
            case .done(let output):
                complete(sequence, output, context: context)
            case .request(let request, let started):
                waiting.append((sequence, request, started))
                pump(context: context)
            }
        }
    }

    /// Starts waiting requests on the worker pool. Reads run concurrently; a write (upsert, delete, swap)
    /// starts only when everything before it finished, and nothing after it starts until it finished, so
    /// a connection always reads its own writes.
    private func pump(context: ChannelHandlerContext) {
        var spinFor: (next: (sequence: Int, request: Request, started: UInt64), ready: ReadyResult<[UInt8]>, handled: Flag)?
        while waitingHead < waiting.count {
            let next = waiting[waitingHead]
            let isWrite = next.request.operation.isAdmin
            if writeRunning || (isWrite && running > 0) { break }
            waitingHead += 1
            running += 1
            if isWrite { writeRunning = true }
            let alone = shared.running.add(1, ordering: .relaxed).newValue == 1
            let handled = Flag()
            let future: EventLoopFuture<[UInt8]>
            if !isWrite && alone && spinNanoseconds > 0 && shared.service.publishesEarly {
                let ready = ReadyResult<[UInt8]>()
                future = shared.service.execute(next.request, startedNanos: next.started, on: context.eventLoop, ready: ready)
                spinFor = (next, ready, handled)
            } else {
                future = shared.service.execute(next.request, startedNanos: next.started, on: context.eventLoop)
                spinFor = nil
            }
            let bound = NIOLoopBound((self, context, handled), eventLoop: context.eventLoop)
            future.whenComplete { result in
                let (connection, context, handled) = bound.value
                connection.finish(next, isWrite: isWrite, result, handled: handled, context: context)
            }
            if isWrite { break }
        }
        if waitingHead == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            waitingHead = 0
        } else if waitingHead > 64 {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
        // The only request running in the server was just started: wait for its answer here rather than
        // sleep and be woken for it (see `ServerConfiguration.loopSpinMicroseconds`).
        if let spin = spinFor, !spinning {
            spinning = true
            defer { spinning = false }
            if let output = waitForAnswer(spin.ready) {
                shared.loopSpinAnswered.add(1, ordering: .relaxed)
                finish(spin.next, isWrite: false, .success(output), handled: spin.handled, context: context)
            } else {
                shared.loopSpinGaveUp.add(1, ordering: .relaxed)
            }
        }
    }

    /// Handles a finished request once (from the loop spin or from its future, whichever comes first).
    private func finish(_ next: (sequence: Int, request: Request, started: UInt64), isWrite: Bool,
                        _ result: Result<[UInt8], any Error>, handled: Flag, context: ChannelHandlerContext) {
        if handled.value { return }
        handled.value = true
        shared.running.subtract(1, ordering: .relaxed)
        running -= 1
        if isWrite { writeRunning = false }
        switch result {
        case .success(let output):
            complete(next.sequence, output, context: context)
        case .failure:
            let error = SteerError(.unavailable, "the server is shutting down")
            complete(next.sequence, RequestHandler.errorLine(id: next.request.id, error), context: context)
        }
        pump(context: context)
    }

    private var spinNanoseconds: UInt64 { UInt64(max(0, shared.configuration.loopSpinMicroseconds)) * 1000 }

    /// Spins until the worker publishes the answer, another request starts anywhere in the server, or the
    /// spin time is up.
    private func waitForAnswer(_ ready: ReadyResult<[UInt8]>) -> [UInt8]? {
        let deadline = DispatchTime.now().uptimeNanoseconds &+ spinNanoseconds
        var checks = 0
        while true {
            if let output = ready.peek() { return output }
            // Give the core to any other runnable thread (the worker itself, when the machine is busy and
            // both share a core): without this a spinning loop delays the very answer it waits for.
            sched_yield()
            checks &+= 1
            if checks & 7 == 0 {
                if shared.running.load(ordering: .relaxed) > 1 || DispatchTime.now().uptimeNanoseconds >= deadline {
                    return ready.peek()
                }
            }
        }
    }

    /// Records a finished response and writes every response that is next in request order. A request
    /// stays in flight until its response was handed to the socket, so a client that does not read
    /// eventually stops the server from reading it (no unbounded output buffer).
    private func complete(_ sequence: Int, _ output: [UInt8]?, context: ChannelHandlerContext) {
        finished[sequence] = .some(output)
        var wrote = false
        while let next = finished.removeValue(forKey: nextToWrite) {
            nextToWrite += 1
            if let bytes = next, !closed {
                var buffer = context.channel.allocator.buffer(capacity: bytes.count)
                buffer.writeBytes(bytes)
                let promise = context.eventLoop.makePromise(of: Void.self)
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                promise.futureResult.whenComplete { _ in
                    let (connection, context) = bound.value
                    connection.inFlight -= 1
                    connection.resume(context: context)
                }
                context.write(wrapOutboundOut(buffer), promise: promise)
                wrote = true
            } else {
                inFlight -= 1
            }
        }
        if wrote { context.flush() }
        resume(context: context)
    }

    /// Admits backlog and resumes reading when below the in-flight limit.
    private func resume(context: ChannelHandlerContext) {
        if closed { return }
        admit(context: context)
        if inputEnded {
            closeIfAnswered(context: context)
            return
        }
        if readHeld && inFlight < shared.configuration.maxInFlight && backlogHead == backlog.count {
            readHeld = false
            lastReadAt = .now() // asking for data again counts as activity for the drain's quiet period
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if inFlight >= shared.configuration.maxInFlight || backlogHead < backlog.count {
            readHeld = true
            return
        }
        lastReadAt = .now()
        context.read()
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if shared.draining.get() { startDraining(context: context) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        drainTask?.cancel()
        drainTask = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is DrainEvent {
            startDraining(context: context)
            return
        }
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .all {
            if inFlight == 0 {
                shared.logger.debug("closing idle connection", metadata: ["steer.peer": "\(context.remoteAddress?.description ?? "?")"])
                context.close(promise: nil)
            }
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            // The client half-closed: answer what it sent, then close at once. A closed client would
            // otherwise hold one of `maxConnections` for the drain's quiet period.
            inputEnded = true
            closeIfAnswered(context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func closeIfAnswered(context: ChannelHandlerContext) {
        guard !closed, inFlight == 0, backlogHead == backlog.count, waitingHead == waiting.count else { return }
        closed = true
        drainTask?.cancel()
        drainTask = nil
        context.close(promise: nil)
    }

    private func startDraining(context: ChannelHandlerContext) {
        guard !draining else { return }
        draining = true
        let quiet = TimeAmount.milliseconds(Int64(shared.configuration.drainQuietMillis))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        drainTask = context.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(10), delay: .milliseconds(10)) { task in
            let (connection, context) = bound.value
            if connection.closed {
                task.cancel()
                return
            }
            // A connection that has sent nothing yet gets a longer grace: its first bytes may still be
            // on their way while the loop is busy with other connections.
            let grace = connection.nextSequence == 0 ? max(quiet, .seconds(1)) : quiet
            let idle = connection.inFlight == 0 && connection.backlogHead == connection.backlog.count
                && NIODeadline.now() - connection.lastReadAt >= grace
            guard idle else {
                connection.closeCandidate = false
                return
            }
            // Close only on the second idle check in a row: the event loop polls the socket between two
            // runs of this task, so data that arrived while the loop was busy is read (and resets the
            // candidate) before we close. Closing with unread input would make the kernel send a reset
            // that destroys responses the client has not read yet.
            if !connection.closeCandidate {
                connection.closeCandidate = true
                return
            }
            task.cancel()
            connection.shared.logger.debug("drained connection closed", metadata: ["steer.requests": "\(connection.nextSequence)"])
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        shared.logger.debug("connection error", metadata: ["steer.error": "\(error)"])
        context.close(promise: nil)
    }
}
