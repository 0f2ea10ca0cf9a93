@testable import SteerIndex
import SteerCore
import Testing

@Suite struct RecallTests {
    /// recall@10 against brute force on seeded clustered data, each family at its defaults.
    @Test(arguments: [
        ("Flat", 1.0), ("HNSW32", 0.95), ("HNSW16,efC40", 0.92), ("IVF64,Flat", 0.88), ("IVF64,SQ8", 0.85), ("IVF64,PQ16", 0.7),
    ])
    func recallAt10(factory: String, minimum: Double) throws {
        let data = Fixtures.standard
        let index = try makeIndex(factory, data)
        let found = try index.search(data.queries, k: 10)
        let r = recall(found, Fixtures.standardTruthIP)
        #expect(r >= minimum, "\(factory) recall \(r)")
        #expect(found.allSatisfy { $0.count == 10 })
        for list in found { #expect(zip(list, list.dropFirst()).allSatisfy { $0.score >= $1.score }, "best first") }
    }

    /// Flat is exact for every metric: same labels and scores as brute force (l2 scores are negated
    /// squared distances; cosine normalises both sides).
    @Test(arguments: Metric.allCases)
    func flatEqualsBruteForce(metric: Metric) throws {
        let data = Fixtures.small
        let index = try makeIndex("Flat", data, metric: metric)
        let found = try index.search(data.queries, k: 10)
        var base = data.base, queries = data.queries
        if metric == .cosine {
            Vectors.normalizeRows(&base, dimension: data.dimension)
            Vectors.normalizeRows(&queries, dimension: data.dimension)
        }
        for q in 0..<data.queryCount {
            let query = Array(queries[(q * data.dimension)..<((q + 1) * data.dimension)])
            let truth = ExactSearch.topK(query: query, base: base, dimension: data.dimension, labels: data.labels, k: 10, metric: metric)
            #expect(found[q].map(\.label) == truth.map(\.label), "query \(q)")
            for (a, b) in zip(found[q], truth) { #expect(abs(a.score - b.score) <= 1e-4 * max(1, abs(b.score))) }
        }
    }

    @Test func l2ScoresAreNegatedSquaredDistances() throws {
        let index = try VectorIndex(spec: IndexSpec(parsing: "HNSW8"), dimension: 2, metric: .l2)
        try index.add([0, 0, 3, 4, 1, 1], labels: [1, 2, 3])
        let found = try index.search([0, 0], k: 3)[0]
        #expect(found == [ScoredLabel(label: 1, score: 0), ScoredLabel(label: 3, score: -2), ScoredLabel(label: 2, score: -25)])
    }
}
