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

/// The router's view of the cluster: replica health checks, the generation the router serves, and the
/// `stats` answer (replicas, counters). Threading: health checks run as tasks of `start()`'s loop; every
/// piece of state read or written here sits behind `Locked` (the replica table, each replica's health,
/// the generation, the counters).
extension Router {
    // MARK: Health and generation

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
    func adoptGeneration() {
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


    // MARK: stats

    func writeStats(_ writer: inout JSONWriter) {
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

    func readableCount(_ shard: Int) -> Int {
        let expected = generation.get()
        return replicas[shard].filter { replica in
            let health = replica.health.get()
            return health.up && !health.diverged && (expected == nil || health.generation == nil || health.generation == expected)
        }.count
    }
}
