import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Prometheus
import ServiceLifecycle
import SteerCore
import SteerEngine
import SteerProtocol
import SteerService
import Synchronization

/// Settings of the TCP server. Every limit is documented in docs/configuration.md.
public struct ServerConfiguration: Sendable {
    /// Address to bind; 127.0.0.1 unless told otherwise.
    public var host: String
    /// Port; 0 picks a free one.
    public var port: Int
    public var limits: ProtocolLimits
    /// Most simultaneous connections; more are answered `unavailable` and closed.
    public var maxConnections: Int
    /// Close a connection that sent no request and took no answer for this long, with nothing in flight
    /// (0 = never). Blank lines and partial lines are not activity.
    public var idleTimeoutSeconds: Int
    /// Most unanswered requests per connection before the server stops reading from it.
    public var maxInFlight: Int
    /// Event-loop threads (framing and writing only).
    public var eventLoopThreads: Int
    /// Worker threads for FAISS, RocksDB and BLAS work.
    public var workerThreads: Int
    /// On shutdown a connection is closed once nothing is in flight and it sent nothing for this long.
    public var drainQuietMillis: Int
    /// Longest wait for connections to drain on shutdown before they are closed.
    public var shutdownTimeoutSeconds: Int
    /// The keys and scopes requests are checked against (docs/protocol.md "Keys and scopes"); nil → every
    /// op is open. Only the engine's request handler uses it: a router checks keys itself.
    public var accessKeys: AccessKeys?
    /// When set (0 picks a free port), Prometheus metrics are served on `GET /metrics` of this port.
    public var metricsPort: Int?
    /// OpenMP threads FAISS may use per request on each worker thread (default 1: parallelism comes
    /// from serving requests concurrently, per docs/dependencies.md).
    public var openMPThreadsPerWorker: Int = 1
    /// How long an idle worker thread spins before it parks (0: parks at once). See `WorkerPool`. Opt-in
    /// (default 0): spinning costs CPU per request at sparse traffic beyond the bound the benchmarks set
    /// (≤ 1.5× the CPU per request at saturation; measured 1.9× with both spins on, docs/benchmarks.md
    /// "Spin defaults"), in exchange for a lower single-connection p50 on an otherwise idle machine.
    public var workerSpinMicroseconds: Int = ServerConfiguration.defaultWorkerSpinMicroseconds
    public static let defaultWorkerSpinMicroseconds = 0
    /// How long an event loop may spin waiting for the answer of a read request it just handed to a worker,
    /// when that request is the only one running in the whole server (0: never). The answer is then written
    /// without the cross-thread wake-up of the loop; the spin stops at once when another request starts
    /// anywhere. Engine work never runs on the loop either way. Opt-in (default 0) for the reason above.
    public var loopSpinMicroseconds: Int = ServerConfiguration.defaultLoopSpinMicroseconds
    public static let defaultLoopSpinMicroseconds = 0
    /// When set, the protocol port speaks TLS only (the metrics port stays plain HTTP).
    public var tls: TLSFiles?
    /// A request's deadline when it names no `timeout_ms`, in milliseconds from its arrival.
    public var requestTimeoutMillis: Int = 10_000
    /// The write log client writes go to (`steer serve --follow`, docs/scaling.md); nil: the engine's store.
    public var writeLog: (any WriteLog)?
    /// What the admin op `snapshot` writes with (`steer serve --snapshot-dir`); nil: it is refused.
    public var snapshots: (any ServerSnapshots)?
    /// A request line must end within this many seconds of its first byte (0 = no limit).
    public var requestLineTimeoutSeconds: Int = 10
    /// A client must take each answer within this many seconds of its writing, or it is closed (0 = no limit).
    public var writeTimeoutSeconds: Int = 30
    /// Answers not yet taken by one client, in bytes, above which the connection starts nothing new.
    public var maxConnectionOutputBytes: Int = 8 << 20
    /// Answers not yet taken over all clients, in bytes, above which no connection starts anything new.
    public var maxServerOutputBytes: Int = 512 << 20
    /// Most requests of one connection running at once (0: as many as `maxInFlight`). `steer serve` needs
    /// none (its workers take connections in turns); `steer route`, whose requests run on the shared task
    /// executor, limits it so that one client's heavy requests cannot take every thread.
    public var maxRunningPerConnection: Int = 0
    /// Lines longer than this many bytes are parsed on a worker thread instead of the event loop.
    public var offloadParseBytes: Int = 16 << 10
    /// Most simultaneous connections to the metrics port; more are closed at once.
    public var maxMetricsConnections: Int = 16
    /// A metrics connection is closed after this many seconds without traffic.
    public var metricsIdleTimeoutSeconds: Int = 10

    public init(host: String = "127.0.0.1", port: Int = 7878, limits: ProtocolLimits = ProtocolLimits(),
                maxConnections: Int = 1024, idleTimeoutSeconds: Int = 300, maxInFlight: Int = 64,
                eventLoopThreads: Int = System.coreCount, workerThreads: Int = System.coreCount,
                drainQuietMillis: Int = 250, shutdownTimeoutSeconds: Int = 10, accessKeys: AccessKeys? = nil) {
        self.host = host
        self.port = port
        self.limits = limits
        self.maxConnections = maxConnections
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.maxInFlight = maxInFlight
        self.eventLoopThreads = eventLoopThreads
        self.workerThreads = workerThreads
        self.drainQuietMillis = drainQuietMillis
        self.shutdownTimeoutSeconds = shutdownTimeoutSeconds
        self.accessKeys = accessKeys
    }
}

/// The PEM files of the server's TLS identity.
public struct TLSFiles: Sendable, Equatable {
    /// Certificate chain, leaf first (PEM).
    public var certificateChain: String
    /// The leaf certificate's private key (PEM, unencrypted).
    public var privateKey: String

    public init(certificateChain: String, privateKey: String) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
    }

    /// Checks what `makeContext` checks, for a configuration error before anything starts.
    ///
    /// - Throws: `SteerError` naming the file at fault.
    public func validate() throws(SteerError) {
        _ = try makeContext()
    }

    /// Reads and checks both files and that the key belongs to the certificate.
    ///
    /// - Throws: `SteerError` (`.invalidRequest`) naming the file that is missing, unreadable or not PEM.
    func makeContext() throws(SteerError) -> NIOSSLContext {
        guard FileManager.default.isReadableFile(atPath: certificateChain) else {
            throw SteerError.invalid("TLS certificate file '\(certificateChain)' does not exist or cannot be read")
        }
        guard FileManager.default.isReadableFile(atPath: privateKey) else {
            throw SteerError.invalid("TLS private key file '\(privateKey)' does not exist or cannot be read")
        }
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateChain)
        } catch {
            throw SteerError.invalid("TLS certificate file '\(certificateChain)' is not a PEM certificate chain: \(error)")
        }
        guard !chain.isEmpty else {
            throw SteerError.invalid("TLS certificate file '\(certificateChain)' holds no certificate")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: privateKey, format: .pem)
        } catch {
            throw SteerError.invalid("TLS private key file '\(privateKey)' is not an unencrypted PEM private key: \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                    privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw SteerError.invalid("TLS private key '\(privateKey)' does not match certificate '\(certificateChain)' or cannot be used: \(error)")
        }
    }
}

/// What a server runs validated requests with: the engine on worker threads (`steer serve`), or a router
/// that forwards them to shard servers (`steer route`). The server frames lines, orders responses and
/// enforces connection limits the same way for both.
public protocol RequestService: Sendable {
    /// Parses and validates one request line (without its newline); linear in its length. Called on an
    /// event loop for short lines, through `offload` for long ones.
    func prepare(_ line: UnsafeBufferPointer<UInt8>) -> RequestHandler.Prepared
    /// Runs a prepared request; the future (on `eventLoop`) carries the response line including its `\n`.
    /// A request whose deadline passed before it started is answered `deadline_exceeded` without running.
    func execute(_ request: Request, context: ExecutionContext, on eventLoop: any EventLoop) -> EventLoopFuture<[UInt8]>
    /// As `execute`, also publishing the response in `ready` as soon as it exists (on another thread),
    /// when `publishesEarly`; the default ignores `ready`.
    func execute(_ request: Request, context: ExecutionContext, on eventLoop: any EventLoop, ready: ReadyResult<[UInt8]>) -> EventLoopFuture<[UInt8]>
    /// Runs CPU work off the event loop in the connection's turn (the worker pool's fair queues); nil
    /// when the service has no threads of its own (the server then uses a small thread pool of its own).
    func offload<T: Sendable>(connection: UInt64, on eventLoop: any EventLoop, _ body: @escaping @Sendable () -> T) -> EventLoopFuture<T>?
    /// Whether `execute(_:startedNanos:on:ready:)` publishes results early (the engine's worker pool does;
    /// the router's requests complete on the event loop anyway).
    var publishesEarly: Bool { get }
    /// Counters behind `stats`; the server records framing errors (`too_large` lines) there.
    var stats: OperationStats { get }
    /// Installs the provider of the server's own `stats` fields (connections, threads, limits).
    func setServerStats(_ provider: @escaping @Sendable () -> JSONObject)
    /// A request that cannot usefully run yet (a `min_sequence` this server has not applied; the server
    /// asks only for requests that carry one): registers
    /// `resume`, called once from any thread when it can, and returns a function that forgets it; nil
    /// when the request may start now. The connection then holds the request (and its lane) without a
    /// worker until `resume` or its wait limit (`RequestHandler.waitLimit`), and starts it then. The
    /// default: nil.
    func park(_ request: Request, resume: @escaping @Sendable () -> Void) -> (@Sendable () -> Void)?
}

extension RequestService {
    public func execute(_ request: Request, context: ExecutionContext, on eventLoop: any EventLoop, ready: ReadyResult<[UInt8]>) -> EventLoopFuture<[UInt8]> {
        execute(request, context: context, on: eventLoop)
    }

    public func offload<T: Sendable>(connection: UInt64, on eventLoop: any EventLoop, _ body: @escaping @Sendable () -> T) -> EventLoopFuture<T>? {
        nil
    }

    public var publishesEarly: Bool { false }

    public func park(_ request: Request, resume: @escaping @Sendable () -> Void) -> (@Sendable () -> Void)? { nil }
}

/// What the server tells a service about a request besides the request itself.
public struct ExecutionContext: Sendable {
    /// When the line was parsed (`DispatchTime` uptime nanoseconds), for latency figures.
    public var startedNanos: UInt64
    /// When the request's deadline passes (uptime nanoseconds): `timeout_ms` or the server's default.
    public var deadlineNanos: UInt64
    /// The connection it came from (the worker pool's queue).
    public var connection: UInt64

    public init(startedNanos: UInt64, deadlineNanos: UInt64, connection: UInt64) {
        self.startedNanos = startedNanos
        self.deadlineNanos = deadlineNanos
        self.connection = connection
    }

    /// Whether the deadline has passed.
    public var expired: Bool { DispatchTime.now().uptimeNanoseconds >= deadlineNanos }

    /// Milliseconds left before the deadline (0 once it passed), for forwarding as `timeout_ms`.
    public var remainingMillis: Int {
        let now = DispatchTime.now().uptimeNanoseconds
        return now >= deadlineNanos ? 0 : Int((deadlineNanos - now) / 1_000_000)
    }
}

/// The engine's requests, run on the worker pool.
struct EngineRequestService: RequestService {
    let handler: RequestHandler
    let pool: WorkerPool

    func prepare(_ line: UnsafeBufferPointer<UInt8>) -> RequestHandler.Prepared { handler.prepare(line) }

    func execute(_ request: Request, context: ExecutionContext, on eventLoop: any EventLoop) -> EventLoopFuture<[UInt8]> {
        run(handler.job(for: request, startedNanos: context.startedNanos, deadlineNanos: context.deadlineNanos), context: context, on: eventLoop, ready: nil)
    }

    func execute(_ request: Request, context: ExecutionContext, on eventLoop: any EventLoop, ready: ReadyResult<[UInt8]>) -> EventLoopFuture<[UInt8]> {
        run(handler.job(for: request, startedNanos: context.startedNanos, deadlineNanos: context.deadlineNanos), context: context, on: eventLoop, ready: ready)
    }

    /// Runs a job's steps on the pool, each in the connection's turn, so that a heavy request lets other
    /// connections' requests run between its steps. A request that waited past its deadline in the queue
    /// is not started; a read that passes it between two steps stops there.
    private func run(_ job: RequestHandler.Job, context: ExecutionContext, on eventLoop: any EventLoop,
                     ready: ReadyResult<[UInt8]>?) -> EventLoopFuture<[UInt8]> {
        let handler = self.handler
        let step = pool.submit(on: eventLoop, queue: context.connection) { () -> [UInt8]? in
            let output = context.expired ? handler.stats.deadlineExceeded(job.request, startedNanos: context.startedNanos) : job.step()
            // Published from the worker: an event loop spinning for it cannot run callbacks meanwhile.
            if let output { ready?.publish(output) }
            return output
        }
        return step.flatMap { output in
            guard let output else { return self.run(job, context: context, on: eventLoop, ready: ready) }
            return eventLoop.makeSucceededFuture(output)
        }
    }

    func offload<T: Sendable>(connection: UInt64, on eventLoop: any EventLoop, _ body: @escaping @Sendable () -> T) -> EventLoopFuture<T>? {
        pool.submit(on: eventLoop, queue: connection, body)
    }

    var publishesEarly: Bool { true }

    var stats: OperationStats { handler.stats }

    func setServerStats(_ provider: @escaping @Sendable () -> JSONObject) { handler.setServerStats(provider) }

    func park(_ request: Request, resume: @escaping @Sendable () -> Void) -> (@Sendable () -> Void)? {
        handler.parkForSequence(request, resume: resume)
    }
}

/// What every connection handler shares.
final class ServerShared: Sendable {
    let configuration: ServerConfiguration
    let service: any RequestService
    let logger: Logger
    let connections = Locked<[ObjectIdentifier: any Channel]>([:])
    let counters = Locked<(accepted: Int, refused: Int, closedForLimits: Int)>((0, 0, 0))
    /// Connections numbered from 1 (their worker-pool queues).
    let nextConnectionID = Atomic<UInt64>(0)
    /// Bytes of answers produced and not yet taken by their clients, over every connection.
    let outputBytes = Atomic<Int>(0)
    /// Parses long lines for a service without threads of its own (the router); started on first use.
    private let parsePool: NIOThreadPool
    /// Set at shutdown: connections that become active from now on drain at once.
    let draining = Locked(false)
    /// Requests handed to the service and not finished, over every connection (the loop spin's guard).
    let running = Atomic<Int>(0)
    /// Loop spins that got their answer in time / that gave up (`stats`).
    let loopSpinAnswered = Atomic<Int>(0)
    let loopSpinGaveUp = Atomic<Int>(0)

    init(configuration: ServerConfiguration, service: any RequestService, logger: Logger) {
        self.configuration = configuration
        self.service = service
        self.logger = logger
        self.parsePool = NIOThreadPool(numberOfThreads: 1)
    }

    /// Runs `body` off the event loop: on the service's workers in the connection's turn, else on the
    /// server's own parse thread.
    func offload<T: Sendable>(service: any RequestService, connection: UInt64, on eventLoop: any EventLoop,
                              _ body: @escaping @Sendable () -> T) -> EventLoopFuture<T> {
        if let future = service.offload(connection: connection, on: eventLoop, body) { return future }
        parsePool.start()
        return parsePool.runIfActive(eventLoop: eventLoop, body)
    }

    func shutdownParsePool() async {
        try? await parsePool.shutdownGracefully()
    }
}

/// Steer's line-delimited JSON server (docs/protocol.md) on SwiftNIO. Event loops only frame and write;
/// engine requests run on a fixed pool of worker threads; a server over another `RequestService` (the
/// router) leaves execution to it.
///
/// Use `start()`/`shutdown()` directly, or run it as a `Service` in a `ServiceGroup`: it then shuts
/// down gracefully on the group's signal (stop accepting, answer everything received, save the index,
/// close the engine).
public final class SteerServer: Service, Sendable {
    public let configuration: ServerConfiguration
    /// The engine served; nil for a server over another `RequestService`.
    public let engine: RetrievalEngine?
    /// The engine's request handler; nil for a server over another `RequestService`.
    public let handler: RequestHandler?
    private let pool: WorkerPool?
    private let shared: ServerShared
    private let group: MultiThreadedEventLoopGroup
    private let serverChannel = Locked<(any Channel)?>(nil)
    private let metricsChannel = Locked<(any Channel)?>(nil)
    private let metrics = ServerMetrics()
    private let registry: PrometheusCollectorRegistry?
    private let stopped = Locked(false)
    /// Called with the bound port once listening (the CLI prints the machine-readable line).
    private let onListening: @Sendable (String, Int) -> Void

    /// - Parameters:
    ///   - configuration: address, limits, threads.
    ///   - engine: what requests run against; the server closes it on shutdown.
    ///   - logger: structured logs.
    ///   - metricsRegistry: the registry swift-metrics was bootstrapped with (`PrometheusMetricsFactory`);
    ///     needed for the metrics port.
    ///   - onListening: called with host and port once listening.
    ///   - collections: the collections served besides `engine` (`CollectionSet`, whose default is
    ///     `engine`); the server closes them on shutdown. nil: `engine` alone.
    public convenience init(configuration: ServerConfiguration, engine: RetrievalEngine, logger: Logger,
                metricsRegistry: PrometheusCollectorRegistry? = nil, collections: CollectionSet? = nil,
                onListening: @escaping @Sendable (String, Int) -> Void = { _, _ in }) {
        let handler = RequestHandler(engine: engine, limits: configuration.limits, accessKeys: configuration.accessKeys,
                                     writeLog: configuration.writeLog, collections: collections,
                                     snapshots: configuration.snapshots)
        let openMPThreads = configuration.openMPThreadsPerWorker
        let pool = WorkerPool(threads: configuration.workerThreads, spinMicroseconds: configuration.workerSpinMicroseconds) {
            RetrievalEngine.setOpenMPThreadsForCurrentThread(openMPThreads)
        }
        self.init(configuration: configuration, engine: engine, handler: handler, pool: pool,
                  service: EngineRequestService(handler: handler, pool: pool), logger: logger,
                  metricsRegistry: metricsRegistry, onListening: onListening)
    }

    /// A server over another request service (the router): same framing, ordering and limits, no engine.
    ///
    /// - Parameters:
    ///   - configuration: address, limits, event-loop threads (`workerThreads` is unused).
    ///   - service: runs the requests.
    ///   - logger: structured logs.
    ///   - onListening: called with host and port once listening.
    public convenience init(configuration: ServerConfiguration, service: any RequestService, logger: Logger,
                            onListening: @escaping @Sendable (String, Int) -> Void = { _, _ in }) {
        self.init(configuration: configuration, engine: nil, handler: nil, pool: nil, service: service, logger: logger,
                  metricsRegistry: nil, onListening: onListening)
    }

    private init(configuration: ServerConfiguration, engine: RetrievalEngine?, handler: RequestHandler?, pool: WorkerPool?,
                 service: any RequestService, logger: Logger, metricsRegistry: PrometheusCollectorRegistry?,
                 onListening: @escaping @Sendable (String, Int) -> Void) {
        self.configuration = configuration
        self.registry = metricsRegistry
        self.engine = engine
        self.handler = handler
        self.pool = pool
        self.shared = ServerShared(configuration: configuration, service: service, logger: logger)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.eventLoopThreads))
        self.onListening = onListening
        let shared = self.shared
        let metrics = self.metrics
        service.stats.setObserver { op, micros, error, collection in metrics.record(op: op, micros: micros, error: error, collection: collection) }
        let environment = ProcessInfo.processInfo.environment
        service.setServerStats {
            let counters = shared.counters.get()
            var threads: [(key: String, value: JSONValue)] = [
                ("event_loop_threads", .int(Int64(configuration.eventLoopThreads))),
                ("worker_threads", .int(Int64(configuration.workerThreads))),
                ("omp_threads_per_worker", .int(Int64(configuration.openMPThreadsPerWorker))),
                ("worker_spin_us", .int(Int64(configuration.workerSpinMicroseconds))),
                ("loop_spin_us", .int(Int64(configuration.loopSpinMicroseconds))),
                ("loop_spin_answered", .int(Int64(shared.loopSpinAnswered.load(ordering: .relaxed)))),
                ("loop_spin_gave_up", .int(Int64(shared.loopSpinGaveUp.load(ordering: .relaxed)))),
            ]
            for name in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OMP_WAIT_POLICY"] {
                threads.append((name, environment[name].map { .string($0) } ?? .null))
            }
            return JSONObject([
                ("connections", .int(Int64(shared.connections.withLock { $0.count }))),
                ("connections_accepted", .int(Int64(counters.accepted))),
                ("connections_refused", .int(Int64(counters.refused))),
                ("connections_closed_for_limits", .int(Int64(counters.closedForLimits))),
                ("output_bytes_pending", .int(Int64(shared.outputBytes.load(ordering: .relaxed)))),
                ("tls", .bool(configuration.tls != nil)),
                ("threads", .object(JSONObject(threads))),
                ("limits", .object(JSONObject([
                    ("max_line_bytes", .int(Int64(configuration.limits.maxLineBytes))),
                    ("max_k", .int(Int64(configuration.limits.maxK))),
                    ("max_batch", .int(Int64(configuration.limits.maxBatch))),
                    ("max_connections", .int(Int64(configuration.maxConnections))),
                    ("max_in_flight", .int(Int64(configuration.maxInFlight))),
                    ("idle_timeout_s", .int(Int64(configuration.idleTimeoutSeconds))),
                    ("request_timeout_ms", .int(Int64(configuration.requestTimeoutMillis))),
                    ("request_line_timeout_s", .int(Int64(configuration.requestLineTimeoutSeconds))),
                    ("write_timeout_s", .int(Int64(configuration.writeTimeoutSeconds))),
                    ("max_connection_output_bytes", .int(Int64(configuration.maxConnectionOutputBytes))),
                    ("max_server_output_bytes", .int(Int64(configuration.maxServerOutputBytes))),
                    ("max_ef_search", .int(Int64(configuration.limits.maxEfSearch))),
                    ("max_nprobe", .int(Int64(configuration.limits.maxNprobe))),
                    ("max_query_cost", .int(Int64(configuration.limits.maxQueryCost))),
                    ("max_filter_terms", .int(Int64(configuration.limits.maxFilterTerms))),
                    ("max_prompt_bytes", .int(Int64(configuration.limits.maxPromptBytes))),
                ]))),
            ])
        }
    }

    /// Binds and starts accepting.
    ///
    /// - Returns: the bound port.
    @discardableResult
    public func start() async throws -> Int {
        let sslContext = try configuration.tls.map { files throws(SteerError) in try files.makeContext() }
        pool?.start()
        let shared = self.shared
        let configuration = self.configuration
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let accepted = shared.connections.withLock { table -> Bool in
                        if table.count >= configuration.maxConnections { return false }
                        table[ObjectIdentifier(channel)] = channel
                        return true
                    }
                    if !accepted {
                        shared.counters.withLock { $0.refused += 1 }
                        if sslContext != nil {
                            // No TLS session exists to carry an answer; a plain-text line would only be
                            // garbage to the client, and waiting for a handshake would hold the descriptor.
                            channel.close(promise: nil)
                            return
                        }
                        let error = SteerError(.unavailable, "too many connections (maxConnections \(configuration.maxConnections)); try again later")
                        let line = RequestHandler.errorLine(id: nil, error)
                        var buffer = channel.allocator.buffer(capacity: line.count)
                        buffer.writeBytes(line)
                        channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
                        // A client that never reads must not keep the refused descriptor either.
                        channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
                        return
                    }
                    shared.counters.withLock { $0.accepted += 1 }
                    channel.closeFuture.whenComplete { _ in
                        _ = shared.connections.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
                    }
                    let sync = channel.pipeline.syncOperations
                    if let sslContext {
                        try sync.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    let progress = LineProgress()
                    try sync.addHandler(ByteToMessageHandler(LineFrameDecoder(maxLineBytes: configuration.limits.maxLineBytes, progress: progress)))
                    try sync.addHandler(ConnectionHandler(shared: shared, lineProgress: progress))
                }
            }
        let channel = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
        serverChannel.withLock { $0 = channel }
        let port = channel.localAddress?.port ?? configuration.port
        shared.logger.info("listening", metadata: ["steer.host": "\(configuration.host)", "steer.port": "\(port)"])
        onListening(configuration.host, port)
        if let metricsPort = configuration.metricsPort {
            try await startMetrics(port: metricsPort)
        }
        return port
    }

    /// The bound metrics port, when metrics are served.
    public var metricsPort: Int? { metricsChannel.get()?.localAddress?.port }

    private func startMetrics(port: Int) async throws {
        guard let registry, let engine else {
            throw SteerError(.invalidRequest, "a metrics port needs an engine and the Prometheus registry that swift-metrics was bootstrapped with")
        }
        let metrics = self.metrics
        let shared = self.shared
        let handler = self.handler
        let refresh: @Sendable () -> Void = {
            metrics.refresh(engine: engine, collections: handler?.collections, connections: shared.connections.withLock { $0.count })
        }
        let configuration = self.configuration
        let open = Locked(0)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // A bounded number of scrapers, each closed when quiet: the metrics port is no way
                    // around the protocol port's connection limit.
                    let admitted = open.withLock { count -> Bool in
                        guard count < configuration.maxMetricsConnections else { return false }
                        count += 1
                        return true
                    }
                    guard admitted else {
                        channel.close(promise: nil)
                        return
                    }
                    channel.closeFuture.whenComplete { _ in open.withLock { $0 -= 1 } }
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(allTimeout: .seconds(Int64(max(1, configuration.metricsIdleTimeoutSeconds)))))
                    try sync.configureHTTPServerPipeline()
                    try sync.addHandler(MetricsHTTPHandler(registry: registry, refresh: refresh))
                }
            }
            .bind(host: configuration.host, port: port).get()
        metricsChannel.withLock { $0 = channel }
        shared.logger.info("metrics", metadata: ["steer.metrics_port": "\(channel.localAddress?.port ?? port)"])
    }

    /// Stops accepting, lets every connection finish what it received (up to `shutdownTimeoutSeconds`),
    /// saves the index and closes the engine. Idempotent.
    public func shutdown() async {
        let already = stopped.withLock { value in
            let was = value
            value = true
            return was
        }
        if already { return }
        shared.logger.info("shutting down: draining connections")
        shared.draining.withLock { $0 = true }
        for channel in shared.connections.withLock({ Array($0.values) }) { channel.pipeline.fireUserInboundEventTriggered(DrainEvent()) }
        // Connections whose handshake finished before the signal may still be in the kernel's accept
        // queue: accept for one quiet period more (they drain at once), then stop accepting by no longer
        // reading the listening socket. Closing it now would make NIO close connections it accepted but
        // has not finished setting up, with their requests unread (a reset that loses their responses).
        try? await Task.sleep(for: .milliseconds(configuration.drainQuietMillis))
        if let channel = serverChannel.get() { try? await channel.setOption(ChannelOptions.autoRead, value: false).get() }
        if let channel = metricsChannel.get() { try? await channel.close() }
        for channel in shared.connections.withLock({ Array($0.values) }) { channel.pipeline.fireUserInboundEventTriggered(DrainEvent()) }
        let deadline = ContinuousClock.now + .seconds(configuration.shutdownTimeoutSeconds)
        while ContinuousClock.now < deadline, !shared.connections.withLock({ $0.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(10))
        }
        for channel in shared.connections.withLock({ Array($0.values) }) { try? await channel.close() }
        if let channel = serverChannel.get() { try? await channel.close() }
        await pool?.shutdown()
        await shared.shutdownParsePool()
        if let handler {
            do {
                try handler.collections.closeNamed()
            } catch {
                shared.logger.error("closing a collection failed", metadata: ["steer.error": "\(error)"])
            }
        }
        if let engine {
            do {
                try engine.close()
                shared.logger.info("index saved, store closed")
            } catch {
                shared.logger.error("saving the index failed", metadata: ["steer.error": "\(error)"])
            }
        }
        try? await group.shutdownGracefully()
    }

    /// `Service`: starts, waits for graceful shutdown (SIGTERM/SIGINT through the `ServiceGroup`), then
    /// shuts down.
    public func run() async throws {
        try await start()
        // Returns when the group signals graceful shutdown (or throws on cancellation: shut down too).
        try? await gracefulShutdown()
        await shutdown()
    }
}
