import NIOCore
import SteerCore
import SteerEngine
import SteerProtocol
import SteerWriteLog

/// `swap` of a router whose shards follow streams (`steer route --follow`): a cluster-wide swap through
/// the cluster's metadata bucket (docs/scaling.md "Cluster-wide swap"). Every live replica stages the
/// generation and reports ready while reads go on from the old one; then, reads held at the gate, the
/// one `generation` key flips to `commit`, this router asks each of its replicas to `activate` and
/// moves to the new generation.
///
/// Never served mixed: a read is answered only by shards naming one generation, the router's
/// (`RouterReads.swift` drops an answer naming another one and fails a request whose answers name
/// two); this router switches while its gate holds reads, after its replicas activated. Replicas that
/// activate before a router switches (by their own watch of the key, or another router's `activate`)
/// are passed over by that router until it switches; one that did not activate is passed over by the
/// routers that did (its health check names the old generation) until it does.
extension Router {
    /// Installs the coordinator `swap` uses (`steer route --follow`); nil: the per-replica swap.
    public func setClusterSwap(_ coordinator: (any ClusterSwapCoordinating)?) {
        clusterSwap.withLock { $0 = coordinator }
    }

    static func activateLine(generation: String, token: String?) -> [UInt8] {
        RequestEncoder.encode(Request(operation: .activate(generation: generation), token: token))
    }

    /// Prepare everywhere (reads go on), commit, activate this router's replicas behind the gate.
    ///
    /// - Throws: `.unavailable` from the coordinator (another swap, a shard without live replicas,
    ///   replicas that failed or timed out — the swap is aborted and every replica keeps its generation —
    ///   or a commit that lost the race); `.invalidRequest` for a checkpoint the router cannot load.
    func clusterSwap(to target: String, checkpoint: String?, token: String?, _ writer: inout JSONWriter) async throws {
        guard let coordinator = clusterSwap.get() else { throw SteerError.internalError("no cluster swap coordinator") }
        try beginSwap()
        defer { swapping.withLock { $0 = false } }
        let newEncoder = try await swapEncoder(checkpoint)
        let round = try await coordinator.prepare(generation: target, checkpoint: checkpoint, timeout: .seconds(configuration.swapTimeoutSeconds),
                                                  shardCount: replicas.count)
        await gate.close()
        defer { gate.open() }
        let previousGeneration = generation.get()
        try await coordinator.commit(round)
        let line = Self.activateLine(generation: target, token: shardToken(token))
        let timeout = TimeAmount.seconds(Int64(configuration.swapTimeoutSeconds))
        var outcomes: [(Replica, String?)] = []
        await withTaskGroup(of: (Replica, String?).self) { tasks in
            for replica in replicas.joined() {
                tasks.addTask {
                    do {
                        let answer = try await replica.request(line, timeout: timeout)
                        guard case .string(let name)? = answer["generation"], name == target else {
                            return (replica, "answered another generation than \(target)")
                        }
                        replica.health.withLock { $0.generation = name }
                        return (replica, nil)
                    } catch {
                        return (replica, Self.describe(error))
                    }
                }
            }
            for await outcome in tasks { outcomes.append(outcome) }
        }
        outcomes.sort { ($0.0.shard, $0.0.endpoint.description) < ($1.0.shard, $1.0.endpoint.description) }
        generation.withLock { $0 = target }
        if let newEncoder { encoder.withLock { $0 = newEncoder } }
        counters.withLock { $0.swaps += 1 }
        for (replica, failure) in outcomes {
            guard let failure else { continue }
            logger.warning("replica did not activate the committed generation; it is not routed to until it serves it", metadata: [
                "steer.replica": "\(replica.endpoint)", "steer.generation": "\(target)", "steer.error": "\(failure)",
            ])
        }
        logger.info("cluster-wide swap committed", metadata: [
            "steer.generation": "\(target)", "steer.previous": "\(previousGeneration ?? "none")", "steer.round": "\(round.round)",
        ])
        writer.raw(",\"generation\":")
        writer.string(target)
        writer.raw(",\"previous\":")
        if let previousGeneration { writer.string(previousGeneration) } else { writer.raw("null") }
        writer.raw(",\"cluster\":true,\"round\":")
        writer.int(Int64(clamping: round.round))
        writer.raw(",\"prepared\":")
        writer.int(round.replicas.count)
        writer.raw(",\"replicas\":[")
        for (index, (replica, failure)) in outcomes.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.raw("{\"shard\":")
            writer.int(replica.shard)
            writer.raw(",\"address\":")
            writer.string(replica.endpoint.description)
            if let failure {
                writer.raw(",\"activated\":false,\"error\":")
                writer.string(failure)
            } else {
                writer.raw(",\"activated\":true")
            }
            writer.raw("}")
        }
        writer.raw("]")
    }

    /// Longest a router holds reads while its replicas move to a generation another router committed.
    public static let commitFollowLimit: Duration = .seconds(10)

    /// Follows a commit of the cluster's generation that another router coordinated (seen by a watch
    /// of the `generation` key, `steer route --follow`): with reads held at the gate, checks its replicas
    /// (they activate by themselves, `GenerationFollower`) until every shard has one up on `target`, at
    /// most `commitFollowLimit`, then moves to `target`. Nothing happens when it serves `target`
    /// already or runs a swap of its own.
    public func followCommit(_ target: String) async {
        guard generation.get() != target else { return }
        let already = swapping.withLock { value -> Bool in
            defer { value = true }
            return value
        }
        if already { return }
        defer { swapping.withLock { $0 = false } }
        await gate.close()
        defer { gate.open() }
        let started = ContinuousClock.now
        while true {
            await checkHealth()
            let ready = replicas.allSatisfy { shard in
                shard.contains { replica in
                    let health = replica.health.get()
                    return health.up && !health.diverged && health.generation == target
                }
            }
            if ready || ContinuousClock.now - started >= Self.commitFollowLimit { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        let previous = generation.get()
        generation.withLock { $0 = target }
        counters.withLock { $0.swaps += 1 }
        logger.info("followed the cluster's committed generation", metadata: ["steer.generation": "\(target)", "steer.previous": "\(previous ?? "none")"])
    }
}
