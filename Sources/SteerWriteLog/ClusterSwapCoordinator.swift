import Foundation
import SteerCore
import SteerNATS

/// A round of a cluster-wide swap that every live replica staged (`ClusterSwapCoordinating.prepare`).
public struct ClusterSwapRound: Sendable, Equatable {
    /// The revision of the round's `prepare` entry.
    public var round: UInt64
    public var generation: String
    public var checkpoint: String?
    public var deadlineMillis: Int64
    /// The replicas that reported ready: heartbeat key, shard, address.
    public var replicas: [Replica]

    public struct Replica: Sendable, Equatable {
        public var key: String
        public var shard: Int
        public var address: String

        public init(key: String, shard: Int, address: String) {
            self.key = key
            self.shard = shard
            self.address = address
        }
    }

    public init(round: UInt64, generation: String, checkpoint: String?, deadlineMillis: Int64, replicas: [Replica]) {
        self.round = round
        self.generation = generation
        self.checkpoint = checkpoint
        self.deadlineMillis = deadlineMillis
        self.replicas = replicas
    }
}

/// The coordinator's half of a cluster-wide swap (docs/scaling.md "Cluster-wide swap"), used by a
/// router's `swap` with `--follow`. The router runs `prepare`, then (reads held) `commit`, then asks
/// its replicas to activate.
public protocol ClusterSwapCoordinating: Sendable {
    /// Announces `generation` in the cluster's metadata, then waits until every live replica of each of
    /// the `shardCount` shards reports it ready, at most `timeout`. On a failure or the timeout it
    /// announces `abort` (the replicas drop what they staged) and throws.
    ///
    /// - Throws: `.unavailable` naming the shard without live replicas, another swap in progress, a
    ///   recorded shard count other than `shardCount`, or the replicas that failed (with their message)
    ///   or did not report in time; NATS errors as `.unavailable`.
    func prepare(generation: String, checkpoint: String?, timeout: Duration, shardCount: Int) async throws(SteerError) -> ClusterSwapRound

    /// Flips the cluster's generation to the round's (`commit`), only if the round is still the latest
    /// change of the key.
    ///
    /// - Throws: `.unavailable` when another change came first or NATS did not confirm the write (it
    ///   may still be stored: the replicas then activate it by themselves).
    func commit(_ round: ClusterSwapRound) async throws(SteerError)
}

/// `ClusterSwapCoordinating` over NATS: a connection per call (swaps are rare), to the first node of
/// `addresses` that answers. The buckets must exist (the replicas create them).
public struct NATSClusterSwapCoordinator: ClusterSwapCoordinating {
    public let addresses: NATSAddresses
    public let cluster: String

    public init(addresses: NATSAddresses, cluster: String) {
        self.addresses = addresses
        self.cluster = cluster
    }

    public func prepare(generation: String, checkpoint: String?, timeout: Duration, shardCount: Int) async throws(SteerError) -> ClusterSwapRound {
        try await withMetadata { js, metadata throws(SteerError) in
            let live = try await Self.liveReplicas(js, metadata: metadata, cluster: cluster, shardCount: shardCount)
            let current = try await Self.nats { () throws(NATSError) in try await metadata.entry(ClusterSwap.generationKey) }
            if let current, current.operation == .put, let running = try? ClusterSwap.decodeAnnouncement(current.value),
               running.state == .prepare, running.deadlineMillis > ClusterSwap.nowMillis() {
                throw SteerError(.unavailable, "cluster swap: a swap to \(running.generation) (round \(current.revision)) is in progress for \((running.deadlineMillis - ClusterSwap.nowMillis() + 999) / 1000) s more")
            }
            let deadline = ClusterSwap.nowMillis() + Int64(timeout.components.seconds) * 1000 + Int64(timeout.components.attoseconds / 1_000_000_000_000_000)
            let value = ClusterSwap.encode(ClusterSwap.Announcement(generation: generation, checkpoint: checkpoint, state: .prepare, round: 0,
                                                                    deadlineMillis: deadline))
            let round: UInt64
            do throws(NATSError) {
                if let current {
                    round = try await metadata.update(ClusterSwap.generationKey, value, revision: current.revision)
                } else {
                    round = try await metadata.create(ClusterSwap.generationKey, value)
                }
            } catch where error.isWrongLastSequence {
                throw SteerError(.unavailable, "cluster swap: another coordinator changed the cluster's generation state first")
            } catch {
                throw SteerError(.unavailable, "cluster swap: cannot announce \(generation): \(error)")
            }
            var swapRound = ClusterSwapRound(round: round, generation: generation, checkpoint: checkpoint, deadlineMillis: deadline,
                                             replicas: live.map { .init(key: $0.key, shard: $0.shard, address: $0.address.description) })
            do throws(SteerError) {
                try await waitForReady(&swapRound, metadata: metadata)
                return swapRound
            } catch {
                // Only this round's own entry is replaced: a later change (another coordinator) stays.
                let abort = ClusterSwap.encode(ClusterSwap.Announcement(generation: generation, checkpoint: checkpoint, state: .abort, round: round,
                                                                        deadlineMillis: deadline))
                _ = try? await metadata.update(ClusterSwap.generationKey, abort, revision: round)
                throw error
            }
        }
    }

    public func commit(_ round: ClusterSwapRound) async throws(SteerError) {
        try await withMetadata { _, metadata throws(SteerError) in
            let value = ClusterSwap.encode(ClusterSwap.Announcement(generation: round.generation, checkpoint: round.checkpoint, state: .commit,
                                                                    round: round.round, deadlineMillis: round.deadlineMillis))
            do throws(NATSError) {
                _ = try await metadata.update(ClusterSwap.generationKey, value, revision: round.round)
            } catch where error.isWrongLastSequence {
                throw SteerError(.unavailable, "cluster swap: round \(round.round) of \(round.generation) was replaced before its commit (another coordinator or an abort); nothing switched")
            } catch {
                throw SteerError(.unavailable, "cluster swap: the commit of \(round.generation) (round \(round.round)) was not confirmed by NATS: \(error); if it was stored, the replicas activate it by themselves")
            }
        }
    }

    /// Polls the reports of `round.replicas` until all are ready for the round, one failed, the round's
    /// entry was replaced, or its deadline passed.
    private func waitForReady(_ round: inout ClusterSwapRound, metadata: KeyValue) async throws(SteerError) {
        while true {
            var pending: [ClusterSwapRound.Replica] = []
            var failed: [String] = []
            for replica in round.replicas {
                let entry = try await Self.nats { () throws(NATSError) in try await metadata.get(ClusterSwap.reportKey(heartbeatKey: replica.key)) }
                guard let entry, let report = try? ClusterSwap.decodeReport(entry.value), report.round == round.round,
                      report.generation == round.generation
                else {
                    pending.append(replica)
                    continue
                }
                switch report.state {
                case .ready, .active: break
                case .failed: failed.append("shard \(replica.shard) \(replica.address): \(report.message ?? "failed")")
                }
            }
            if !failed.isEmpty {
                throw SteerError(.unavailable, "cluster swap to \(round.generation) aborted: \(failed.joined(separator: "; ")); every replica keeps its generation")
            }
            if pending.isEmpty { return }
            let latest = try await Self.nats { () throws(NATSError) in try await metadata.entry(ClusterSwap.generationKey) }
            guard latest?.revision == round.round else {
                throw SteerError(.unavailable, "cluster swap to \(round.generation): round \(round.round) was replaced while it waited (another coordinator or an abort)")
            }
            if ClusterSwap.nowMillis() >= round.deadlineMillis {
                let names = pending.map { "shard \($0.shard) \($0.address)" }.joined(separator: ", ")
                throw SteerError(.unavailable, "cluster swap to \(round.generation) aborted: not ready within the swap timeout: \(names); every replica keeps its generation")
            }
            try? await Task.sleep(for: ClusterSwap.pollInterval)
        }
    }

    /// The live replicas' heartbeat keys; every one of the `count` shards must have one, and a recorded
    /// shard count (`--shard-count`) must be `count`.
    private static func liveReplicas(_ js: JetStreamContext, metadata: KeyValue, cluster: String, shardCount count: Int) async throws(SteerError)
        -> [(key: String, shard: Int, address: ClusterDirectory.Address)] {
        do {
            if let recorded = try await ClusterDirectory.shardCount(metadata), recorded != count {
                throw SteerError(.unavailable, "cluster swap: the cluster's metadata records \(recorded) shards, this router has \(count)")
            }
            let replicas = try await js.keyValue(ClusterDirectory.replicasBucket(cluster: cluster))
            let live = try await ClusterSwap.liveReplicaKeys(replicas, shardCount: count)
            for shard in 0..<count where !live.contains(where: { $0.shard == shard }) {
                throw SteerError(.unavailable, "cluster swap: shard \(shard) has no live replica")
            }
            return live
        } catch let error as SteerError {
            throw error
        } catch {
            throw SteerError(.unavailable, "cluster swap: cannot read the cluster's replicas: \(error)")
        }
    }

    private func withMetadata<T>(_ body: (JetStreamContext, KeyValue) async throws(SteerError) -> T) async throws(SteerError) -> T {
        let nats: NATSConnection
        do {
            (nats, _) = try await addresses.connect(startingAt: 0)
        } catch {
            throw SteerError(.unavailable, "cluster swap: cannot reach NATS at \(addresses): \(error)")
        }
        defer { Task { await nats.close() } }
        let js = JetStreamContext(connection: nats)
        let metadata = try await Self.nats { () throws(NATSError) in try await js.keyValue(ClusterDirectory.metadataBucket(cluster: cluster)) }
        return try await body(js, metadata)
    }

    private static func nats<T>(_ body: () async throws(NATSError) -> T) async throws(SteerError) -> T {
        do {
            return try await body()
        } catch {
            throw SteerError(.unavailable, "cluster swap: NATS: \(error)")
        }
    }
}
