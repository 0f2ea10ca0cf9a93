import Foundation
import Logging
import SteerCore
import SteerNATS
import SteerRouter
import SteerWriteLog

/// `steer route --follow … --cluster C` without `--shard` flags (docs/scaling.md, "Cluster metadata"):
/// the shard count from the cluster's metadata bucket (`ClusterDirectory`), the replicas of each shard
/// from the heartbeats in its replicas bucket, read again every interval (`follow`) and handed to
/// `Router.setReplicas`. Heartbeats expire (the bucket's `max_age`), so a replica that stopped putting
/// them leaves the router's table, and a new one joins it, within about one TTL plus one interval. A
/// listing is a short-lived watch of the bucket's current values (an expired value produces no watch
/// event, so a long-running watch could not see a replica leave).
///
/// Thread safety: `follow` is one task; the connection is its own (reconnects to the next node).
final class ClusterDiscovery: Sendable {
    let addresses: NATSAddresses
    let cluster: String
    let logger: Logger
    private let state = Locked<(connection: NATSConnection?, next: Int, shardCount: Int)>((nil, 0, 0))

    init(addresses: NATSAddresses, cluster: String, logger: Logger) {
        self.addresses = addresses
        self.cluster = cluster
        self.logger = logger
    }

    /// Waits until the shard map is recorded and every shard has a live replica.
    ///
    /// - Throws: `SteerError.unavailable` when that did not happen within `timeout`; the last NATS or
    ///   value error otherwise stays in the message.
    func initialShards(timeout: Duration) async throws -> [[ShardEndpoint]] {
        let deadline = ContinuousClock.now + timeout
        var last = "nothing read yet"
        while ContinuousClock.now < deadline {
            do {
                let shards = try await list()
                if let empty = shards.firstIndex(where: \.isEmpty) {
                    last = "shard \(empty) has no live replica"
                } else {
                    return shards
                }
            } catch {
                last = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw SteerError(.unavailable, "cluster \(cluster): no complete shard map within \(timeout) (\(last))")
    }

    /// Reads the replicas every `interval` and updates `router` until cancelled.
    func follow(_ router: Router, interval: Duration) async {
        var failing = false
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            do {
                let shards = try await list()
                if failing {
                    failing = false
                    logger.info("reading the cluster's replicas again")
                }
                try await router.setReplicas(shards)
            } catch {
                if !failing {
                    failing = true
                    logger.warning("cannot read the cluster's replicas; keeping the last membership", metadata: ["steer.error": "\(error)"])
                }
            }
        }
        if let open = state.withLock({ $0.connection }) { await open.close() }
    }

    /// The live replicas per shard now.
    private func list() async throws -> [[ShardEndpoint]] {
        let nats = try await connection()
        do {
            let jetStream = JetStreamContext(connection: nats)
            var count = state.get().shardCount
            if count == 0 {
                let metadata = try await jetStream.keyValue(ClusterDirectory.metadataBucket(cluster: cluster))
                guard let recorded = try await ClusterDirectory.shardCount(metadata) else {
                    throw SteerError(.unavailable, "no shard count recorded (start a replica with --shard-count)")
                }
                count = recorded
                state.withLock { $0.shardCount = recorded }
            }
            let bucket = try await jetStream.keyValue(ClusterDirectory.replicasBucket(cluster: cluster))
            return try await ClusterDirectory.liveReplicas(bucket, shardCount: count).map { list in
                list.map { ShardEndpoint(host: $0.host, port: $0.port) }
            }
        } catch {
            if nats.closedError != nil {
                state.withLock { $0.connection = nil }
                await nats.close()
            }
            throw error
        }
    }

    private func connection() async throws -> NATSConnection {
        if let open = state.get().connection, open.closedError == nil { return open }
        let (nats, reached) = try await addresses.connect(startingAt: state.get().next)
        state.withLock {
            $0.connection = nats
            $0.next = (reached + 1) % addresses.addresses.count
        }
        return nats
    }
}
