import Foundation
import Logging
import SteerCore
import SteerNATS
import SteerWriteLog

/// A following replica's entry in its cluster's metadata (`ClusterDirectory`; docs/scaling.md, "Cluster
/// metadata"): every `ClusterDirectory.heartbeatInterval` it puts `{"address","shard"}` under
/// `shard.<i>.<replica id>` in the replicas bucket, whose values expire after
/// `ClusterDirectory.heartbeatTTL`, so routers that discover replicas there stop reading from one that
/// stopped (crashed, frozen, cut off from NATS). It beats only while `isFollowing` says the replica
/// follows its stream (not while it reconnects or refuses to follow, for example when it fell behind
/// the stream's retention). Its own NATS connection, to the next node after a failure; a failed put is
/// logged once per failure streak and retried at the next beat.
///
/// Thread safety: `run` is one task; nothing else is mutable.
struct ReplicaHeartbeat: Sendable {
    let addresses: NATSAddresses
    let cluster: String
    let shard: Int
    let replicaID: String
    let bucketReplicas: Int
    let logger: Logger
    /// Whether the replica follows its stream now (`StreamFollower.isFollowing`).
    let isFollowing: @Sendable () -> Bool

    /// Puts heartbeats for `address` until cancelled.
    func run(address: ClusterDirectory.Address) async {
        let key = ClusterDirectory.replicaKey(shard: shard, replicaID: replicaID)
        let value = ClusterDirectory.encodeHeartbeat(address: address, shard: shard)
        var start = 0
        var failing = false
        while !Task.isCancelled {
            do {
                let (nats, reached) = try await addresses.connect(startingAt: start)
                start = (reached + 1) % addresses.addresses.count
                defer { Task { await nats.close() } }
                let bucket = try await ClusterDirectory.replicas(JetStreamContext(connection: nats), cluster: cluster, replicas: bucketReplicas)
                while !Task.isCancelled {
                    guard isFollowing() else {
                        try? await Task.sleep(for: ClusterDirectory.heartbeatInterval)
                        continue
                    }
                    _ = try await bucket.put(key, value)
                    if failing {
                        failing = false
                        logger.info("heartbeats resumed", metadata: ["steer.key": "\(key)"])
                    }
                    try? await Task.sleep(for: ClusterDirectory.heartbeatInterval)
                }
            } catch {
                if !failing {
                    failing = true
                    logger.warning("cannot put the replica's heartbeat; retrying", metadata: ["steer.key": "\(key)", "steer.error": "\(error)"])
                }
                try? await Task.sleep(for: ClusterDirectory.heartbeatInterval)
            }
        }
    }
}
