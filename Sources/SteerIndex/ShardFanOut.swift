import Foundation
import Synchronization

/// Decides whether a multi-shard search may use other cores for its shards (`IndexGeneration.search`).
///
/// Every generation search in the process counts itself in `busy` while it runs (one thread), and a
/// multi-shard search asks for up to `shards - 1` more threads; it gets only what keeps `busy` at most
/// `cores`. So at sparse traffic (idle cores) one request's shards are searched side by side and its
/// latency drops towards one shard's, while at saturation (every core already searching) each search
/// runs its shards one after another on its own thread and no core is oversubscribed.
///
/// Thread safety: all state is one atomic counter (compare-and-exchange); `shared` is used by every
/// generation unless a test passes its own.
public final class ShardFanOut: Sendable {
    /// The gate of the process: `cores` = the active processor count.
    public static let shared = ShardFanOut(cores: ProcessInfo.processInfo.activeProcessorCount)

    /// Threads the gate lets searches occupy at once.
    public let cores: Int
    /// Threads searching now (each search's own thread plus the extra threads it was granted).
    private let busy = Atomic<Int>(0)
    /// Searches that were granted at least one extra thread (a test hook and a metric).
    private let fannedOut = Atomic<Int>(0)

    public init(cores: Int) {
        self.cores = max(1, cores)
    }

    /// How many searches have fanned out so far.
    public var fanOutCount: Int { fannedOut.load(ordering: .relaxed) }

    /// Counts a search in and grants it up to `wanted` extra threads (0 when no core is idle).
    func enter(wanted: Int) -> Int {
        var current = busy.load(ordering: .relaxed)
        while true {
            let grant = max(0, min(wanted, cores - current - 1))
            let (exchanged, actual) = busy.compareExchange(expected: current, desired: current + 1 + grant, ordering: .relaxed)
            if exchanged {
                if grant > 0 { fannedOut.add(1, ordering: .relaxed) }
                return grant
            }
            current = actual
        }
    }

    /// Counts a search out with the extra threads it was granted.
    func leave(granted: Int) {
        busy.subtract(1 + granted, ordering: .relaxed)
    }
}
