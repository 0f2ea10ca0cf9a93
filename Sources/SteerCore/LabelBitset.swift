/// A set of non-negative labels (internal ids) as one bit per label: bit `label % 64` of word `label / 64`.
///
/// The in-memory filter path (docs/index.md, "Filtered search") resolves a filter over declared payload
/// indexes to one of these and hands it to the index scan, which tests a label in O(1).
///
/// Layout: `words` is as long as the highest label inserted needs (never longer than
/// `maxWords`); labels at or past `words.count × 64` are absent. Set operations accept operands of
/// different lengths (missing words are zero). Written by hand: no available package has a plain,
/// `Sendable` bitset whose words can be handed to C.
///
/// A value type (copy on write); not shared between threads while mutated.
public struct LabelBitset: Sendable, Hashable {
    /// Largest label a bitset holds plus one, in 64-bit words: 2^31 labels (256 MiB), above any store
    /// this server opens (internal ids are dense and allocated one per item written).
    public static let maxWords = 1 << 25

    public private(set) var words: [UInt64]

    /// The empty set, with room for labels below `capacity` without growing.
    public init(capacity: Int = 0) {
        words = [UInt64](repeating: 0, count: Self.wordCount(forLabels: capacity))
    }

    /// The set of `labels` (negative labels and labels past `maxWords × 64` are ignored).
    public init(_ labels: some Sequence<Int64>, capacity: Int = 0) {
        self.init(capacity: capacity)
        for label in labels { insert(label) }
    }

    /// Words needed for labels `0..<labels`, capped at `maxWords`.
    public static func wordCount(forLabels labels: Int) -> Int { min(maxWords, max(0, (labels + 63) / 64)) }

    /// Number of labels in the set (a popcount over the words).
    public var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    public var isEmpty: Bool { !words.contains { $0 != 0 } }

    /// - Complexity: O(1).
    @inlinable
    public func contains(_ label: Int64) -> Bool {
        guard label >= 0 else { return false }
        let word = Int(label >> 6)
        return word < words.count && (words[word] >> UInt64(label & 63)) & 1 == 1
    }

    /// Adds `label`, growing the words as needed; ignores a negative label or one past `maxWords × 64`.
    public mutating func insert(_ label: Int64) {
        guard label >= 0, label < Int64(Self.maxWords) * 64 else { return }
        let word = Int(label >> 6)
        if word >= words.count { words.append(contentsOf: repeatElement(0, count: word + 1 - words.count)) }
        words[word] |= 1 << UInt64(label & 63)
    }

    public mutating func remove(_ label: Int64) {
        guard label >= 0 else { return }
        let word = Int(label >> 6)
        if word < words.count { words[word] &= ~(1 << UInt64(label & 63)) }
    }

    /// self ∩ other.
    public mutating func formIntersection(_ other: LabelBitset) {
        let shared = min(words.count, other.words.count)
        words.withUnsafeMutableBufferPointer { mine in
            other.words.withUnsafeBufferPointer { theirs in
                for index in 0..<shared { mine[index] &= theirs[index] }
                for index in shared..<mine.count { mine[index] = 0 }
            }
        }
    }

    /// self ∪ other.
    public mutating func formUnion(_ other: LabelBitset) {
        if other.words.count > words.count { words.append(contentsOf: repeatElement(0, count: other.words.count - words.count)) }
        words.withUnsafeMutableBufferPointer { mine in
            other.words.withUnsafeBufferPointer { theirs in
                for index in 0..<theirs.count { mine[index] |= theirs[index] }
            }
        }
    }

    /// self − other.
    public mutating func subtract(_ other: LabelBitset) {
        let shared = min(words.count, other.words.count)
        words.withUnsafeMutableBufferPointer { mine in
            other.words.withUnsafeBufferPointer { theirs in
                for index in 0..<shared { mine[index] &= ~theirs[index] }
            }
        }
    }

    /// The labels, ascending. - Complexity: O(words + count).
    public var labels: [Int64] {
        var result: [Int64] = []
        result.reserveCapacity(count)
        forEach { result.append($0) }
        return result
    }

    /// Calls `body` with each label, ascending.
    public func forEach(_ body: (Int64) throws -> Void) rethrows {
        for (index, word) in words.enumerated() where word != 0 {
            var rest = word
            while rest != 0 {
                try body(Int64(index) << 6 | Int64(rest.trailingZeroBitCount))
                rest &= rest - 1
            }
        }
    }

    /// Drops trailing zero words (two sets with the same labels compare equal after it).
    public mutating func trim() {
        while let last = words.last, last == 0 { words.removeLast() }
    }

    /// Runs `body` with the words (for the native scan).
    public func withUnsafeWords<R>(_ body: (UnsafeBufferPointer<UInt64>) throws -> R) rethrows -> R {
        try words.withUnsafeBufferPointer(body)
    }

    /// Sets the bit of every label in `range` whose `test(position)` is true: `test` sees offsets into the
    /// caller's per-label column (label = position). Used to build a set from a column in one pass.
    public static func build(labels: Int, _ test: (Int) -> Bool) -> LabelBitset {
        var result = LabelBitset(capacity: labels)
        let limit = min(labels, result.words.count * 64)
        result.words.withUnsafeMutableBufferPointer { words in
            var position = 0
            while position < limit {
                var word: UInt64 = 0
                let end = min(limit, position + 64)
                var bit: UInt64 = 0
                while position < end {
                    if test(position) { word |= 1 << bit }
                    bit += 1
                    position += 1
                }
                words[(position - 1) >> 6] = word
            }
        }
        return result
    }
}
