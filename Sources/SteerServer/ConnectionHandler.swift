import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix
import SteerCore
import SteerProtocol
import SteerService

/// A mutable flag confined to one event loop, with the request's deadline timer.
final class Flag {
    var value = false
    var timer: Scheduled<Void>?
}

/// Sent to every connection when the server shuts down: finish what was received, then close once the
/// client has been quiet for `ServerConfiguration.drainQuietMillis`.
struct DrainEvent: Sendable {}

/// One connection: numbers requests, runs them on the worker pool, writes responses in request order.
///
/// What one client can make the server hold (docs/security.md):
/// - **Requests**: at most `maxInFlight` unanswered; then the handler stops reading (backpressure through
///   TCP). Lines longer than `offloadParseBytes` are parsed on a worker, never on the event loop.
/// - **Output bytes**: answers not yet taken by the client count against `maxConnectionOutputBytes` (and,
///   over all connections, `maxServerOutputBytes`); while over budget the handler starts nothing new and
///   reads nothing. A client that leaves an answer untaken for `writeTimeoutSeconds` is closed.
/// - **Time**: every request has a deadline (`timeout_ms` or `requestTimeoutMillis`); a read that passes
///   it is answered `deadline_exceeded` at once (its worker finishes in the background and is discarded),
///   a write is never abandoned once started (it is answered when durable). A line must arrive within
///   `requestLineTimeoutSeconds` of its first byte, and a connection that completes no request and takes
///   no answer for `idleTimeoutSeconds` is closed: dribbling bytes keeps nothing open.
///
/// Everything here runs on the channel's event loop.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = Frame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let shared: ServerShared
    /// This connection's queue in the worker pool (fair turns between connections).
    private let connectionID: UInt64
    /// The line framer's partial-line clock (shared with the `LineFrameDecoder` in front of this handler).
    private let lineProgress: LineProgress
    private var nextSequence = 0
    private var nextToWrite = 0
    /// Finished responses waiting for earlier ones; nil for blank lines (no response).
    private var finished: [Int: [UInt8]?] = [:]
    private var inFlight = 0
    private var readHeld = false
    private var draining = false
    private var lastReadAt = NIODeadline.now()
    /// Last complete non-blank request line or answer taken by the client (the idle clock).
    private var lastActivityAt = NIODeadline.now()
    private var drainTask: RepeatedTask?
    private var watchdog: RepeatedTask?
    private var closed = false

    /// Bytes of answers produced and not yet taken by the socket (finished out of order, or written and
    /// not yet flushed to the kernel).
    private var pendingOutputBytes = 0
    /// When each answer handed to the socket and not yet taken was written, oldest first.
    private var writeIssuedAt: [NIODeadline] = []
    private var writeIssuedHead = 0

    init(shared: ServerShared, lineProgress: LineProgress) {
        self.shared = shared
        self.lineProgress = lineProgress
        self.connectionID = shared.nextConnectionID.add(1, ordering: .relaxed).newValue
    }

    /// A request not started yet: its line is still being parsed on a worker, it is validated, or it is
    /// parked until the service can run it (`RequestService.park`: a `min_sequence` not applied yet).
    private enum Pending {
        case parsing
        case ready(Request, started: UInt64)
        case parked(Request, started: UInt64, Parked)
    }

    /// What a parked request holds: the service's function that forgets its registration and the timer
    /// that starts it at its wait limit. Touched on the event loop only.
    private final class Parked {
        var forget: (@Sendable () -> Void)?
        var timer: Scheduled<Void>?
    }

    /// Requests not started yet, in arrival order.
    private var waiting: [(sequence: Int, pending: Pending)] = []
    private var running = 0
    /// Requests running per lane, and the lanes whose write is running (see `pump`).
    private var runningByLane: [UInt64: Int] = [:]
    private var writingLanes = Set<UInt64>()
    /// Inside a loop spin (and the answer it handles): no nested spin.
    private var spinning = false
    /// Inside `pump`, and whether it must scan once more.
    private var pumping = false
    private var pumpAgain = false

    /// Lines received while the connection was at one of its limits: not parsed yet. Bounded by one
    /// socket read, because reading stops while it is non-empty.
    private var backlog: [Frame] = []
    private var backlogHead = 0
    private var admitting = false
    /// Draining: the previous check found the connection idle (see `startDraining`).
    private var closeCandidate = false
    /// The client half-closed its side: nothing more can arrive, so the connection closes as soon as
    /// every request it sent has been answered (no quiet period to wait for).
    private var inputEnded = false

    private var configuration: ServerConfiguration { shared.configuration }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        watchdog = context.eventLoop.scheduleRepeatedTask(initialDelay: Self.watchdogInterval, delay: Self.watchdogInterval) { task in
            let (connection, context) = bound.value
            if connection.closed {
                task.cancel()
                return
            }
            connection.checkTimers(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        watchdog?.cancel()
        watchdog = nil
        // Output bytes still held are released as their writes fail and their requests finish.
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastReadAt = .now()
        closeCandidate = false
        backlog.append(unwrapInboundIn(data))
        admit(context: context)
    }

    /// Whether the connection may take on another request now: below its request and output budgets and
    /// the server below its output budget.
    private var canAdmit: Bool {
        inFlight < configuration.maxInFlight
            && pendingOutputBytes < configuration.maxConnectionOutputBytes
            && shared.outputBytes.load(ordering: .relaxed) < configuration.maxServerOutputBytes
    }

    /// Moves lines from the backlog into processing while the connection can admit more.
    private func admit(context: ChannelHandlerContext) {
        // `process` may complete synchronously, and `complete` admits again: loop here instead of recursing.
        if admitting { return }
        admitting = true
        defer { admitting = false }
        while backlogHead < backlog.count && canAdmit && !closed {
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
            lastActivityAt = .now()
            shared.service.stats.recordError(.tooLarge)
            let error = SteerError(.tooLarge, "request line exceeds \(configuration.limits.maxLineBytes) bytes (maxLineBytes); it was skipped up to the next newline")
            complete(sequence, RequestHandler.errorLine(id: nil, error), context: context)
        case .line(let buffer):
            if buffer.readableBytes > configuration.offloadParseBytes {
                lastActivityAt = .now()
                parseOffLoop(buffer, sequence: sequence, context: context)
                return
            }
            // Parsing and validation of a short line are cheap and tell whether the request writes (see `pump`).
            let prepared = buffer.withUnsafeReadableBytes { raw in
                shared.service.prepare(raw.bindMemory(to: UInt8.self))
            }
            accept(prepared, sequence: sequence, context: context)
        }
    }

    /// Takes a parsed line: an answer known at once, or a request to run in turn.
    private func accept(_ prepared: RequestHandler.Prepared, sequence: Int, context: ChannelHandlerContext) {
        switch prepared {
        case .done(let output):
            if output != nil { lastActivityAt = .now() } // blank lines are no activity
            complete(sequence, output, context: context)
        case .request(let request, let started):
            lastActivityAt = .now()
            waiting.append((sequence, parkIfNeeded(request, started: started, sequence: sequence, context: context)))
            pump(context: context)
        }
    }

    /// `.ready`, or `.parked` when the service has the request wait without a worker (`RequestService.park`).
    /// A parked request is made ready when the service resumes it or at its wait limit
    /// (`RequestHandler.waitLimit` of its deadline), whichever comes first; at the limit the registration
    /// is forgotten and the request runs anyway, so its worker answers at once (`unavailable` for a
    /// `min_sequence` still not applied). Only its lane waits meanwhile.
    private func parkIfNeeded(_ request: Request, started: UInt64, sequence: Int, context: ChannelHandlerContext) -> Pending {
        // Only a `min_sequence` parks (`RequestService.park`): every other request skips the allocations below.
        guard request.minSequence != nil else { return .ready(request, started: started) }
        let parked = Parked()
        let bound = NIOLoopBound((self, context, parked), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        guard let forget = shared.service.park(request, resume: {
            eventLoop.execute {
                let (connection, context, _) = bound.value
                connection.unpark(sequence, context: context)
            }
        }) else {
            return .ready(request, started: started)
        }
        parked.forget = forget
        let limit = RequestHandler.waitLimit(deadlineNanos: deadline(of: request, started: started))
        let delay = TimeAmount.nanoseconds(Int64(limit &- min(limit, DispatchTime.now().uptimeNanoseconds)))
        parked.timer = eventLoop.scheduleTask(in: delay) {
            let (connection, context, parked) = bound.value
            // Forgotten here even when the connection is gone: nothing registered outlives its deadline.
            parked.forget?()
            connection.unpark(sequence, context: context)
        }
        return .parked(request, started: started, parked)
    }

    private func unpark(_ sequence: Int, context: ChannelHandlerContext) {
        guard let position = waiting.firstIndex(where: { $0.sequence == sequence }),
              case .parked(let request, let started, let parked) = waiting[position].pending else { return }
        parked.forget?()
        parked.forget = nil
        parked.timer?.cancel()
        parked.timer = nil
        waiting[position].pending = .ready(request, started: started)
        pump(context: context)
    }

    /// Parses a long line on a worker (its cost is linear, but a megabyte is milliseconds of CPU that the
    /// event loop's other connections should not wait for). Until it is parsed it holds its place: nothing
    /// after it starts, because it may turn out to be a write.
    private func parseOffLoop(_ buffer: ByteBuffer, sequence: Int, context: ChannelHandlerContext) {
        waiting.append((sequence, .parsing))
        let bytes = Array(buffer.readableBytesView)
        let service = shared.service
        let future = shared.offload(service: service, connection: connectionID, on: context.eventLoop) {
            bytes.withUnsafeBufferPointer { service.prepare($0) }
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        future.whenComplete { result in
            let (connection, context) = bound.value
            connection.parsed(sequence: sequence, result, context: context)
        }
    }

    private func parsed(sequence: Int, _ result: Result<RequestHandler.Prepared, any Error>, context: ChannelHandlerContext) {
        guard let position = waiting.firstIndex(where: { $0.sequence == sequence }) else { return }
        switch result {
        case .success(.request(let request, let started)):
            waiting[position].pending = parkIfNeeded(request, started: started, sequence: sequence, context: context)
        case .success(.done(let output)):
            waiting.remove(at: position)
            complete(sequence, output, context: context)
        case .failure:
            waiting.remove(at: position)
            complete(sequence, RequestHandler.errorLine(id: nil, SteerError(.unavailable, "the server is shutting down")), context: context)
        }
        pump(context: context)
    }

    /// The worker-pool queue of a request: its connection's, or a router's per-client queue within the
    /// connection (`fair_queue`; the handler refuses it without an admin key, so only routers spread out).
    private func queue(of request: Request) -> UInt64 {
        guard let lane = request.fairQueue else { return connectionID }
        return (connectionID &* 0x9E37_79B9_7F4A_7C15) ^ (lane &+ 1) | (1 << 63)
    }

    /// The uptime-nanosecond deadline of a request that arrived at `started`.
    private func deadline(of request: Request, started: UInt64) -> UInt64 {
        let millis = request.timeoutMillis ?? configuration.requestTimeoutMillis
        return started &+ UInt64(max(1, millis)) &* 1_000_000
    }

    /// Starts waiting requests on the worker pool. Ordering holds per lane (the connection, or a router
    /// client's `fair_queue` within it): reads run concurrently; a write (upsert, delete, swap) starts only
    /// when everything before it in its lane finished, and nothing after it in its lane starts until it
    /// finished, so a client always reads its own writes. Lanes do not wait for each other, except behind a
    /// line still being parsed (its lane is not known yet).
    private func pump(context: ChannelHandlerContext) {
        // A future that is already complete runs its callback inline, which may pump again: the outer call
        // repeats instead, so `waiting` is never rebuilt by two scans at once.
        if pumping {
            pumpAgain = true
            return
        }
        pumping = true
        defer { pumping = false }
        repeat {
            pumpAgain = false
            pumpOnce(context: context)
        } while pumpAgain
    }

    private func pumpOnce(context: ChannelHandlerContext) {
        var spinFor: (next: (sequence: Int, request: Request, started: UInt64), ready: ReadyResult<[UInt8]>, handled: Flag)?
        var expired: [(sequence: Int, output: [UInt8])] = []
        var blocked = Set<UInt64>()
        var kept: [(sequence: Int, pending: Pending)] = []
        var index = 0
        while index < waiting.count {
            let entry = waiting[index]
            index += 1
            if !closed, case .parked(let request, _, _) = entry.pending {
                // Waiting for its sequence: later requests of its lane keep their order behind it.
                blocked.insert(queue(of: request))
                kept.append(entry)
                continue
            }
            guard !closed, case .ready(let request, let started) = entry.pending else {
                // Still parsing (or closed): it and everything after it wait.
                kept.append(contentsOf: waiting[(index - 1)...])
                break
            }
            let lane = queue(of: request)
            let isWrite = request.operation.isAdmin
            let atLimit = configuration.maxRunningPerConnection > 0 && running >= configuration.maxRunningPerConnection
            if atLimit || blocked.contains(lane) || writingLanes.contains(lane) || (isWrite && runningByLane[lane, default: 0] > 0) {
                blocked.insert(lane) // later requests of this lane keep their order behind it
                kept.append(entry)
                continue
            }
            let next = (sequence: entry.sequence, request: request, started: started)
            let deadlineNanos = deadline(of: request, started: started)
            if DispatchTime.now().uptimeNanoseconds >= deadlineNanos {
                // Expired while waiting its turn: not started, so nothing of it happened (writes included).
                expired.append((next.sequence, shared.service.stats.deadlineExceeded(request, startedNanos: started)))
                continue
            }
            running += 1
            runningByLane[lane, default: 0] += 1
            if isWrite {
                writingLanes.insert(lane)
                blocked.insert(lane)
            }
            let alone = shared.running.add(1, ordering: .relaxed).newValue == 1
            let handled = Flag()
            let execution = ExecutionContext(startedNanos: started, deadlineNanos: deadlineNanos, connection: lane)
            let future: EventLoopFuture<[UInt8]>
            if !isWrite && alone && spinNanoseconds > 0 && shared.service.publishesEarly {
                let ready = ReadyResult<[UInt8]>()
                future = shared.service.execute(request, context: execution, on: context.eventLoop, ready: ready)
                spinFor = (next, ready, handled)
            } else {
                future = shared.service.execute(request, context: execution, on: context.eventLoop)
                spinFor = nil
            }
            let bound = NIOLoopBound((self, context, handled), eventLoop: context.eventLoop)
            future.whenComplete { result in
                let (connection, context, handled) = bound.value
                connection.finish(next, lane: lane, isWrite: isWrite, result, handled: handled, context: context)
            }
            if !isWrite {
                // A read that outlives its deadline is answered now; a write is answered when it is durable.
                let delay = TimeAmount.nanoseconds(Int64(deadlineNanos &- min(deadlineNanos, DispatchTime.now().uptimeNanoseconds)))
                handled.timer = context.eventLoop.scheduleTask(in: delay) {
                    let (connection, context, handled) = bound.value
                    let answer = connection.shared.service.stats.deadlineExceeded(next.request, startedNanos: next.started)
                    connection.finish(next, lane: lane, isWrite: false, .success(answer), handled: handled, context: context)
                }
            }
        }
        waiting = kept
        for answer in expired { complete(answer.sequence, answer.output, context: context) }
        // The only request running in the server was just started: wait for its answer here rather than
        // sleep and be woken for it (see `ServerConfiguration.loopSpinMicroseconds`).
        if let spin = spinFor, !spinning {
            spinning = true
            defer { spinning = false }
            if let output = waitForAnswer(spin.ready) {
                shared.loopSpinAnswered.add(1, ordering: .relaxed)
                finish(spin.next, lane: queue(of: spin.next.request), isWrite: false, .success(output), handled: spin.handled, context: context)
            } else {
                shared.loopSpinGaveUp.add(1, ordering: .relaxed)
            }
        }
    }

    /// Handles a finished request once (from the loop spin, its future or its deadline, whichever comes first).
    private func finish(_ next: (sequence: Int, request: Request, started: UInt64), lane: UInt64, isWrite: Bool,
                        _ result: Result<[UInt8], any Error>, handled: Flag, context: ChannelHandlerContext) {
        if handled.value { return }
        handled.value = true
        handled.timer?.cancel()
        handled.timer = nil
        shared.running.subtract(1, ordering: .relaxed)
        running -= 1
        let left = runningByLane[lane, default: 1] - 1
        runningByLane[lane] = left > 0 ? left : nil
        if isWrite { writingLanes.remove(lane) }
        switch result {
        case .success(let output):
            complete(next.sequence, output, context: context)
        case .failure:
            let error = SteerError(.unavailable, "the server is shutting down")
            complete(next.sequence, RequestHandler.errorLine(id: next.request.id, error), context: context)
        }
        pump(context: context)
    }

    private var spinNanoseconds: UInt64 { UInt64(max(0, configuration.loopSpinMicroseconds)) * 1000 }

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

    private func holdOutput(_ bytes: Int) {
        pendingOutputBytes += bytes
        shared.outputBytes.add(bytes, ordering: .relaxed)
    }

    private func releaseOutput(_ bytes: Int) {
        guard bytes > 0 else { return }
        pendingOutputBytes -= bytes
        shared.outputBytes.subtract(bytes, ordering: .relaxed)
    }

    /// Records a finished response and writes every response that is next in request order. A request
    /// stays in flight, and its bytes count against the output budgets, until the socket took it.
    private func complete(_ sequence: Int, _ output: [UInt8]?, context: ChannelHandlerContext) {
        holdOutput(output?.count ?? 0)
        finished[sequence] = .some(output)
        var wrote = false
        while let next = finished.removeValue(forKey: nextToWrite) {
            nextToWrite += 1
            if let bytes = next, !closed {
                var buffer = context.channel.allocator.buffer(capacity: bytes.count)
                buffer.writeBytes(bytes)
                let promise = context.eventLoop.makePromise(of: Void.self)
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                let size = bytes.count
                writeIssuedAt.append(.now())
                promise.futureResult.whenComplete { _ in
                    let (connection, context) = bound.value
                    connection.inFlight -= 1
                    connection.releaseOutput(size)
                    connection.writeIssuedHead += 1
                    if connection.writeIssuedHead == connection.writeIssuedAt.count {
                        connection.writeIssuedAt.removeAll(keepingCapacity: true)
                        connection.writeIssuedHead = 0
                    }
                    connection.lastActivityAt = .now()
                    connection.resume(context: context)
                }
                context.write(wrapOutboundOut(buffer), promise: promise)
                wrote = true
            } else {
                releaseOutput(next?.count ?? 0)
                inFlight -= 1
            }
        }
        if wrote { context.flush() }
        resume(context: context)
    }

    /// Admits backlog and resumes reading when the connection can admit more.
    private func resume(context: ChannelHandlerContext) {
        if closed { return }
        admit(context: context)
        if inputEnded {
            closeIfAnswered(context: context)
            return
        }
        if readHeld && canAdmit && backlogHead == backlog.count {
            readHeld = false
            lastReadAt = .now() // asking for data again counts as activity for the drain's quiet period
            // A partial line waited on our backpressure, not on the client: its clock starts again.
            if lineProgress.partialSince != nil { lineProgress.partialSince = lastReadAt }
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if !canAdmit || backlogHead < backlog.count {
            readHeld = true
            return
        }
        lastReadAt = .now()
        context.read()
    }

    /// How often the watchdog looks at the connection's clocks.
    static let watchdogInterval = TimeAmount.milliseconds(100)

    /// Closes a connection that broke a time limit; resumes one that was held only by the server-wide
    /// output budget (nothing else wakes it when other connections drain).
    private func checkTimers(context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        if writeIssuedHead < writeIssuedAt.count, configuration.writeTimeoutSeconds > 0,
           now - writeIssuedAt[writeIssuedHead] >= .seconds(Int64(configuration.writeTimeoutSeconds)) {
            closeForLimit("slow reader: an answer was not taken within writeTimeoutSeconds \(configuration.writeTimeoutSeconds)", context: context)
            return
        }
        if !readHeld, let since = lineProgress.partialSince, configuration.requestLineTimeoutSeconds > 0,
           now - since >= .seconds(Int64(configuration.requestLineTimeoutSeconds)) {
            closeForLimit("a request line did not complete within requestLineTimeoutSeconds \(configuration.requestLineTimeoutSeconds)", context: context)
            return
        }
        if configuration.idleTimeoutSeconds > 0, inFlight == 0, backlogHead == backlog.count,
           now - lastActivityAt >= .seconds(Int64(configuration.idleTimeoutSeconds)) {
            closeForLimit("idle for idleTimeoutSeconds \(configuration.idleTimeoutSeconds)", context: context)
            return
        }
        if readHeld { resume(context: context) }
    }

    private func closeForLimit(_ reason: String, context: ChannelHandlerContext) {
        shared.counters.withLock { $0.closedForLimits += 1 }
        shared.logger.debug("closing connection", metadata: ["steer.reason": "\(reason)",
                                                              "steer.peer": "\(context.remoteAddress?.description ?? "?")"])
        closed = true
        context.close(promise: nil)
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if shared.draining.get() { startDraining(context: context) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        drainTask?.cancel()
        drainTask = nil
        watchdog?.cancel()
        watchdog = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is DrainEvent {
            startDraining(context: context)
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
        guard !closed, inFlight == 0, backlogHead == backlog.count, waiting.isEmpty else { return }
        closed = true
        drainTask?.cancel()
        drainTask = nil
        context.close(promise: nil)
    }

    private func startDraining(context: ChannelHandlerContext) {
        guard !draining else { return }
        draining = true
        let quiet = TimeAmount.milliseconds(Int64(configuration.drainQuietMillis))
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
