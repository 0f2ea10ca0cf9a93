import Foundation
import SteerCore
import SteerStore
import Testing
@testable import SteerEngine

private func temporaryDirectory() -> String { NSTemporaryDirectory() + "steer-examples-test-" + UUID().uuidString }

/// `count` random items of `dimension` floats with int ids 0…count-1; every third carries tag "x".
private func catalogue(count: Int, dimension: Int, seed: UInt64) -> [ItemInput] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { index in
        ItemInput(id: .int(Int64(index)), vector: (0..<dimension).map { _ in Float.random(in: -1...1, using: &generator) },
                  tags: index % 3 == 0 ? ["x"] : [])
    }
}

/// The brute-force ranking: every item not excluded, scored by `score`, best first, ties by id.
private func bruteForce(_ items: [ItemInput], k: Int, excluding excluded: Set<ItemID>, where keep: (ItemInput) -> Bool = { _ in true },
                        score: ([Float]) -> Float) -> [ItemID] {
    items.filter { !excluded.contains($0.id) && keep($0) }
        .map { ($0.id, score($0.vector)) }
        .sorted { $0.1 != $1.1 ? $0.1 > $1.1 : "\($0.0)" < "\($1.0)" }
        .prefix(k).map(\.0)
}

private func dot(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

private func normalized(_ vector: [Float]) -> [Float] {
    let norm = dot(vector, vector).squareRoot()
    return norm > 0 ? vector.map { $0 / norm } : vector
}

@Suite struct ExampleRecommendTests {
    private func withEngine(metric: Metric = .innerProduct, _ body: (RetrievalEngine, [ItemInput]) throws -> Void) throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 8, metric: metric, syncWrites: false))
        defer { try? engine.close() }
        let items = catalogue(count: 300, dimension: 8, seed: 7)
        _ = try engine.upsert(items)
        try body(engine, items)
    }

    @Test(arguments: [Metric.innerProduct, Metric.cosine, Metric.l2])
    func averageVectorEqualsBruteForce(metric: Metric) throws {
        try withEngine(metric: metric) { engine, items in
            var generator = SeededGenerator(seed: 11)
            for round in 0..<8 {
                let picked = (0..<5).map { _ in Int.random(in: 0..<300, using: &generator) }
                let positive = Array(Set(picked.prefix(3))).sorted()
                let negative = round % 2 == 0 ? [] : Array(Set(picked.suffix(2)).subtracting(positive)).sorted()
                var request = RecommendRequest(history: [], k: 10)
                request.positive = positive.map { .int(Int64($0)) }
                request.negative = negative.map { .int(Int64($0)) }
                let hits = try engine.recommend(request).hits.map(\.id)
                let prepare: ([Float]) -> [Float] = { metric == .cosine ? normalized($0) : $0 }
                let query = RetrievalEngine.averageVector(positives: positive.map { prepare(items[$0].vector) },
                                                          negatives: negative.map { prepare(items[$0].vector) }, dimension: 8)
                // Qdrant's formula, written out: 2·mean(P) − mean(N).
                let mean = { (rows: [Int]) -> [Float] in (0..<8).map { d in rows.map { prepare(items[$0].vector)[d] }.reduce(0, +) / Float(rows.count) } }
                let expectedQuery = negative.isEmpty ? mean(positive) : zip(mean(positive), mean(negative)).map { 2 * $0 - $1 }
                #expect(zip(query, expectedQuery).allSatisfy { abs($0 - $1) < 1e-5 })
                let excluded = Set((positive + negative).map { ItemID.int(Int64($0)) })
                let expected = bruteForce(items, k: 10, excluding: excluded) { vector in
                    switch metric {
                    case .innerProduct: return dot(query, vector)
                    case .cosine: return dot(normalized(query), normalized(vector))
                    case .l2: return -zip(query, vector).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
                    }
                }
                #expect(hits == expected, "round \(round)")
            }
        }
    }

    @Test func bestScoreEqualsBruteForceWithAndWithoutNegativesAndFilters() throws {
        try withEngine { engine, items in
            var generator = SeededGenerator(seed: 12)
            for round in 0..<8 {
                let picked = Array(Set((0..<6).map { _ in Int.random(in: 0..<300, using: &generator) })).sorted()
                let positive = Array(picked.prefix(3))
                let negative = round % 2 == 0 ? [] : Array(picked.dropFirst(3))
                var request = RecommendRequest(history: [], k: 10, filter: round >= 4 ? TagFilter(tagsAny: ["x"]) : TagFilter())
                request.positive = positive.map { .int(Int64($0)) }
                request.negative = negative.map { .int(Int64($0)) }
                request.strategy = .bestScore
                let hits = try engine.recommend(request)
                let excluded = Set((positive + negative).map { ItemID.int(Int64($0)) })
                let expected = bruteForce(items, k: 10, excluding: excluded, where: { round < 4 || $0.tags.contains("x") }) { vector in
                    let p = positive.map { dot(items[$0].vector, vector) }.max()!
                    guard let n = negative.map({ dot(items[$0].vector, vector) }).max() else { return p }
                    return p > n ? p : -(n * n)
                }
                #expect(hits.hits.map(\.id) == expected, "round \(round)")
                // The reported scores are the formula's.
                if let first = hits.hits.first, case .int(let id) = first.id {
                    let p = positive.map { dot(items[$0].vector, items[Int(id)].vector) }.max()!
                    let n = negative.map { dot(items[$0].vector, items[Int(id)].vector) }.max()
                    let expectedScore = n.map { p > $0 ? p : -($0 * $0) } ?? p
                    #expect(abs(first.score - expectedScore) < 1e-4)
                }
            }
        }
    }

    @Test func theEncodedHistoryIsOneMorePositiveAndIsExcluded() throws {
        try withEngine { engine, items in
            // The mean encoder's query from history [5, 6] joins positive [7].
            var request = RecommendRequest(history: [.int(5), .int(6)], k: 10)
            request.positive = [.int(7)]
            let hits = try engine.recommend(request).hits.map(\.id)
            let historyMean = (0..<8).map { (items[5].vector[$0] + items[6].vector[$0]) / 2 }
            let query = (0..<8).map { (historyMean[$0] + items[7].vector[$0]) / 2 }
            #expect(hits == bruteForce(items, k: 10, excluding: [.int(5), .int(6), .int(7)]) { dot(query, $0) })
            // Only negatives and nothing else: no positive at all.
            var negativesOnly = RecommendRequest(history: [], k: 10)
            negativesOnly.negative = [.int(1)]
            let error = #expect(throws: SteerError.self) { try engine.recommend(negativesOnly) }
            #expect(error?.code == .invalidRequest)
            var unknown = RecommendRequest(history: [], k: 10)
            unknown.positive = [.int(1), .string("nope")]
            let missing = #expect(throws: SteerError.self) { try engine.recommend(unknown) }
            #expect(missing?.code == .notFound && missing?.message.contains("nope") == true)
        }
    }

    @Test func recommendByUserReadsTheStoredHistory() throws {
        try withEngine { engine, items in
            let result = try engine.recordEvents([
                UserEvent(user: .string("u"), item: .int(3), kind: "view", timestampMillis: 2),
                UserEvent(user: .string("u"), item: .int(9), kind: "view", timestampMillis: 1),
                UserEvent(user: .string("u"), item: .int(12345), kind: "view", timestampMillis: 3),
            ])
            #expect(result.recorded == 3 && result.unknownItems == [.int(12345)])
            var request = RecommendRequest(history: [.int(4)], k: 10)
            request.user = .string("u")
            request.maxHistory = 2
            // Stored (oldest first): 9, 3, 12345; the two most recent, then the request's own history.
            let recommendation = try engine.recommend(request)
            #expect(recommendation.unknownHistory == [.int(12345)])
            let query = (0..<8).map { (items[3].vector[$0] + items[4].vector[$0]) / 2 }
            // 9 is excluded too (stored), though outside max_history.
            #expect(recommendation.hits.map(\.id) == bruteForce(items, k: 10, excluding: [.int(9), .int(3), .int(4)]) { dot(query, $0) })
        }
    }
}
