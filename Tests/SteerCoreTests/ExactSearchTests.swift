import Testing
import SteerCore

@Suite struct ExactSearchTests {
    @Test func topKMatchesFullSortForEveryMetric() {
        let data = SyntheticVectors(count: 500, dimension: 8, clusters: 5, spread: 0.4, normalize: false, seed: 3)
        let query = SyntheticVectors(count: 1, dimension: 8, seed: 99).row(0)
        for metric in Metric.allCases {
            let got = ExactSearch.topK(query: query, base: data.values, dimension: 8, k: 10, metric: metric)
            var all: [ScoredLabel] = []
            query.withUnsafeBufferPointer { q in
                data.values.withUnsafeBufferPointer { b in
                    for row in 0..<500 {
                        let v = UnsafeBufferPointer(rebasing: b[(row * 8)..<((row + 1) * 8)])
                        all.append(ScoredLabel(label: Int64(row), score: metric.score(q, v)))
                    }
                }
            }
            all.sort { $0.score > $1.score || ($0.score == $1.score && $0.label < $1.label) }
            #expect(got == Array(all.prefix(10)), "metric \(metric)")
        }
    }

    @Test func allowedFilterAndShortResults() {
        let data = SyntheticVectors(count: 100, dimension: 4, seed: 1)
        let got = ExactSearch.topK(query: data.row(0), base: data.values, dimension: 4, k: 10, metric: .innerProduct) { $0 % 25 == 0 }
        #expect(got.map(\.label).sorted() == [0, 25, 50, 75])
        #expect(got.first?.label == 0)
    }

    @Test func recallCountsOverlap() {
        #expect(ExactSearch.recall(found: [[1, 2, 3, 4]], truth: [[1, 2, 9, 8]]) == 0.5)
        #expect(ExactSearch.recall(found: [[1], [2]], truth: [[1], [3]]) == 0.5)
    }

    @Test func seededDataIsReproducibleAndNormalised() {
        let a = SyntheticVectors(count: 10, dimension: 16, seed: 42)
        let b = SyntheticVectors(count: 10, dimension: 16, seed: 42)
        let c = SyntheticVectors(count: 10, dimension: 16, seed: 43)
        #expect(a.values == b.values)
        #expect(a.values != c.values)
        let norm = a.row(3).reduce(0) { $0 + $1 * $1 }
        #expect(abs(norm - 1) < 1e-5)
    }

    @Test func requireFiniteNamesTheIndex() {
        #expect(throws: SteerError(.invalidRequest, "vector[2] is not a finite number")) {
            try Vectors.requireFinite([1, 2, .nan])
        }
    }

    /// The contiguous fast path and the element-by-element path (a collection without contiguous storage)
    /// refuse the same values and name the same index.
    @Test(arguments: [Float.nan, -.nan, .infinity, -.infinity, 1.5e15, -1.5e15, .greatestFiniteMagnitude])
    func requireFiniteRefusesEveryBadComponentOnBothPaths(bad: Float) {
        var values = [Float](repeating: 0.25, count: 130)
        values[129] = bad
        let contiguous = #expect(throws: SteerError.self) { try Vectors.requireFinite(values, field: "q") }
        let lazy = #expect(throws: SteerError.self) { try Vectors.requireFinite(values.lazy.map { $0 }, field: "q") }
        #expect(contiguous?.message.hasPrefix("q[129] ") == true)
        #expect(lazy?.message == contiguous?.message)
        #expect(throws: Never.self) { try Vectors.requireFinite(values.prefix(129), field: "q") }
        #expect(throws: Never.self) { try Vectors.requireFinite([Float(1e15), -1e15, 0]) }
    }
}
