import SteerCore
import SteerIndex

/// Resolved filters kept between requests, so a filter that many requests repeat (a facet, a
/// "available = true" leaf) is resolved to its match set once per store version instead of once per
/// request (docs/index.md, "Filtered search").
///
/// An entry holds the resolved filter (required and excluded internal ids) and, when it has required
/// ids, the sorted allowed labels the index scan takes. It is valid only at the store sequence it was
/// resolved at: any write (upsert, delete) moves the sequence and the entry is dropped on its next
/// lookup. The sequence is read before resolving (`ItemStore.replayedSequence`: none is filed while a
/// written batch is not yet replayed onto the in-memory postings), so an entry never claims a state
/// older than it holds.
///
/// Memory: at most `capacityBytes`, counted as `bytesPerID` per id held; the oldest entries are evicted
/// first; filters with fewer than `minimumIDs` ids are not kept (resolving them costs about as much as a
/// lookup). Capacity 0 turns the cache off.
///
/// Thread-safe: all state is `Locked`; resolving happens outside the lock (two requests may resolve the
/// same filter at once; the second store replaces the first).
public final class FilterCache: Sendable {
    /// What the request resolved: its filter plus the tag constraints a recommend adds.
    struct Key: Hashable, Sendable {
        var filter: TagFilter
        var extraRequired: [[String]]
        var extraExcluded: [String]
    }

    private struct Entry {
        var sequence: UInt64
        var resolved: ResolvedFilter
        var bytes: Int
        var stamp: UInt64
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var bytes = 0
        var clock: UInt64 = 0
        var hits = 0
        var misses = 0
    }

    /// Accounting per id held: a `Set<Int64>` slot with its load-factor slack, plus 8 bytes in the
    /// sorted allowed array.
    public static let bytesPerID = 24
    /// Filters resolving to fewer ids than this are not kept.
    public static let minimumIDs = 1024
    /// Default bound: 64 MiB, the match sets of about 2.8 million ids.
    public static let defaultCapacityBytes = 64 << 20

    private let capacity: Locked<Int>
    private let state = Locked(State())

    public init(capacityBytes: Int = FilterCache.defaultCapacityBytes) { capacity = Locked(max(0, capacityBytes)) }

    /// The bound in bytes; setting it drops every entry (0 turns the cache off).
    public var capacityBytes: Int {
        get { capacity.get() }
        set {
            capacity.withLock { $0 = max(0, newValue) }
            state.withLock { value in
                value.entries.removeAll()
                value.bytes = 0
            }
        }
    }

    /// Counters for `stats`: entries, bytes held, hits, misses.
    public var statistics: (entries: Int, bytes: Int, hits: Int, misses: Int) {
        state.withLock { ($0.entries.count, $0.bytes, $0.hits, $0.misses) }
    }

    /// The entry for `key` resolved at `sequence`, or nil (an entry of another sequence is dropped).
    func lookup(_ key: Key, sequence: UInt64) -> ResolvedFilter? {
        guard capacity.get() > 0 else { return nil }
        return state.withLock { value in
            guard var entry = value.entries[key] else {
                value.misses += 1
                return nil
            }
            guard entry.sequence == sequence else {
                value.entries[key] = nil
                value.bytes -= entry.bytes
                value.misses += 1
                return nil
            }
            value.clock += 1
            entry.stamp = value.clock
            value.entries[key] = entry
            value.hits += 1
            return entry.resolved
        }
    }

    /// Keeps `resolved` (with its sorted allowed labels computed here, outside the lock) for `key` at
    /// `sequence` when it is large enough and fits; evicts the least recently used entries to make room.
    /// - Returns: `resolved` with `allowed` filled in when it has required ids.
    func store(_ key: Key, sequence: UInt64, _ resolved: ResolvedFilter) -> ResolvedFilter {
        var prepared = resolved
        if prepared.allowed == nil { prepared.allowed = resolved.computeAllowed() }
        var ids = (resolved.required?.count ?? 0) + resolved.excluded.count
        var bytes = ids * Self.bytesPerID
        if let bits = resolved.requiredBits {
            // The bitset is shared (copy on write) between `requiredBits` and `allowed`.
            ids += prepared.allowed?.count ?? 0
            bytes += bits.words.count * 8
        }
        if let bits = resolved.excludedBits {
            ids += bits.count
            bytes += bits.words.count * 8
        }
        let capacityBytes = capacity.get()
        guard capacityBytes > 0, ids >= Self.minimumIDs, bytes <= capacityBytes else { return prepared }
        state.withLock { value in
            if let old = value.entries.removeValue(forKey: key) { value.bytes -= old.bytes }
            while value.bytes + bytes > capacityBytes, let oldest = value.entries.min(by: { $0.value.stamp < $1.value.stamp }) {
                value.entries[oldest.key] = nil
                value.bytes -= oldest.value.bytes
            }
            value.clock += 1
            value.entries[key] = Entry(sequence: sequence, resolved: prepared, bytes: bytes, stamp: value.clock)
            value.bytes += bytes
        }
        return prepared
    }
}
