/// One search result: the caller's int64 label and its score (higher is better).
public struct ScoredLabel: Sendable, Hashable {
    public var label: Int64
    public var score: Float
    public init(label: Int64, score: Float) {
        self.label = label
        self.score = score
    }
}

/// Brute-force search, the ground truth for recall measurements and the fallback for small candidate
/// sets.
public enum ExactSearch {
    /// The `k` best rows of `base` for one query.
    ///
    /// - Parameters:
    ///   - query: `dimension` floats.
    ///   - base: row-major rows of `dimension` floats.
    ///   - labels: one label per row; nil means the row index.
    ///   - allowed: if given, only rows whose label passes are considered.
    /// - Returns: at most `k` results, best first; ties broken by the lower label.
    /// - Complexity: O(rows × dimension + rows × log k).
    public static func topK(
        query: [Float], base: [Float], dimension: Int, labels: [Int64]? = nil, k: Int, metric: Metric,
        allowed: ((Int64) -> Bool)? = nil
    ) -> [ScoredLabel] {
        precondition(query.count == dimension && base.count % dimension == 0 && k >= 0)
        let rows = base.count / dimension
        var heap = TopK(k: k)
        query.withUnsafeBufferPointer { q in
            base.withUnsafeBufferPointer { b in
                for row in 0..<rows {
                    let label = labels?[row] ?? Int64(row)
                    if let allowed, !allowed(label) { continue }
                    let v = UnsafeBufferPointer(rebasing: b[(row * dimension)..<((row + 1) * dimension)])
                    heap.offer(ScoredLabel(label: label, score: metric.score(q, v)))
                }
            }
        }
        return heap.sorted()
    }

    /// recall@k: the share of `truth`'s labels found in `found`, averaged over queries.
    public static func recall(found: [[Int64]], truth: [[Int64]]) -> Double {
        let each = recallPerQuery(found: found, truth: truth)
        guard !each.isEmpty else { return 1 }
        return each.reduce(0, +) / Double(each.count)
    }

    /// The recall of each query (1 for a query whose truth is empty), in order.
    public static func recallPerQuery(found: [[Int64]], truth: [[Int64]]) -> [Double] {
        precondition(found.count == truth.count)
        return zip(found, truth).map { f, t in
            guard !t.isEmpty else { return 1 }
            let set = Set(f)
            return Double(t.filter { set.contains($0) }.count) / Double(t.count)
        }
    }
}

/// A bounded selection of the best `k` scored labels (a min-heap on score).
public struct TopK: Sendable {
    public let k: Int
    private var heap: [ScoredLabel] = []

    public init(k: Int) {
        self.k = k
        heap.reserveCapacity(max(0, k))
    }

    public var count: Int { heap.count }
    /// The worst score kept, or -infinity while fewer than k are kept.
    public var threshold: Float { heap.count < k ? -.infinity : heap[0].score }

    @inline(__always)
    private static func worse(_ a: ScoredLabel, _ b: ScoredLabel) -> Bool {
        a.score < b.score || (a.score == b.score && a.label > b.label)
    }

    public mutating func offer(_ item: ScoredLabel) {
        guard k > 0 else { return }
        if heap.count < k {
            heap.append(item)
            var i = heap.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                if Self.worse(heap[i], heap[parent]) { heap.swapAt(i, parent); i = parent } else { break }
            }
        } else if Self.worse(heap[0], item) {
            heap[0] = item
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && Self.worse(heap[l], heap[m]) { m = l }
                if r < heap.count && Self.worse(heap[r], heap[m]) { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
    }

    /// The kept items, best first.
    public func sorted() -> [ScoredLabel] { heap.sorted { Self.worse($1, $0) } }
}
