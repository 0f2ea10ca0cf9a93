import Foundation
import Logging
import SteerCore
import SteerNATS
import SteerRouter
import SteerWriteLog

/// `steer route --follow … --cluster C`: watches the cluster's `generation` key (`ClusterSwap`) and
/// hands each `commit` stored while it watches to `Router.followCommit`, so a router moves with a
/// cluster-wide swap another router coordinated (docs/scaling.md "Cluster-wide swap"). The value the
/// watch starts with is not acted on (it may be an old commit the replicas were swapped away from
/// since); a router that was not watching when a commit happened adopts the generation from its health
/// checks once every replica that is up serves it. Its own NATS connection, to the next node after a
/// failure; a failure is logged once per streak and the watch started again after a second.
///
/// Thread safety: `run` is one task; nothing else is mutable.
struct CommitWatch: Sendable {
    let addresses: NATSAddresses
    let cluster: String
    let logger: Logger

    func run(_ router: Router) async {
        var start = 0
        var failing = false
        while !Task.isCancelled {
            do {
                let (nats, reached) = try await addresses.connect(startingAt: start)
                start = (reached + 1) % addresses.addresses.count
                defer { Task { await nats.close() } }
                let metadata = try await JetStreamContext(connection: nats).keyValue(ClusterDirectory.metadataBucket(cluster: cluster))
                let watcher = try await metadata.watch(ClusterSwap.generationKey)
                defer { Task { await watcher.stop() } }
                if failing {
                    failing = false
                    logger.info("watching the cluster's generation again")
                }
                var initial = true
                for try await event in watcher {
                    switch event {
                    case .initialValuesDone:
                        initial = false
                    case .entry(let entry):
                        guard !initial, entry.operation == .put, let announcement = try? ClusterSwap.decodeAnnouncement(entry.value),
                              announcement.state == .commit
                        else { continue }
                        await router.followCommit(announcement.generation)
                    }
                }
            } catch {
                if !failing {
                    failing = true
                    logger.warning("cannot watch the cluster's generation; retrying", metadata: ["steer.error": "\(error)"])
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}
