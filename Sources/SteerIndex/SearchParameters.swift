import SteerCore

/// Restricts a search to a set of labels (for example the items carrying a tag).
///
/// Stored as an ascending array without duplicates, which the native scan checks by binary search, or
/// as a `LabelBitset` (the in-memory filter path), which it checks with one bit test.
public struct AllowedLabels: Sendable, Hashable {
    private let sorted: [Int64]?
    /// The bitset form, when built from one.
    public let bitset: LabelBitset?
    /// Number of allowed labels.
    public let count: Int

    /// Ascending, no duplicates. For the bitset form it is computed on each call (O(words + count)).
    public var sortedLabels: [Int64] { sorted ?? bitset?.labels ?? [] }

    /// - Parameter bitset: the allowed labels, one bit each.
    public init(bitset: LabelBitset) {
        self.sorted = nil
        self.bitset = bitset
        self.count = bitset.count
    }

    public init(sortedLabels: [Int64]) {
        var ascending = true
        var index = 1
        while index < sortedLabels.count {
            if sortedLabels[index - 1] >= sortedLabels[index] { ascending = false; break }
            index += 1
        }
        self.sorted = ascending ? sortedLabels : Self.normalise(sortedLabels)
        self.bitset = nil
        self.count = self.sorted?.count ?? 0
    }

    /// Labels in any order, duplicates allowed.
    public init(_ labels: some Sequence<Int64>) {
        self.sorted = Self.normalise(Array(labels))
        self.bitset = nil
        self.count = self.sorted?.count ?? 0
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

    /// - Complexity: O(log count), O(1) for the bitset form.
    public func contains(_ label: Int64) -> Bool {
        if let bitset { return bitset.contains(label) }
        let sortedLabels = self.sorted ?? []
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
