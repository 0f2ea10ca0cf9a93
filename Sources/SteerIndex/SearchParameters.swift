import SteerCore

/// Restricts a search to a set of labels (for example the items carrying a tag).
///
/// Stored as an ascending array without duplicates, which the native scan checks by binary search.
public struct AllowedLabels: Sendable, Hashable {
    /// Ascending, no duplicates.
    public let sortedLabels: [Int64]

    /// - Parameter sortedLabels: ascending without duplicates; if they are not, they are sorted and
    ///   deduplicated (O(n log n)) instead of trusting the caller.
    public init(sortedLabels: [Int64]) {
        var ascending = true
        var index = 1
        while index < sortedLabels.count {
            if sortedLabels[index - 1] >= sortedLabels[index] { ascending = false; break }
            index += 1
        }
        self.sortedLabels = ascending ? sortedLabels : Self.normalise(sortedLabels)
    }

    /// Labels in any order, duplicates allowed.
    public init(_ labels: some Sequence<Int64>) {
        self.sortedLabels = Self.normalise(Array(labels))
    }

    private static func normalise(_ labels: [Int64]) -> [Int64] {
        var sorted = labels.sorted()
        var write = 0
        for read in 0..<sorted.count where read == 0 || sorted[read] != sorted[write - 1] {
            sorted[write] = sorted[read]
            write += 1
        }
        sorted.removeLast(sorted.count - write)
        return sorted
    }

    public var count: Int { sortedLabels.count }

    /// - Complexity: O(log count).
    public func contains(_ label: Int64) -> Bool {
        var low = 0, high = sortedLabels.count
        while low < high {
            let mid = (low + high) / 2
            if sortedLabels[mid] < label { low = mid + 1 } else { high = mid }
        }
        return low < sortedLabels.count && sortedLabels[low] == label
    }
}

/// Per-call search settings. Every field is optional; nil uses the index's defaults.
public struct SearchParameters: Sendable {
    /// IVF: lists probed (clamped to the list count); nil = `VectorIndex.defaultNprobe`. Must be >= 1.
    public var nprobe: Int?
    /// HNSW: level-0 beam width; nil = `VectorIndex.defaultEfSearch`; raised to k when smaller. Must be >= 1.
    public var efSearch: Int?
    /// Only these labels may be returned.
    public var allowed: AllowedLabels?
    /// Allowed sets up to this size are searched exactly; nil = `VectorIndex.exactFilterThreshold`.
    public var exactFilterThreshold: Int?

    public init(nprobe: Int? = nil, efSearch: Int? = nil, allowed: AllowedLabels? = nil, exactFilterThreshold: Int? = nil) {
        self.nprobe = nprobe
        self.efSearch = efSearch
        self.allowed = allowed
        self.exactFilterThreshold = exactFilterThreshold
    }
}
