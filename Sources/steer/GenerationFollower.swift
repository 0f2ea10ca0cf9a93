import Dispatch
import Foundation
import Logging
import SteerCore
import SteerEngine
import SteerNATS
import SteerWriteLog

/// A following replica's part of a cluster-wide swap (docs/scaling.md "Cluster-wide swap";
/// `ClusterSwap` holds the keys and values): it watches the `generation` key of the cluster's metadata
/// bucket and
///
/// - on `prepare` (round R, generation G): stages G (`RetrievalEngine.prepare`, which drops anything
///   staged before) and reports `ready` or `failed` (with the error) for R under its report key;
///   a round it already reported (its report names R, and G is still staged, or it failed) is not
///   prepared again, so a reconnect does not reload;
/// - on `commit` (round R, G): serves G, activating the staged G, or swapping to it (load, catch up,
///   switch) when nothing is staged (it restarted since it reported ready, or it missed the round), and
///   reports `active` for R; a replica whose report already says `active` for R does nothing (it may
///   have been swapped directly since, and a restart must not undo that);
/// - on `abort` (round R, G): drops G if it is staged; and when a `prepare` round's deadline passed (plus
///   `deadlineGraceMillis`) with the key still on that round (its coordinator stopped), likewise.
///
/// Engine calls block (loading an index takes seconds): they run on `engineQueue`, one at a time, so
/// the watch's events are handled in order. A router coordinating the swap may send `activate` itself
/// (`RetrievalEngine.activate` is idempotent). Its own NATS connection, to the next node after a
/// failure; a failure is logged once per streak and the watch started again after a second.
///
/// Thread safety: `run` is one task; nothing else is mutable.
struct GenerationFollower: Sendable {
    let addresses: NATSAddresses
    let cluster: String
    /// This replica's heartbeat key (`ClusterDirectory.replicaKey`); its report key derives from it.
    let heartbeatKey: String
    let bucketReplicas: Int
    let engine: RetrievalEngine
    let logger: Logger
    private let engineQueue = DispatchQueue(label: "steer.generation-follower")

    init(addresses: NATSAddresses, cluster: String, heartbeatKey: String, bucketReplicas: Int, engine: RetrievalEngine, logger: Logger) {
        self.addresses = addresses
        self.cluster = cluster
        self.heartbeatKey = heartbeatKey
        self.bucketReplicas = bucketReplicas
        self.engine = engine
        self.logger = logger
    }

    /// Watches the cluster's generation until cancelled.
    func run() async {
        var start = 0
        var failing = false
        while !Task.isCancelled {
            do {
                let (nats, reached) = try await addresses.connect(startingAt: start)
                start = (reached + 1) % addresses.addresses.count
                defer { Task { await nats.close() } }
                let metadata = try await ClusterDirectory.metadata(JetStreamContext(connection: nats), cluster: cluster, replicas: bucketReplicas)
                let watcher = try await metadata.watch(ClusterSwap.generationKey)
                defer { Task { await watcher.stop() } }
                if failing {
                    failing = false
                    logger.info("watching the cluster's generation again")
                }
                for try await event in watcher {
                    guard case .entry(let entry) = event, entry.operation == .put else { continue }
                    try await handle(entry, metadata: metadata)
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

    /// Acts on one value of the `generation` key.
    ///
    /// - Throws: `NATSError` when the report cannot be read or written (the watch starts again).
    func handle(_ entry: KeyValueEntry, metadata: KeyValue) async throws {
        let announcement: ClusterSwap.Announcement
        do {
            announcement = try ClusterSwap.decodeAnnouncement(entry.value)
        } catch {
            logger.warning("ignoring the cluster's generation state", metadata: ["steer.error": "\(error)"])
            return
        }
        let round = ClusterSwap.round(of: announcement, revision: entry.revision)
        let generation = announcement.generation
        let reportKey = ClusterSwap.reportKey(heartbeatKey: heartbeatKey)
        var mine: ClusterSwap.Report?
        if let stored = try await metadata.get(reportKey) { mine = try? ClusterSwap.decodeReport(stored.value) }
        let reportedThisRound = mine.map { $0.round == round && $0.generation == generation } ?? false
        switch announcement.state {
        case .prepare:
            dropAtDeadline(generation, round: round, deadlineMillis: announcement.deadlineMillis, metadata: metadata)
            if reportedThisRound, let mine, mine.state == .failed || (mine.state == .ready && engine.stagedGenerationID == generation) { return }
            logger.info("preparing the cluster's next generation", metadata: ["steer.generation": "\(generation)", "steer.round": "\(round)"])
            let outcome = await onEngine { () throws(SteerError) in _ = try engine.prepare(generation, checkpoint: announcement.checkpoint) }
            let report: ClusterSwap.Report
            switch outcome {
            case .success:
                report = ClusterSwap.Report(round: round, generation: generation, state: .ready)
            case .failure(let error):
                logger.error("cannot prepare the cluster's next generation", metadata: ["steer.generation": "\(generation)", "steer.error": "\(error)"])
                report = ClusterSwap.Report(round: round, generation: generation, state: .failed, message: error.description)
            }
            try await metadata.put(reportKey, ClusterSwap.encode(report))
        case .commit:
            if reportedThisRound, mine?.state == .active { return }
            let outcome = await onEngine { () throws(SteerError) in
                if engine.generation.id == generation { return }
                if engine.stagedGenerationID == generation {
                    _ = try engine.activate(generation)
                } else {
                    _ = try engine.swap(to: generation, checkpoint: announcement.checkpoint)
                }
            }
            switch outcome {
            case .success:
                logger.info("serving the cluster's generation", metadata: ["steer.generation": "\(generation)", "steer.round": "\(round)"])
                try await metadata.put(reportKey, ClusterSwap.encode(ClusterSwap.Report(round: round, generation: generation, state: .active)))
            case .failure(let error):
                // Routers do not read from a replica on another generation than theirs; retried at the
                // next watch (a reconnect) or by hand (`swap` to this server).
                logger.error("cannot serve the cluster's committed generation", metadata: ["steer.generation": "\(generation)", "steer.error": "\(error)"])
                try await metadata.put(reportKey, ClusterSwap.encode(ClusterSwap.Report(round: round, generation: generation, state: .failed,
                                                                                      message: error.description)))
            }
        case .abort:
            let dropped = await onEngine { () throws(SteerError) in _ = engine.dropStaged(generation) }
            if case .success = dropped { logger.info("the cluster's swap was aborted", metadata: ["steer.generation": "\(generation)", "steer.round": "\(round)"]) }
        }
    }

    /// Margin after a round's deadline before a replica treats its coordinator as gone, in milliseconds.
    static let deadlineGraceMillis: Int64 = 1000

    /// Drops `generation` if it is staged once the round's deadline (plus `deadlineGraceMillis`) passed
    /// while the key still holds that round's `prepare`: its coordinator stopped (it aborts at its
    /// deadline), so no commit will come. A commit or abort changes the key's revision first.
    private func dropAtDeadline(_ generation: String, round: UInt64, deadlineMillis: Int64, metadata: KeyValue) {
        let engine = engine
        let logger = logger
        let queue = engineQueue
        Task {
            let wait = max(0, deadlineMillis - ClusterSwap.nowMillis()) + Self.deadlineGraceMillis
            try? await Task.sleep(for: .milliseconds(wait))
            guard let latest = try? await metadata.entry(ClusterSwap.generationKey), latest.revision == round else { return }
            let dropped = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                queue.async { continuation.resume(returning: engine.dropStaged(generation)) }
            }
            if dropped {
                logger.warning("dropped a staged generation whose round passed its deadline without a commit",
                               metadata: ["steer.generation": "\(generation)", "steer.round": "\(round)"])
            }
        }
    }

    /// Runs a blocking engine call on `engineQueue`.
    private func onEngine(_ body: @escaping @Sendable () throws(SteerError) -> Void) async -> Result<Void, SteerError> {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result<Void, SteerError>, Never>) in
            engineQueue.async {
                do throws(SteerError) {
                    try body()
                    continuation.resume(returning: .success(()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
    }
}
