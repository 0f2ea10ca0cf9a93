import Dispatch
import Logging
import NIOCore
import NIOPosix
import SteerClient
import SteerCore
import SteerEngine
import SteerProtocol
import SteerService
import SteerServer
import SteerWriteLog

/// `steer route`: speaks the line protocol to clients and forwards each request to shard servers
/// (`steer serve`) that each hold the items the sharding function assigns to them (docs/scaling.md).
///
/// - Keys: every request is checked against `configuration.accessKeys` before anything else happens
///   (`AccessKeys.authorize`, as `steer serve` does); the shards get `configuration.shardKey` (or the
///   caller's token when there is none).
/// - Failures (docs/scaling.md "Failures"): a transport failure (refused, reset, closed, garbage) marks
///   the replica down and another replica of its shard is tried; a shard with no replica left is reported
///   in `missing_shards` with `partial: true`. A request whose deadline passes (`timeout_ms`, default
///   `shardTimeoutMillis`) fails alone with `deadline_exceeded`, and one whose shard answer exceeds
///   `maxShardResponseBytes` fails alone with `too_large`: neither marks anything down nor is retried on
///   another replica (that would multiply a heavy query). Only transport failures and failed health
///   checks mark replicas down.
/// - `search`: one replica of every shard, in parallel; the shards' top k lists are merged.
/// - `recommend`/`encode`: the query is encoded once here (the DPR model of `--checkpoint`, or the mean of
///   the history's vectors fetched from their shards), then searched like `search`, with the history and
///   the clause constraints applied as a single server applies them.
/// - `upsert`/`delete`/`get`: split by `Sharding`; writes go to every live replica of the owning shard, or,
///   with a `shardLog` (`steer route --follow`), to each owning shard's stream (`RouterStreams.swift`),
///   and reads with `min_sequence(s)` go to replicas that applied them.
/// - Generations: every read is answered by shards of one generation, the router's; `swap` fans out to
///   every replica behind a gate that holds reads (docs/scaling.md).
/// - Files: this one holds the state, the lifecycle, deadlines and the dispatch of requests;
///   `RouterReads.swift` (reads, failover, partial answers), `RouterWrites.swift` (writes to replicas),
///   `RouterSwap.swift` (swap and rollback), `RouterClusterView.swift` (health checks, the generation,
///   `stats`). Replicas are reached through `ShardTransport` (`ShardTransport.swift`).
/// - Threading: every entry point may be called from any task or event loop at the same time; mutable
///   state sits behind `Locked` (one lock per piece) or the `GenerationGate`.
public final class Router: RequestService {
    public let configuration: RouterConfiguration
    public let stats = OperationStats()
    /// The replicas of each shard now (a snapshot: membership changes replace the table,
    /// `RouterMembership.swift`).
    var replicas: [[Replica]] { replicaTable.get() }
    let replicaTable: Locked<[[Replica]]>
    /// Makes the replica of a shard's endpoint with the router's connection settings.
    let makeReplica: @Sendable (_ shard: Int, _ endpoint: ShardEndpoint) -> Replica
    /// The shards' write logs (`steer route --follow`); nil: writes go to the replicas themselves.
    let shardLog: (any ShardLog)?
    private let decoder: RequestDecoder
    let sharding: Sharding
    private let group: MultiThreadedEventLoopGroup
    let pool: NIOThreadPool
    let encoder: Locked<(any QueryEncoder)?>
    let loadEncoder: (@Sendable (_ checkpoint: String) throws(SteerError) -> any QueryEncoder)?
    let generation = Locked<String?>(nil)
    let gate = GenerationGate()
    let swapping = Locked(false)
    /// Runs `swap` through the cluster's metadata (`RouterClusterSwap.swift`); nil: the per-replica swap.
    let clusterSwap = Locked<(any ClusterSwapCoordinating)?>(nil)
    let counters = Locked(Counters())
    let roundRobin: Locked<[Int]>
    let serverStats = Locked<(@Sendable () -> JSONObject)?>(nil)
    private let healthTask = Locked<Task<Void, Never>?>(nil)
    let logger: Logger

    struct Counters {
        var partialResponses = 0
        var replicaRetries = 0
        var generationMismatches = 0
        var swaps = 0
        var divergedReplicas = 0
        /// Shard parts of writes appended to a stream (`shardLog`).
        var appendedWrites = 0
    }

    /// - Parameters:
    ///   - configuration: shard sets, timeouts, limits.
    ///   - encoder: encodes `recommend`/`encode` queries; nil → the mean of the history's vectors, read
    ///     from the shards.
    ///   - loadEncoder: loads the encoder of a checkpoint named by `swap`; nil → `swap` with a checkpoint
    ///     is refused.
    ///   - shardLog: the shards' write logs (`steer route --follow`); its streams are numbered like
    ///     `configuration.shards`. nil: writes go to every live replica.
    ///   - logger: health changes and swaps.
    /// - Throws: `.invalidRequest` for a shard set `RouterConfiguration.validate` refuses or a TLS
    ///   certificate authority that cannot be read.
    public convenience init(configuration: RouterConfiguration, encoder: (any QueryEncoder)? = nil,
                            loadEncoder: (@Sendable (String) throws(SteerError) -> any QueryEncoder)? = nil,
                            shardLog: (any ShardLog)? = nil, logger: Logger) throws(SteerError) {
        try self.init(configuration: configuration, encoder: encoder, loadEncoder: loadEncoder, shardLog: shardLog, logger: logger, transport: nil)
    }

    /// The router of `init(configuration:encoder:loadEncoder:shardLog:logger:)` whose replicas talk through
    /// `transport(shard, endpoint)` (unit tests pass a fake); nil: `ReplicaConnections` over TCP.
    ///
    /// - Throws: as the public initializer.
    init(configuration: RouterConfiguration, encoder: (any QueryEncoder)?, loadEncoder: (@Sendable (String) throws(SteerError) -> any QueryEncoder)?,
         shardLog: (any ShardLog)?, logger: Logger, transport: (@Sendable (_ shard: Int, _ endpoint: ShardEndpoint) -> any ShardTransport)?) throws(SteerError) {
        try RouterConfiguration.validate(configuration.shards)
        self.configuration = configuration
        self.decoder = RequestDecoder(limits: configuration.limits)
        self.sharding = try Sharding(shardCount: configuration.shards.count)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.pool = NIOThreadPool(numberOfThreads: max(1, System.coreCount))
        self.encoder = Locked(encoder)
        self.loadEncoder = loadEncoder
        self.shardLog = shardLog
        self.logger = logger
        let timeout = TimeAmount.milliseconds(Int64(configuration.shardTimeoutMillis))
        let group = self.group
        let tls = try configuration.shardTLSCertificateAuthority.map { path throws(SteerError) in try ShardConnection.tlsContext(caFile: path) }
        let makeReplica: @Sendable (Int, ShardEndpoint) -> Replica = { shard, endpoint in
            if let transport { return Replica(shard: shard, endpoint: endpoint, transport: transport(shard, endpoint)) }
            return Replica(shard: shard, endpoint: endpoint, connections: configuration.connectionsPerReplica, group: group,
                    connectTimeout: timeout, maxLineBytes: configuration.maxShardResponseBytes, tls: tls)
        }
        self.makeReplica = makeReplica
        self.replicaTable = Locked(configuration.shards.enumerated().map { shard, endpoints in
            endpoints.map { makeReplica(shard, $0) }
        })
        self.roundRobin = Locked(Array(repeating: 0, count: configuration.shards.count))
    }

    /// Health checks in a row that may time out before a replica is marked down.
    static let missedChecksBeforeDown = 3

    /// Most hits (queries × k) of a search merged on the event loop.
    static let maxHitsMergedOnLoop = 1024

    /// Codes a replica answers when the request itself is wrong (not the replica).
    static let requestErrors: Set<SteerError.Code> = [.invalidRequest, .notFound, .corrupt, .dimensionMismatch, .unauthorized]

    // MARK: Lifecycle

    /// Checks every replica once (learning the generation they serve), then keeps checking them every
    /// `healthIntervalMillis`.
    public func start() async {
        pool.start()
        await checkHealth()
        let interval = UInt64(max(10, configuration.healthIntervalMillis)) * 1_000_000
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: interval)
                guard let self, !Task.isCancelled else { return }
                await self.checkHealth()
            }
        }
        healthTask.withLock { $0 = task }
    }

    /// Stops the health checks and closes the shard connections.
    public func shutdown() async {
        healthTask.withLock { task in
            task?.cancel()
            task = nil
        }
        for replica in replicas.joined() { replica.closeConnections() }
        await shardLog?.close()
        try? await pool.shutdownGracefully()
        try? await group.shutdownGracefully()
    }

    var shardTimeout: TimeAmount { .milliseconds(Int64(configuration.shardTimeoutMillis)) }

    /// When a request must be answered by: its `timeout_ms` (at most `maxRequestTimeoutMillis`) from its
    /// arrival, or `defaultRequestTimeoutMillis` from when it may start (a read held by a swap's gate gets the
    /// default budget once the gate lets it go; a client's own `timeout_ms` counts the wait too).
    struct Deadline: Sendable {
        let budgetMillis: Int
        let uptimeNanos: UInt64
        /// The client gave `timeout_ms`.
        let explicit: Bool
        /// The shards' worker queue for this client (`fair_queue`), so that one client's heavy requests
        /// do not hold every worker of a shard while other clients wait; nil without a shard key (the
        /// shards accept `fair_queue` only with an admin key).
        let fairQueue: UInt64?
        /// The request's `min_sequences` (or its `min_sequence` as a one-shard list): the stream sequence
        /// each shard's replica must have applied before it answers (`RouterStreams.swift`).
        var minSequences: [UInt64]?
        /// The request's `collection` (nil: the shards' default collection). The shards' answers for a
        /// named collection carry that collection's generation, not the router's.
        var collection: String?

        init(request: Request, startedNanos: UInt64, configuration: RouterConfiguration, client: UInt64? = nil) {
            budgetMillis = request.timeoutMillis.map { min($0, configuration.maxRequestTimeoutMillis) } ?? configuration.defaultRequestTimeoutMillis
            uptimeNanos = startedNanos &+ UInt64(budgetMillis) * 1_000_000
            explicit = request.timeoutMillis != nil
            fairQueue = configuration.shardKey != nil ? client : nil
            minSequences = request.minSequences ?? request.minSequence.map { [$0] }
            collection = request.collection
        }

        private init(budgetMillis: Int, uptimeNanos: UInt64, explicit: Bool, fairQueue: UInt64?) {
            self.fairQueue = fairQueue
            self.budgetMillis = budgetMillis
            self.uptimeNanos = uptimeNanos
            self.explicit = explicit
        }

        /// The deadline after a wait at the gate: unchanged when explicit, else the default budget from now.
        func afterGate() -> Deadline {
            guard !explicit else { return self }
            var later = Deadline(budgetMillis: budgetMillis, uptimeNanos: DispatchTime.now().uptimeNanoseconds &+ UInt64(budgetMillis) * 1_000_000,
                                 explicit: false, fairQueue: fairQueue)
            later.minSequences = minSequences
            later.collection = collection
            return later
        }

        /// What is left, in whole milliseconds; nil when less than one is.
        var remainingMillis: Int? {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < uptimeNanos else { return nil }
            let left = Int((uptimeNanos - now) / 1_000_000)
            return left >= 1 ? left : nil
        }

        func exceeded(_ what: String) -> SteerError {
            SteerError(.deadlineExceeded, "\(what) did not answer within the request's deadline of \(budgetMillis) ms (timeout_ms)")
        }
    }

    /// `line` (a JSON object the router wrote) with the shard credential, the remaining deadline and the
    /// client's queue appended as `token`, `timeout_ms` and `fair_queue`.
    static func shardLine(_ line: [UInt8], token: String?, timeoutMillis: Int?, fairQueue: UInt64? = nil) -> [UInt8] {
        RequestEncoder.appendingCommonFields(to: line, token: token, timeoutMillis: timeoutMillis, fairQueue: fairQueue)
    }

    /// The token the shards get for a request of a caller who sent `callerToken`.
    func shardToken(_ callerToken: String?) -> String? { configuration.shardKey ?? callerToken }

    static func describe(_ error: any Error) -> String {
        if let failure = error as? ReplicaFailure { return failure.message }
        if let steer = error as? SteerError { return steer.description }
        return "\(error)"
    }

    // MARK: RequestService

    public func prepare(_ line: UnsafeBufferPointer<UInt8>) -> RequestHandler.Prepared {
        RequestHandler.prepare(line, decoder: decoder, stats: stats)
    }

    public func setServerStats(_ provider: @escaping @Sendable () -> JSONObject) {
        serverStats.withLock { $0 = provider }
    }

    public func execute(_ request: Request, context: ExecutionContext, on eventLoop: any EventLoop) -> EventLoopFuture<[UInt8]> {
        let startedNanos = context.startedNanos
        if context.expired { return eventLoop.makeSucceededFuture(stats.deadlineExceeded(request, startedNanos: startedNanos)) }
        if let refusal = refusal(request, startedNanos: startedNanos) { return eventLoop.makeSucceededFuture(refusal) }
        // A small search is merged on the event loop (no hop to the task executor); a large one's shard
        // answers are parsed and merged off the loop, so that it cannot stall the loop's other clients.
        if case .search(let queries, let options, let batch) = request.operation, queries.count * options.k <= Self.maxHitsMergedOnLoop,
           request.minSequence == nil, request.minSequences == nil, gate.tryEnter() {
            return searchOnLoop(request, queries: queries, options: options, batch: batch, startedNanos: startedNanos,
                                client: context.connection, on: eventLoop)
        }
        let promise = eventLoop.makePromise(of: [UInt8].self)
        promise.completeWithTask { await self.respond(request, startedNanos: startedNanos, client: context.connection) }
        return promise.futureResult
    }

    /// The error line (recorded in `stats`) of a request the keys refuse; nil when it may run.
    private func refusal(_ request: Request, startedNanos: UInt64) -> [UInt8]? {
        do throws(SteerError) {
            try configuration.accessKeys?.authorize(request)
            return nil
        } catch {
            let micros = Double(DispatchTime.now().uptimeNanoseconds &- startedNanos) / 1000
            stats.record(op: request.operation.name, micros: micros, error: error.code)
            return RequestHandler.errorLine(id: request.id, error)
        }
    }

    /// Runs one request and records it in `stats`; the keys are checked first.
    ///
    /// - Parameter client: the caller's connection, forwarded as the shards' `fair_queue` (with a shard key).
    public func respond(_ request: Request, startedNanos: UInt64 = DispatchTime.now().uptimeNanoseconds, client: UInt64? = nil) async -> [UInt8] {
        if let refusal = refusal(request, startedNanos: startedNanos) { return refusal }
        var output: [UInt8]
        var failure: SteerError.Code?
        do {
            var deadline = Deadline(request: request, startedNanos: startedNanos, configuration: configuration, client: client)
            // Without streams the router passes no min_sequence on (the shards follow no log it writes).
            if shardLog == nil { deadline.minSequences = nil }
            output = try await run(request, deadline: deadline)
            try requireRoom(output)
        } catch {
            let steer = error as? SteerError ?? SteerError.internalError(Self.describe(error))
            failure = steer.code
            output = RequestHandler.errorLine(id: request.id, steer)
        }
        let micros = Double(DispatchTime.now().uptimeNanoseconds &- startedNanos) / 1000
        stats.record(op: request.operation.name, micros: micros, error: failure)
        return output
    }

    /// An answer longer than `maxResponseBytes` is replaced by `too_large`, as a server does.
    func requireRoom(_ output: [UInt8]) throws(SteerError) {
        let limit = configuration.limits.maxResponseBytes
        guard output.count <= limit else {
            throw SteerError(.tooLarge, "the answer exceeds \(limit) bytes (maxResponseBytes); ask for fewer ids, queries or a smaller k")
        }
    }

    private func run(_ request: Request, deadline: Deadline) async throws -> [UInt8] {
        try checkSequences(request)
        var writer = JSONWriter(capacity: 512)
        writer.raw("{")
        writer.requestIDField(request.id)
        writer.raw("\"ok\":true")
        switch request.operation {
        case .ping:
            break
        case .createCollection, .dropCollection, .alias, .deleteAlias:
            if shardLog != nil {
                try await appendChangeToStreams(request.operation, deadline: deadline, &writer)
            } else {
                try await applyCollectionAdmin(request, deadline: deadline, &writer)
            }
        case .listCollections, .describeCollection:
            try await readCollectionAdmin(request, deadline: deadline, &writer)
        case .stats where request.collection != nil:
            try await collectionStats(request, deadline: deadline, &writer)
        case .stats:
            writeStats(&writer)
        case .search(let queries, let options, let batch):
            try await search(queries, options: options, batch: batch, token: request.token, deadline: deadline, &writer)
        case .recommend(let recommendation):
            try await recommend(try await withStoredHistory(recommendation, token: request.token, deadline: deadline), token: request.token,
                                deadline: deadline, &writer)
        case .encode(let recommendation):
            try await encode(try await withStoredHistory(recommendation, token: request.token, deadline: deadline), token: request.token,
                             deadline: deadline, &writer)
        case .get(let ids):
            try await get(ids, token: request.token, deadline: deadline, &writer)
        case .upsert(let items) where shardLog != nil:
            try await appendToStreams(.upsert(items), collection: request.collection, countField: "upserted", deadline: deadline, &writer)
        case .delete(let ids) where shardLog != nil:
            try await appendToStreams(.delete(ids), collection: request.collection, countField: "deleted", deadline: deadline, &writer)
        case .event(let events) where shardLog != nil:
            try await appendToStreams(.events(events), collection: request.collection, countField: "recorded", deadline: deadline, &writer)
        case .deleteUser(let user) where shardLog != nil:
            try await appendToStreams(.deleteUser(user), collection: request.collection, countField: "deleted", deadline: deadline, &writer)
        case .upsert(let items):
            let count = try await write(op: "upsert", countField: "upserted", token: request.token, deadline: deadline, keys: items.map(\.id), &writer) { indices in
                .upsert(indices.map { items[$0] })
            }
            writer.raw(",\"upserted\":")
            writer.int(count)
        case .delete(let ids):
            let count = try await write(op: "delete", countField: "deleted", token: request.token, deadline: deadline, keys: ids, &writer) { indices in
                .delete(indices.map { ids[$0] })
            }
            writer.raw(",\"deleted\":")
            writer.int(count)
        case .swap(let target, let checkpoint) where request.collection == nil && clusterSwap.get() != nil:
            try await clusterSwap(to: target, checkpoint: checkpoint, token: request.token, &writer)
        case .swap(let target, let checkpoint):
            try await swap(to: target, checkpoint: checkpoint, collection: request.collection, token: request.token, &writer)
        case .declareIndex(let attribute, let kind):
            try await declareIndex(attribute: attribute, kind: kind, collection: request.collection, token: request.token, &writer)
        case .event, .getUser, .deleteUser:
            try await history(request.operation, token: request.token, deadline: deadline, &writer)
        case .ingestVectors:
            throw SteerError.invalid("ingest_vectors is not supported by steer route: send it to every shard server")
        case .snapshot:
            throw SteerError.invalid("snapshot is not routed: send it to a shard server")
        case .prepare, .activate:
            throw SteerError.invalid("\(request.operation.name) is not routed: a router swaps every shard with swap (with --follow, through the cluster's metadata: docs/scaling.md)")
        }
        writer.raw("}\n")
        return writer.bytes
    }
}
