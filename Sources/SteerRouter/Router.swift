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
    private let pool: NIOThreadPool
    private let encoder: Locked<(any QueryEncoder)?>
    private let loadEncoder: (@Sendable (_ checkpoint: String) throws(SteerError) -> any QueryEncoder)?
    private let generation = Locked<String?>(nil)
    let gate = GenerationGate()
    let swapping = Locked(false)
    let counters = Locked(Counters())
    private let roundRobin: Locked<[Int]>
    private let serverStats = Locked<(@Sendable () -> JSONObject)?>(nil)
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

    /// The generation the router serves (nil until a replica answered).
    public var currentGeneration: String? { generation.get() }

    /// Health checks every replica once with `stats`.
    public func checkHealth() async {
        let line = RequestEncoder.encode(Request(operation: .stats, token: configuration.shardKey))
        let timeout = shardTimeout
        await withTaskGroup(of: Void.self) { tasks in
            for replica in replicas.joined() {
                tasks.addTask {
                    let wasUp = replica.health.get().up
                    do {
                        let answer = try await replica.healthCheck(line, timeout: timeout)
                        var served: String?
                        if case .string(let text)? = answer["generation"] { served = text }
                        replica.health.withLock { state in
                            state.up = true
                            state.generation = served
                            state.missedChecks = 0
                            Self.recordShardFacts(answer, into: &state)
                        }
                        if !wasUp { self.logger.info("replica up", metadata: ["steer.replica": "\(replica.endpoint)", "steer.shard": "\(replica.shard)"]) }
                    } catch let failure as ReplicaFailure where failure.kind == .timeout {
                        // A replica busy with heavy requests answers late; only several late checks in a
                        // row mean it is gone (a refused or reset connection marks it down at once).
                        let missed = replica.health.withLock { state -> Int in
                            state.missedChecks += 1
                            return state.missedChecks
                        }
                        if missed >= Self.missedChecksBeforeDown {
                            replica.markDown("health check: \(missed) checks in a row unanswered within --shard-timeout-ms: \(failure.message)")
                            if wasUp { self.logger.warning("replica down", metadata: ["steer.replica": "\(replica.endpoint)", "steer.error": "\(failure.message)"]) }
                        }
                    } catch {
                        replica.markDown("health check: \(Self.describe(error))")
                        if wasUp { self.logger.warning("replica down", metadata: ["steer.replica": "\(replica.endpoint)", "steer.error": "\(Self.describe(error))"]) }
                    }
                }
            }
        }
        adoptGeneration()
    }

    /// The router's generation follows the cluster when it is unknown (start-up: the one most replicas
    /// serve) or when every replica that is up serves the same other one (shards swapped directly).
    private func adoptGeneration() {
        if swapping.get() { return }
        let served = replicas.joined().compactMap { replica -> String? in
            let health = replica.health.get()
            return health.up && !health.diverged ? health.generation : nil
        }
        guard !served.isEmpty else { return }
        let current = generation.get()
        var counts: [String: Int] = [:]
        for name in served { counts[name, default: 0] += 1 }
        let chosen: String
        if current == nil {
            chosen = counts.max { a, b in a.value != b.value ? a.value < b.value : a.key < b.key }!.key
        } else if counts.count == 1, let only = counts.keys.first, only != current {
            chosen = only
        } else {
            return
        }
        generation.withLock { $0 = chosen }
        logger.info("router generation", metadata: ["steer.generation": "\(chosen)", "steer.previous": "\(current ?? "none")"])
    }

    private var shardTimeout: TimeAmount { .milliseconds(Int64(configuration.shardTimeoutMillis)) }

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
    private func requireRoom(_ output: [UInt8]) throws(SteerError) {
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
        }
        writer.raw("}\n")
        return writer.bytes
    }

    // MARK: Reading from shards

    /// What one shard contributed to a read.
    enum ShardAnswer: Sendable {
        case answer(JSONObject)
        /// The shard refused the request itself (the request's fault): the whole request fails with it.
        case refused(SteerError)
        /// No replica of the shard answered.
        case missing
    }

    /// The replicas of `shard` that may serve reads now: up, not diverged, on the router's generation;
    /// rotated so that load spreads over them.
    ///
    /// Replicas that are up but were last seen on another generation come last: their answer is checked
    /// anyway, and a health check that read a replica's generation just before a swap moved it must not
    /// turn a shard into a missing one.
    func readable(_ shard: Int) -> [Replica] {
        let expected = generation.get()
        var candidates: [Replica] = []
        var lastResort: [Replica] = []
        for replica in replicas[shard] {
            let health = replica.health.get()
            guard health.up, !health.diverged else { continue }
            if expected == nil || health.generation == nil || health.generation == expected {
                candidates.append(replica)
            } else {
                lastResort.append(replica)
            }
        }
        guard candidates.count > 1 else { return candidates + lastResort }
        let start = roundRobin.withLock { table in
            defer { table[shard] &+= 1 }
            return table[shard]
        }
        let offset = start % candidates.count
        return Array(candidates[offset...] + candidates[..<offset]) + lastResort
    }

    /// Records the generation an answer names for its replica; false (the answer must not be used) when
    /// it is not the router's.
    func servesRouterGeneration(_ replica: Replica, _ answer: JSONObject) -> Bool {
        guard case .string(let served)? = answer["generation"] else { return true }
        replica.health.withLock { health in
            if health.generation != served { health.generation = served }
        }
        guard let expected = generation.get(), served != expected else { return true }
        counters.withLock { $0.generationMismatches += 1 }
        logger.warning("replica serves another generation; not routed to", metadata: [
            "steer.replica": "\(replica.endpoint)", "steer.generation": "\(served)", "steer.router_generation": "\(expected)",
        ])
        return false
    }

    /// What a failed attempt on one replica means for the read (see the type's "Failures"): nil → try
    /// the next replica (after a transport failure the replica is marked down first).
    func readFailure(_ error: any Error, replica: Replica, deadline: Deadline) -> ShardAnswer? {
        if let steer = error as? SteerError { return .refused(steer) }
        let failure = error as? ReplicaFailure ?? ReplicaFailure(.transport, message: "\(error)")
        switch failure.kind {
        case .timeout:
            return .refused(deadline.exceeded("shard \(replica.shard) (\(replica.endpoint))"))
        case .tooLarge:
            return .refused(SteerError(.tooLarge, "shard \(replica.shard)'s answer is too large: \(failure.message); ask for fewer results (k, vectors)"))
        case .transport:
            replica.markDown(failure.message)
        case .retired, .answered:
            break
        }
        counters.withLock { $0.replicaRetries += 1 }
        logger.warning("replica failed; trying another", metadata: ["steer.replica": "\(replica.endpoint)", "steer.error": "\(failure.message)"])
        return nil
    }

    /// Sends a read to one replica of `shard`, trying the next one after a transport failure, an error
    /// that blames the replica, or an answer from another generation than the router's.
    func read(shard: Int, line: [UInt8], token: String?, deadline: Deadline) async -> ShardAnswer {
        if let wanted = deadline.minSequences?[shard], wanted > 0 {
            return await readApplied(wanted, shard: shard, line: line, token: token, deadline: deadline)
        }
        for replica in readable(shard) {
            guard let left = deadline.remainingMillis else { return .refused(deadline.exceeded("shard \(shard)")) }
            do {
                let answer = try await replica.request(Self.shardLine(line, token: token, timeoutMillis: left, fairQueue: deadline.fairQueue), timeout: .milliseconds(Int64(left)))
                guard deadline.collection != nil || servesRouterGeneration(replica, answer) else { continue }
                return .answer(answer)
            } catch {
                if let answer = readFailure(error, replica: replica, deadline: deadline) { return answer }
            }
        }
        return .missing
    }

    /// Reads from several shards in parallel (each shard its own line).
    ///
    /// - Returns: the answers by shard and the shards that had no replica to answer, ascending.
    /// - Throws: the first refusal (the request's own error); `.unavailable` when no shard answered or
    ///   the answers name different generations.
    func readShards(_ lines: [Int: [UInt8]], token: String?, deadline: Deadline, allowPartial: Bool) async throws -> (answers: [Int: JSONObject], missing: [Int]) {
        var results: [(Int, ShardAnswer)] = []
        let token = shardToken(token)
        await withTaskGroup(of: (Int, ShardAnswer).self) { tasks in
            for (shard, line) in lines {
                tasks.addTask { (shard, await self.read(shard: shard, line: line, token: token, deadline: deadline)) }
            }
            for await result in tasks { results.append(result) }
        }
        return try collate(results, allowPartial: allowPartial)
    }

    /// The shards' answers to one request, checked: the first refusal is thrown; missing shards are
    /// allowed only with `allowPartial` and while some shard answered; all answers name one generation.
    private func collate(_ results: [(Int, ShardAnswer)], allowPartial: Bool) throws -> (answers: [Int: JSONObject], missing: [Int]) {
        var answers: [Int: JSONObject] = [:]
        var missing: [Int] = []
        var refusal: SteerError?
        for (shard, answer) in results {
            switch answer {
            case .answer(let object): answers[shard] = object
            case .refused(let error): if refusal == nil { refusal = error }
            case .missing: missing.append(shard)
            }
        }
        if let refusal { throw refusal }
        missing.sort()
        if !missing.isEmpty {
            guard allowPartial, !answers.isEmpty else {
                throw SteerError(.unavailable, "no replica of shard\(missing.count == 1 ? "" : "s") \(missing.map(String.init).joined(separator: ", ")) is available")
            }
        }
        try Self.requireOneCollection(answers.values)
        var served = Set<String>()
        for answer in answers.values { if case .string(let name)? = answer["generation"] { served.insert(name) } }
        if served.count > 1 {
            counters.withLock { $0.generationMismatches += 1 }
            throw SteerError(.unavailable, "shards answered from different generations (\(served.sorted().joined(separator: ", "))); retry once the swap has finished")
        }
        return (answers, missing)
    }

    func writePartial(_ missing: [Int], _ writer: inout JSONWriter) {
        guard !missing.isEmpty else { return }
        counters.withLock { $0.partialResponses += 1 }
        writer.raw(",\"partial\":true,\"missing_shards\":[")
        for (index, shard) in missing.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.int(shard)
        }
        writer.raw("]")
    }

    private func writeGeneration(_ answers: [Int: JSONObject], _ writer: inout JSONWriter) {
        Self.writeCollection(answers.values, &writer)
        let name: String? = answers.values.lazy.compactMap { answer -> String? in
            if case .string(let text)? = answer["generation"] { return text }
            return nil
        }.first ?? generation.get()
        guard let name else { return }
        writer.raw(",\"generation\":")
        writer.string(name)
    }

    // MARK: search

    /// A shard `search` line: base64 vectors (cheap to write and to parse), the options unchanged.
    static func searchLine(_ queries: [[Float]], k: Int, nprobe: Int?, efSearch: Int?, filter: TagFilter, batch: Bool,
                           oversample: Int? = nil, collection: String? = nil) -> [UInt8] {
        var options = SearchOptions(k: k, nprobe: nprobe, efSearch: efSearch, filter: filter)
        options.oversample = oversample
        return RequestEncoder.encode(Request(operation: .search(queries: queries, options: options, batch: batch), collection: collection))
    }

    private func allShards(_ line: [UInt8]) -> [Int: [UInt8]] {
        var lines: [Int: [UInt8]] = [:]
        for shard in 0..<replicas.count { lines[shard] = line }
        return lines
    }

    private func search(_ queries: [[Float]], options: SearchOptions, batch: Bool, token: String?, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        await gate.enter()
        defer { gate.leave() }
        let deadline = deadline.afterGate()
        let line = Self.searchLine(queries, k: options.k, nprobe: options.nprobe, efSearch: options.efSearch, filter: options.filter, batch: batch,
                                   oversample: options.oversample, collection: deadline.collection)
        let (answers, missing) = try await readShards(allShards(line), token: token, deadline: deadline, allowPartial: true)
        try writeSearch(answers: answers, missing: missing, queries: queries.count, k: options.k, batch: batch, &writer)
    }

    /// The search fast path: the fan-out, the shards' answers, the merge and the response all run on the
    /// client connection's event loop, over connections that live on it (no thread hops). A replica that
    /// has no connection on this loop yet connects first; failover is the same as `read(shard:line:)`.
    private func searchOnLoop(_ request: Request, queries: [[Float]], options: SearchOptions, batch: Bool,
                              startedNanos: UInt64, client: UInt64, on loop: any EventLoop) -> EventLoopFuture<[UInt8]> {
        let line = Self.searchLine(queries, k: options.k, nprobe: options.nprobe, efSearch: options.efSearch, filter: options.filter, batch: batch,
                                   oversample: options.oversample, collection: request.collection)
        let deadline = Deadline(request: request, startedNanos: startedNanos, configuration: configuration, client: client)
        let token = shardToken(request.token)
        let futures = (0..<replicas.count).map { shard in
            attempt(shard: shard, line: line, token: token, deadline: deadline, candidates: readable(shard), index: 0, on: loop)
        }
        return EventLoopFuture.whenAllSucceed(futures, on: loop).map { results in
            self.gate.leave()
            var output: [UInt8]
            var failure: SteerError.Code?
            do {
                let (answers, missing) = try self.collate(results, allowPartial: true)
                var writer = JSONWriter(capacity: 512)
                writer.raw("{")
                writer.requestIDField(request.id)
                writer.raw("\"ok\":true")
                try self.writeSearch(answers: answers, missing: missing, queries: queries.count, k: options.k, batch: batch, &writer)
                writer.raw("}\n")
                try self.requireRoom(writer.bytes)
                output = writer.bytes
            } catch {
                let steer = error as? SteerError ?? SteerError.internalError(Self.describe(error))
                failure = steer.code
                output = RequestHandler.errorLine(id: request.id, steer)
            }
            let micros = Double(DispatchTime.now().uptimeNanoseconds &- startedNanos) / 1000
            self.stats.record(op: "search", micros: micros, error: failure)
            return output
        }
    }

    /// One shard's answer on `loop`: `candidates[index]`, then the next on failure (as `read`).
    private func attempt(shard: Int, line: [UInt8], token: String?, deadline: Deadline, candidates: [Replica], index: Int,
                         on loop: any EventLoop) -> EventLoopFuture<(Int, ShardAnswer)> {
        guard index < candidates.count else { return loop.makeSucceededFuture((shard, .missing)) }
        guard let left = deadline.remainingMillis else { return loop.makeSucceededFuture((shard, .refused(deadline.exceeded("shard \(shard)")))) }
        let replica = candidates[index]
        let promise = loop.makePromise(of: (Int, ShardAnswer).self)
        let next: @Sendable () -> EventLoopFuture<(Int, ShardAnswer)> = {
            self.attempt(shard: shard, line: line, token: token, deadline: deadline, candidates: candidates, index: index + 1, on: loop)
        }
        replica.request(Self.shardLine(line, token: token, timeoutMillis: left, fairQueue: deadline.fairQueue), timeout: .milliseconds(Int64(left)), on: loop).whenComplete { result in
            switch result {
            case .success(let answer):
                if deadline.collection != nil || self.servesRouterGeneration(replica, answer) {
                    promise.succeed((shard, .answer(answer)))
                } else {
                    promise.completeWith(next())
                }
            case .failure(let error):
                if let answer = self.readFailure(error, replica: replica, deadline: deadline) {
                    promise.succeed((shard, answer))
                } else {
                    promise.completeWith(next())
                }
            }
        }
        return promise.futureResult
    }

    private func writeSearch(answers: [Int: JSONObject], missing: [Int], queries: Int, k: Int, batch: Bool, _ writer: inout JSONWriter) throws {
        var merged: [[ShardHit]] = []
        for query in 0..<queries {
            var lists: [[ShardHit]] = []
            for (shard, answer) in answers {
                if batch {
                    guard case .array(let results)? = answer["results"], results.count == queries else {
                        throw SteerError.internalError("shard \(shard) answered a batch search without \(queries) results")
                    }
                    lists.append(try ShardHit.list(results[query], shard: shard))
                } else {
                    lists.append(try ShardHit.list(answer["hits"], shard: shard))
                }
            }
            merged.append(HitMerge.top(lists, k: k))
        }
        writeGeneration(answers, &writer)
        if batch {
            writer.raw(",\"results\":[")
            for (index, hits) in merged.enumerated() {
                if index > 0 { writer.raw(",") }
                Self.writeHits(hits, &writer)
            }
            writer.raw("]")
        } else {
            writer.raw(",\"hits\":")
            Self.writeHits(merged[0], &writer)
        }
        writePartial(missing, &writer)
    }

    static func writeHits(_ hits: [ShardHit], _ writer: inout JSONWriter) {
        writer.raw("[")
        for (index, hit) in hits.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.value(hit.object)
        }
        writer.raw("]")
    }

    // MARK: recommend and encode

    /// Encodes a history and prompt: with the router's model, or as the mean of the history items'
    /// vectors read from their shards (what `MeanHistoryEncoder` does on a single server).
    private func encodeQuery(_ request: RecommendRequest, token: String?, deadline: Deadline) async throws -> EncodedQuery {
        if !request.positive.isEmpty || !request.negative.isEmpty {
            throw SteerError.invalid("'positive' and 'negative' are not supported by steer route: ask a shard server")
        }
        // The router's model is the default collection's; a named collection's query is the mean of its
        // history items' vectors (docs/scaling.md "Collections").
        if deadline.collection == nil, let encoder = encoder.get() {
            let history = request.history
            let prompt = request.prompt
            return try await pool.runIfActive { () throws -> EncodedQuery in try encoder.encode(history: history, prompt: prompt) }
        }
        guard !request.history.isEmpty else {
            throw SteerError.invalid("history must not be empty (this generation has no model that can answer a prompt alone)")
        }
        let found = try await getItems(request.history, token: token, deadline: deadline)
        var vectors: [[Float]] = []
        var unknown: [ItemID] = []
        for id in request.history {
            if let vector = found[id].flatMap({ Self.floats($0["vector"]) }) {
                vectors.append(vector)
            } else {
                unknown.append(id)
            }
        }
        let mean = try MeanHistoryEncoder.mean(of: vectors, historyCount: request.history.count)
        return EncodedQuery(vector: mean, baseVector: mean, clauses: [], unknownHistory: unknown)
    }

    /// A vector as a shard wrote it (an array of numbers); nil for anything else.
    static func floats(_ value: JSONValue?) -> [Float]? {
        switch value {
        case .floats(let values)?: return values
        case .array(let elements)?:
            var values: [Float] = []
            values.reserveCapacity(elements.count)
            for element in elements {
                switch element {
                case .int(let number): values.append(Float(number))
                case .double(let number): values.append(Float(number))
                default: return nil
                }
            }
            return values
        default: return nil
        }
    }

    private func recommend(_ request: RecommendRequest, token: String?, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        await gate.enter()
        defer { gate.leave() }
        let deadline = deadline.afterGate()
        let encoded = try await encodeQuery(request, token: token, deadline: deadline)
        var filter = request.filter
        if request.constraints != .soft {
            for clause in encoded.clauses where !clause.tags.isEmpty {
                switch clause.polarity {
                case .positive: filter.tagGroups.append(clause.tags)
                case .negative: filter.tagsNone.append(contentsOf: clause.tags)
                }
            }
        }
        var excluded = Set<ItemID>()
        if request.excludeHistory {
            let unknown = Set(encoded.unknownHistory)
            for id in request.history + request.seen where !unknown.contains(id) { excluded.insert(id) }
        }
        // Each shard returns k + |history| so that k remain after the history is dropped (a single server
        // over-fetches the same way); the union of the shards' lists holds the global top.
        let fetch = min(configuration.limits.maxK, request.k + excluded.count)
        let vector = request.constraints == .hard ? encoded.baseVector : encoded.vector
        let line = Self.searchLine([vector], k: fetch, nprobe: request.nprobe, efSearch: request.efSearch, filter: filter, batch: false,
                                   oversample: request.oversample, collection: deadline.collection)
        let (answers, missing) = try await readShards(allShards(line), token: token, deadline: deadline, allowPartial: true)
        var lists: [[ShardHit]] = []
        for (shard, answer) in answers { lists.append(try ShardHit.list(answer["hits"], shard: shard)) }
        let hits = HitMerge.top(lists, k: request.k, excluding: excluded)
        writeGeneration(answers, &writer)
        writer.raw(",\"hits\":")
        Self.writeHits(hits, &writer)
        writer.clausesField(encoded.clauses)
        writer.unknownHistoryField(encoded.unknownHistory)
        writePartial(missing, &writer)
    }

    private func encode(_ request: RecommendRequest, token: String?, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        await gate.enter()
        defer { gate.leave() }
        let deadline = deadline.afterGate()
        let encoded = try await encodeQuery(request, token: token, deadline: deadline)
        writer.raw(",\"collection\":")
        writer.string(deadline.collection ?? CollectionName.defaultName)
        if deadline.collection == nil, let name = generation.get() {
            writer.raw(",\"generation\":")
            writer.string(name)
        }
        writer.raw(",\"vector\":")
        writer.floats(request.constraints == .hard ? encoded.baseVector : encoded.vector)
        writer.clausesField(encoded.clauses)
        writer.unknownHistoryField(encoded.unknownHistory)
    }

    // MARK: get

    /// Positions of `keys` grouped by owning shard, in input order.
    func byShard(_ keys: [ItemID]) -> [Int: [Int]] {
        var groups: [Int: [Int]] = [:]
        for (index, id) in keys.enumerated() { groups[sharding.shard(of: id), default: []].append(index) }
        return groups
    }

    /// The items each id names, read from their shards (every shard must answer).
    private func getItems(_ ids: [ItemID], token: String?, deadline: Deadline) async throws -> [ItemID: JSONObject] {
        try await getItemsNamingCollection(ids, token: token, deadline: deadline).items
    }

    /// The items each id names and the collection the shards read them from (nil when no shard was asked).
    private func getItemsNamingCollection(_ ids: [ItemID], token: String?, deadline: Deadline) async throws -> (items: [ItemID: JSONObject], collection: String?) {
        var lines: [Int: [UInt8]] = [:]
        for (shard, indices) in byShard(ids) { lines[shard] = RequestEncoder.encode(Request(operation: .get(indices.map { ids[$0] }), collection: deadline.collection)) }
        let (answers, _) = try await readShards(lines, token: token, deadline: deadline, allowPartial: false)
        var found: [ItemID: JSONObject] = [:]
        for (shard, answer) in answers {
            guard case .array(let items)? = answer["items"] else {
                if case .floats(let empty)? = answer["items"], empty.isEmpty { continue }
                throw SteerError.internalError("shard \(shard) answered get without an items array")
            }
            for item in items {
                guard case .object(let object) = item else { continue }
                switch object["id"] {
                case .int(let number)?: found[.int(number)] = object
                case .string(let text)?: found[.string(text)] = object
                default: continue
                }
            }
        }
        return (found, Self.collectionName(answers.values))
    }

    private func get(_ ids: [ItemID], token: String?, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        let (found, collection) = try await getItemsNamingCollection(ids, token: token, deadline: deadline)
        writer.raw(",\"collection\":")
        writer.string(collection ?? deadline.collection ?? CollectionName.defaultName)
        writer.raw(",\"items\":[")
        var first = true
        for id in ids {
            guard let item = found[id] else { continue }
            if !first { writer.raw(",") }
            first = false
            writer.value(.object(item))
        }
        writer.raw("],\"missing\":[")
        first = true
        for id in ids where found[id] == nil {
            if !first { writer.raw(",") }
            first = false
            writer.itemID(id)
        }
        writer.raw("]")
    }

    // MARK: upsert and delete

    /// Outcome of a write on one replica.
    private enum WriteOutcome: Sendable {
        /// The count the replica answered and the collection it wrote to (an alias resolved).
        case applied(Int, collection: String?)
        case refused(SteerError)
        case failed(ReplicaFailure)
    }

    /// Sends a write to every live replica of each owning shard.
    ///
    /// - Parameters:
    ///   - keys: the ids that choose the shards.
    ///   - writer: gets `"collection"`, the collection the replicas wrote to (an alias resolved).
    ///   - operation: the shard's part of the write, for the given positions of `keys`.
    /// - Returns: the sum over shards of the count the replicas answered.
    /// - Throws: a replica's refusal (the request's fault); `.unavailable` naming the shards without a live
    ///   replica that applied the write (the other shards applied it: writes are not atomic across shards).
    func write(op: StaticString, countField: String, token: String?, deadline: Deadline, keys: [ItemID], _ writer: inout JSONWriter,
               operation: ([Int]) -> Request.Operation) async throws -> Int {
        guard let left = deadline.remainingMillis else { throw deadline.exceeded("\(op): no shard") }
        let timeout = TimeAmount.milliseconds(Int64(left))
        let shardToken = shardToken(token)
        var lines: [Int: [UInt8]] = [:]
        for (shard, indices) in byShard(keys) {
            let line = RequestEncoder.encode(Request(operation: operation(indices), token: shardToken, timeoutMillis: left,
                                                     fairQueue: deadline.fairQueue, collection: deadline.collection))
            lines[shard] = line
        }
        var results: [Int: [(Replica, WriteOutcome)]] = [:]
        await withTaskGroup(of: (Int, Replica, WriteOutcome).self) { tasks in
            for (shard, line) in lines {
                for replica in replicas[shard] {
                    let health = replica.health.get()
                    guard health.up, !health.diverged else { continue }
                    tasks.addTask {
                        do {
                            let answer = try await replica.request(line, timeout: timeout)
                            guard case .int(let count)? = answer[countField] else {
                                return (shard, replica, .failed(ReplicaFailure(.transport, message: "\(replica.endpoint) answered \(op) without '\(countField)'")))
                            }
                            var collection: String?
                            if case .string(let name)? = answer["collection"] { collection = name }
                            return (shard, replica, .applied(Int(count), collection: collection))
                        } catch let error as SteerError {
                            return (shard, replica, .refused(error))
                        } catch {
                            return (shard, replica, .failed(error as? ReplicaFailure ?? ReplicaFailure(.transport, message: Self.describe(error))))
                        }
                    }
                }
            }
            for await (shard, replica, outcome) in tasks { results[shard, default: []].append((replica, outcome)) }
        }
        var total = 0
        var failedShards: [Int] = []
        var timedOut = false
        var refusal: SteerError?
        var wroteTo: [String: Set<Int>] = [:]
        for shard in lines.keys.sorted() {
            let outcomes = results[shard] ?? []
            var applied: Int?
            for (_, outcome) in outcomes {
                switch outcome {
                case .applied(let count, let collection):
                    applied = max(applied ?? 0, count)
                    if let collection { wroteTo[collection, default: []].insert(shard) }
                case .refused(let error): if refusal == nil { refusal = error }
                case .failed: break
                }
            }
            for (replica, outcome) in outcomes {
                guard case .failed(let failure) = outcome else { continue }
                // Only a transport failure says the replica is down; any failure while a peer applied
                // the write means it may lack it.
                if failure.kind == .transport { replica.markDown(failure.message) }
                if failure.kind == .timeout { timedOut = true }
                if applied != nil { markDiverged(replica, because: failure.message) }
            }
            if applied != nil {
                // Replicas that were down missed the write their peers took.
                let reached = Set(outcomes.map { ObjectIdentifier($0.0) })
                for replica in replicas[shard] where !reached.contains(ObjectIdentifier(replica)) {
                    markDiverged(replica, because: "down during a write")
                }
            }
            if let applied { total += applied } else { failedShards.append(shard) }
        }
        let applied = lines.keys.sorted().filter { !failedShards.contains($0) && !(results[$0] ?? []).contains { if case .refused = $0.1 { true } else { false } } }
        if let refusal {
            guard !applied.isEmpty else { throw refusal }
            throw SteerError(refusal.code, refusal.message + " (shard\(applied.count == 1 ? "" : "s") \(applied.map(String.init).joined(separator: ", ")) applied their part: writes are not atomic across shards)")
        }
        if !failedShards.isEmpty, timedOut {
            throw SteerError(.deadlineExceeded, "\(op): shard\(failedShards.count == 1 ? "" : "s") \(failedShards.map(String.init).joined(separator: ", ")) did not answer within the request's deadline of \(deadline.budgetMillis) ms; the write may or may not have been applied there (retrying is safe)")
        }
        if !failedShards.isEmpty {
            throw SteerError(.unavailable, "\(op): no live replica of shard\(failedShards.count == 1 ? "" : "s") \(failedShards.map(String.init).joined(separator: ", ")) applied it"
                + (applied.isEmpty ? "" : "; shard\(applied.count == 1 ? "" : "s") \(applied.map(String.init).joined(separator: ", ")) did (writes are not atomic across shards; retrying is safe)"))
        }
        // An alias moved while the write ran: its parts landed in different collections.
        guard wroteTo.count <= 1 else {
            let parts = wroteTo.sorted { $0.key < $1.key }.map { "'\($0.key)' on shard\($0.value.count == 1 ? "" : "s") \($0.value.sorted().map(String.init).joined(separator: ", "))" }
            throw SteerError(.unavailable, "\(op): the shards wrote to different collections (\(parts.joined(separator: "; "))): an alias moved during the write; retry it once the move has finished (retrying is safe)")
        }
        writer.raw(",\"collection\":")
        writer.string(wroteTo.keys.first ?? deadline.collection ?? CollectionName.defaultName)
        return total
    }

    /// Takes a replica that missed a write its peers applied out of reads and writes until the router
    /// restarts (after an operator re-seeded it).
    private func markDiverged(_ replica: Replica, because reason: String) {
        let already = replica.health.withLock { health -> Bool in
            defer { health.diverged = true }
            return health.diverged
        }
        guard !already else { return }
        counters.withLock { $0.divergedReplicas += 1 }
        logger.error("replica missed a write and no longer serves until re-seeded (docs/scaling.md)", metadata: [
            "steer.replica": "\(replica.endpoint)", "steer.shard": "\(replica.shard)", "steer.reason": "\(reason)",
        ])
    }

    // MARK: swap

    private enum SwapOutcome: Sendable {
        case swapped(generation: String, previous: String)
        case failed(String)
        /// The replica refused the swap as a bad request (path, generation, checkpoint, key).
        case refused(SteerError)
        case skipped
    }

    /// Health checks in a row that may time out before a replica is marked down.
    static let missedChecksBeforeDown = 3

    /// Most hits (queries × k) of a search merged on the event loop.
    static let maxHitsMergedOnLoop = 1024

    /// Codes a replica answers when the request itself is wrong (not the replica).
    static let requestErrors: Set<SteerError.Code> = [.invalidRequest, .notFound, .corrupt, .dimensionMismatch, .unauthorized]

    private static func swapLine(generation: String, checkpoint: String?, collection: String?, token: String?) -> [UInt8] {
        RequestEncoder.encode(Request(operation: .swap(generation: generation, checkpoint: checkpoint), token: token, collection: collection))
    }

    /// Swaps every replica to `target` while reads are held; the router switches only when every shard
    /// has at least one replica on the new generation and all of them name the same one. Otherwise the
    /// replicas that swapped are asked to swap back and the router keeps its generation.
    ///
    /// With `collection` the shards swap that collection the same way (all or rolled back); the router's
    /// own generation and model (the default collection's) stay as they are.
    private func swap(to target: String, checkpoint: String?, collection: String?, token: String?, _ writer: inout JSONWriter) async throws {
        let already = swapping.withLock { value -> Bool in
            defer { value = true }
            return value
        }
        if already { throw SteerError(.unavailable, "a swap is already in progress") }
        defer { swapping.withLock { $0 = false } }
        var newEncoder: (any QueryEncoder)?
        if let checkpoint, collection == nil {
            guard let loadEncoder else {
                throw SteerError.invalid("swap: this router was started without a model (--checkpoint), so it cannot load checkpoint '\(checkpoint)'")
            }
            newEncoder = try await pool.runIfActive { () throws -> any QueryEncoder in try loadEncoder(checkpoint) }
        }
        await gate.close()
        defer { gate.open() }
        let previousGeneration = generation.get()
        let token = shardToken(token)
        let line = Self.swapLine(generation: target, checkpoint: checkpoint, collection: collection, token: token)
        let timeout = TimeAmount.seconds(Int64(configuration.swapTimeoutSeconds))
        var outcomes: [(Replica, SwapOutcome)] = []
        await withTaskGroup(of: (Replica, SwapOutcome).self) { tasks in
            for replica in replicas.joined() {
                tasks.addTask {
                    let health = replica.health.get()
                    guard health.up, !health.diverged else { return (replica, .skipped) }
                    do {
                        let answer = try await replica.request(line, timeout: timeout)
                        guard case .string(let name)? = answer["generation"] else { return (replica, .failed("no generation in the answer")) }
                        var previous = ""
                        if case .string(let text)? = answer["previous"] { previous = text }
                        return (replica, .swapped(generation: name, previous: previous))
                    } catch let error as SteerError where Self.requestErrors.contains(error.code) {
                        return (replica, .refused(error))
                    } catch {
                        return (replica, .failed(Self.describe(error)))
                    }
                }
            }
            for await outcome in tasks { outcomes.append(outcome) }
        }
        outcomes.sort { ($0.0.shard, $0.0.endpoint.description) < ($1.0.shard, $1.0.endpoint.description) }
        var names = Set<String>()
        var shardsSwapped = Set<Int>()
        var refusal: SteerError?
        for (replica, outcome) in outcomes {
            if case .swapped(let name, _) = outcome {
                names.insert(name)
                shardsSwapped.insert(replica.shard)
                if collection == nil { replica.health.withLock { $0.generation = name } }
            }
        }
        let committed = names.count == 1 && shardsSwapped.count == replicas.count
        if committed, let name = names.first, collection != nil {
            logger.info("swapped a collection on every shard", metadata: ["steer.collection": "\(collection ?? "")", "steer.generation": "\(name)"])
        } else if committed, let name = names.first {
            generation.withLock { $0 = name }
            if let newEncoder { encoder.withLock { $0 = newEncoder } }
            counters.withLock { $0.swaps += 1 }
            logger.info("swapped every shard", metadata: ["steer.generation": "\(name)", "steer.previous": "\(previousGeneration ?? "none")"])
        } else {
            // Roll back the replicas that moved, each to the generation it left.
            for (replica, outcome) in outcomes {
                guard case .swapped(_, let previous) = outcome, !previous.isEmpty else { continue }
                do {
                    let answer = try await replica.request(Self.swapLine(generation: previous, checkpoint: nil, collection: collection, token: token), timeout: timeout)
                    if collection == nil, case .string(let name)? = answer["generation"] { replica.health.withLock { $0.generation = name } }
                } catch {
                    logger.error("swap rollback failed; the replica is not routed to until it serves the router's generation", metadata: [
                        "steer.replica": "\(replica.endpoint)", "steer.error": "\(Self.describe(error))",
                    ])
                }
            }
            let failures = outcomes.compactMap { replica, outcome -> String? in
                switch outcome {
                case .failed(let message): return "shard \(replica.shard) \(replica.endpoint): \(message)"
                case .refused(let error): return "shard \(replica.shard) \(replica.endpoint): \(error)"
                case .skipped: return "shard \(replica.shard) \(replica.endpoint): down"
                case .swapped: return nil
                }
            }
            // Every replica that answered refused the request itself: the caller gets that answer.
            let refusals = outcomes.compactMap { _, outcome -> SteerError? in
                if case .refused(let error) = outcome { return error }
                return nil
            }
            let answered = outcomes.filter { if case .skipped = $0.1 { return false } else { return true } }.count
            if !refusals.isEmpty, refusals.count == answered, Set(refusals.map(\.code)).count == 1 {
                refusal = SteerError(refusals[0].code, "swap refused by every shard: \(refusals[0].message)")
            }
            if names.count > 1 { refusal = SteerError(.unavailable, "swap: replicas named different generations (\(names.sorted().joined(separator: ", "))); rolled back") }
            throw refusal ?? SteerError(.unavailable, "swap: not every shard loaded '\(target)' (\(failures.joined(separator: "; "))); rolled back, the router keeps \(previousGeneration ?? "its generation")")
        }
        if let collection {
            writer.raw(",\"collection\":")
            writer.string(collection)
        }
        writer.raw(",\"generation\":")
        writer.string(names.first ?? target)
        writer.raw(",\"previous\":")
        if collection != nil {
            let previous = outcomes.lazy.compactMap { _, outcome -> String? in
                if case .swapped(_, let previous) = outcome { return previous }
                return nil
            }.first
            if let previous { writer.string(previous) } else { writer.raw("null") }
        } else if let previousGeneration { writer.string(previousGeneration) } else { writer.raw("null") }
        writer.raw(",\"replicas\":[")
        for (index, (replica, outcome)) in outcomes.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.raw("{\"shard\":")
            writer.int(replica.shard)
            writer.raw(",\"address\":")
            writer.string(replica.endpoint.description)
            switch outcome {
            case .swapped: writer.raw(",\"swapped\":true")
            case .failed(let message):
                writer.raw(",\"swapped\":false,\"error\":")
                writer.string(message)
            case .refused(let error):
                writer.raw(",\"swapped\":false,\"error\":")
                writer.string(error.description)
            case .skipped: writer.raw(",\"swapped\":false,\"error\":\"down\"")
            }
            writer.raw("}")
        }
        writer.raw("]")
    }

    // MARK: stats

    private func writeStats(_ writer: inout JSONWriter) {
        writer.raw(",\"role\":\"router\",\"generation\":")
        if let name = generation.get() { writer.string(name) } else { writer.raw("null") }
        writer.raw(",\"sharding\":")
        writer.string(sharding.description)
        writer.raw(",\"writes\":")
        writer.string(shardLog == nil ? "replicas" : "streams")
        writer.raw(",\"encoder\":")
        if let encoder = encoder.get() { writer.string(String(describing: type(of: encoder))) } else { writer.raw("\"mean-of-history (shards)\"") }
        writer.raw(",\"shards\":[")
        var unavailable = 0
        for (shard, set) in replicas.enumerated() {
            if shard > 0 { writer.raw(",") }
            let readableCount = readableCount(shard)
            if readableCount == 0 { unavailable += 1 }
            writer.raw("{\"shard\":")
            writer.int(shard)
            writer.raw(",\"readable_replicas\":")
            writer.int(readableCount)
            writer.raw(",\"replicas\":[")
            for (index, replica) in set.enumerated() {
                if index > 0 { writer.raw(",") }
                let health = replica.health.get()
                writer.raw("{\"address\":")
                writer.string(replica.endpoint.description)
                writer.raw(",\"up\":")
                writer.bool(health.up)
                writer.raw(",\"generation\":")
                if let name = health.generation { writer.string(name) } else { writer.raw("null") }
                writer.raw(",\"diverged\":")
                writer.bool(health.diverged)
                writer.raw(",\"applied_sequence\":")
                writer.int(Int64(clamping: health.appliedSequence))
                writer.raw(",\"requests\":")
                writer.int(health.requests)
                writer.raw(",\"failures\":")
                writer.int(health.failures)
                if let error = health.lastError {
                    writer.raw(",\"last_error\":")
                    writer.string(error)
                }
                writer.raw("}")
            }
            writer.raw("]}")
        }
        writer.raw("],\"unavailable_shards\":")
        writer.int(unavailable)
        let counts = counters.get()
        writer.raw(",\"counters\":{\"partial_responses\":")
        writer.int(counts.partialResponses)
        writer.raw(",\"replica_retries\":")
        writer.int(counts.replicaRetries)
        writer.raw(",\"generation_mismatches\":")
        writer.int(counts.generationMismatches)
        writer.raw(",\"swaps\":")
        writer.int(counts.swaps)
        writer.raw(",\"diverged_replicas\":")
        writer.int(counts.divergedReplicas)
        writer.raw(",\"appended_writes\":")
        writer.int(counts.appendedWrites)
        writer.raw(",\"held_by_swap\":")
        writer.int(gate.heldCount)
        writer.raw("}")
        RequestHandler.writeOperationStats(stats, &writer)
        if let provider = serverStats.get() {
            writer.raw(",\"server\":")
            writer.value(.object(provider()))
        }
    }

    private func readableCount(_ shard: Int) -> Int {
        let expected = generation.get()
        return replicas[shard].filter { replica in
            let health = replica.health.get()
            return health.up && !health.diverged && (expected == nil || health.generation == nil || health.generation == expected)
        }.count
    }
}
