import Foundation
import SteerCore
import SteerIndex
import SteerStore
import Testing
@testable import SteerEngine

private func temporaryDirectory() -> String {
    NSTemporaryDirectory() + "steer-engine-test-" + UUID().uuidString
}

private let tagPool = ["comedy", "horror", "drama", "action", "romance"]

/// A random catalogue: `count` items of `dimension` floats, ids alternate int and string, 0-2 tags each.
private func catalogue(count: Int, dimension: Int, seed: UInt64) -> [ItemInput] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { index in
        let id: ItemID = index % 2 == 0 ? .int(Int64(index)) : .string("item-\(index)")
        let vector = (0..<dimension).map { _ in Float.random(in: -1...1, using: &generator) }
        let tags = tagPool.filter { _ in Int.random(in: 0..<4, using: &generator) == 0 }
        return ItemInput(id: id, vector: vector, title: "title \(index)", tags: tags)
    }
}

/// Ground truth: brute force over the catalogue with a predicate.
private func bruteForce(_ items: [ItemInput], query: [Float], k: Int, metric: Metric, where predicate: (ItemInput) -> Bool = { _ in true }) -> [ItemID] {
    let kept = items.filter(predicate)
    let base = kept.flatMap(\.vector)
    let top = ExactSearch.topK(query: query, base: base, dimension: query.count, k: k, metric: metric)
    return top.map { kept[Int($0.label)].id }
}

/// Stub encoder with fixed clauses, for constraint modes.
private struct FixedEncoder: QueryEncoder {
    let dimension: Int
    let vector: [Float]
    let base: [Float]
    let clauses: [QueryClause]
    var hybrid: [Float]? = nil

    func encode(history: [ItemID], prompt: String?) throws(SteerError) -> EncodedQuery {
        EncodedQuery(vector: vector, baseVector: base, hybridVector: hybrid, clauses: clauses, unknownHistory: [])
    }
}

@Suite struct RetrievalEngineTests {
    @Test func searchEqualsBruteForceWithAndWithoutTagFilters() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 8, syncWrites: false))
        defer { try? engine.close() }
        let items = catalogue(count: 400, dimension: 8, seed: 1)
        #expect(try engine.upsert(items) == 400)
        var generator = SeededGenerator(seed: 2)
        for _ in 0..<10 {
            let query = (0..<8).map { _ in Float.random(in: -1...1, using: &generator) }
            let plain = try engine.search([query], options: SearchOptions(k: 10))[0]
            #expect(plain.map(\.id) == bruteForce(items, query: query, k: 10, metric: .innerProduct))
            #expect(plain.first?.title?.hasPrefix("title ") == true)

            let any = try engine.search([query], options: SearchOptions(k: 10, filter: TagFilter(tagsAny: ["comedy", "drama"])))[0]
            #expect(any.map(\.id) == bruteForce(items, query: query, k: 10, metric: .innerProduct) { $0.tags.contains("comedy") || $0.tags.contains("drama") })

            let none = try engine.search([query], options: SearchOptions(k: 10, filter: TagFilter(tagsNone: ["horror"])))[0]
            #expect(none.map(\.id) == bruteForce(items, query: query, k: 10, metric: .innerProduct) { !$0.tags.contains("horror") })

            let both = try engine.search([query], options: SearchOptions(k: 10, filter: TagFilter(tagsAny: ["action"], tagsNone: ["romance"])))[0]
            #expect(both.map(\.id) == bruteForce(items, query: query, k: 10, metric: .innerProduct) { $0.tags.contains("action") && !$0.tags.contains("romance") })

            let groups = try engine.search([query], options: SearchOptions(k: 10, filter: TagFilter(tagsAny: ["comedy", "drama"], tagGroups: [["action", "horror"]])))[0]
            #expect(groups.map(\.id) == bruteForce(items, query: query, k: 10, metric: .innerProduct) {
                ($0.tags.contains("comedy") || $0.tags.contains("drama")) && ($0.tags.contains("action") || $0.tags.contains("horror"))
            })
        }
        let unknownTag = try engine.search([items[0].vector], options: SearchOptions(k: 5, filter: TagFilter(tagsAny: ["nope"])))[0]
        #expect(unknownTag.isEmpty)
    }

    @Test func batchSearchAnswersEveryQueryAndNamesTheBadOne() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, syncWrites: false))
        defer { try? engine.close() }
        let items = catalogue(count: 50, dimension: 4, seed: 3)
        _ = try engine.upsert(items)
        let results = try engine.search([items[0].vector, items[1].vector], options: SearchOptions(k: 3))
        #expect(results.count == 2)
        #expect(results[0].map(\.id) == bruteForce(items, query: items[0].vector, k: 3, metric: .innerProduct))
        #expect {
            _ = try engine.search([items[0].vector, [1, 2]], options: SearchOptions(k: 3))
        } throws: { ($0 as? SteerError)?.code == .dimensionMismatch && ($0 as? SteerError)?.message.contains("vectors[1]") == true }
    }

    @Test func upsertReplaceAndDeleteAreVisibleToTheNextSearch() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 3, metric: .l2, syncWrites: false))
        defer { try? engine.close() }
        _ = try engine.upsert([ItemInput(id: .string("a"), vector: [0, 0, 0]), ItemInput(id: .int(2), vector: [5, 5, 5])])
        #expect(try engine.search([[4, 4, 4]], options: SearchOptions(k: 1))[0].first?.id == .int(2))
        _ = try engine.upsert([ItemInput(id: .int(2), vector: [-9, -9, -9], tags: ["moved"])])
        let moved = try engine.search([[4, 4, 4]], options: SearchOptions(k: 2))[0]
        #expect(moved.map(\.id) == [.string("a"), .int(2)])
        #expect(moved[1].tags == ["moved"])
        #expect(moved[1].score == -(13 * 13 * 3))
        #expect(try engine.delete([.string("a"), .string("missing")]) == 1)
        #expect(try engine.search([[4, 4, 4]], options: SearchOptions(k: 5))[0].map(\.id) == [.int(2)])
        #expect(try engine.get([.string("a"), .int(2)]).map { $0?.id } == [nil, .int(2)])
        #expect(try engine.get([.int(2)])[0]?.vector == [-9, -9, -9])
        #expect(engine.stats().items == 1 && engine.stats().indexed == 1)
    }

    @Test func rejectsWrongDimensionsAndNonFiniteValuesWithoutWriting() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 3, syncWrites: false))
        defer { try? engine.close() }
        #expect {
            _ = try engine.upsert([ItemInput(id: .int(1), vector: [1, 2, 3]), ItemInput(id: .int(2), vector: [1, 2])])
        } throws: { ($0 as? SteerError)?.code == .dimensionMismatch && ($0 as? SteerError)?.message.contains("items[1].vector") == true }
        #expect(throws: SteerError.self) { _ = try engine.upsert([ItemInput(id: .int(1), vector: [1, .nan, 3])]) }
        #expect(engine.stats().items == 0)
    }

    @Test func restartPreservesItemsAndResultsAndChecksTheConfig() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let items = catalogue(count: 120, dimension: 6, seed: 4)
        let query = items[7].vector
        let before: [Hit]
        do {
            let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 6, metric: .cosine, syncWrites: false))
            _ = try engine.upsert(items)
            _ = try engine.delete([items[0].id, items[1].id])
            before = try engine.search([query], options: SearchOptions(k: 10))[0]
            try engine.close()
            #expect(throws: SteerError.self) { _ = try engine.search([query], options: SearchOptions(k: 1)) }
        }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, syncWrites: false))
        defer { try? engine.close() }
        #expect(engine.stats().items == 118 && engine.stats().indexed == 118 && engine.stats().metric == .cosine)
        #expect(try engine.search([query], options: SearchOptions(k: 10))[0] == before)
        #expect(throws: SteerError.self) { _ = try RetrievalEngine(configuration: .init(dataDirectory: directory + "-new")) }
        try? FileManager.default.removeItem(atPath: directory + "-new")
    }

    @Test func conflictingDimensionOnReopenIsRejected() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, syncWrites: false)).close()
        #expect {
            _ = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 5, syncWrites: false))
        } throws: { ($0 as? SteerError)?.code == .dimensionMismatch }
    }

    @Test func recommendWithTheMeanEncoderExcludesHistoryAndReportsUnknownIDs() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 5, syncWrites: false))
        defer { try? engine.close() }
        let items = catalogue(count: 200, dimension: 5, seed: 5)
        _ = try engine.upsert(items)
        let history = [items[3].id, items[4].id, .string("ghost")]
        let encoded = try engine.encode(RecommendRequest(history: history))
        let mean = (0..<5).map { (items[3].vector[$0] + items[4].vector[$0]) / 2 }
        #expect(zip(encoded.vector, mean).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(encoded.unknownHistory == [.string("ghost")])

        let result = try engine.recommend(RecommendRequest(history: history, k: 10))
        #expect(result.unknownHistory == [.string("ghost")])
        #expect(result.hits.map(\.id) == bruteForce(items, query: encoded.vector, k: 10, metric: .innerProduct) { $0.id != items[3].id && $0.id != items[4].id })
        let withHistory = try engine.recommend(RecommendRequest(history: history, k: 200, excludeHistory: false))
        #expect(withHistory.hits.contains { $0.id == items[3].id })
        #expect {
            _ = try engine.recommend(RecommendRequest(history: [.string("ghost")]))
        } throws: { ($0 as? SteerError)?.code == .notFound }
    }

    @Test func hybridAndHardConstraintsHaveZeroViolations() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let steered: [Float] = [1, 0, 0, 0]
        let base: [Float] = [0, 1, 0, 0]
        let clauses = [QueryClause(text: "comedies", polarity: .positive, tags: ["comedy"]),
                       QueryClause(text: "no horror", polarity: .negative, tags: ["horror"])]
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, syncWrites: false) { _, _, dimension in
            FixedEncoder(dimension: dimension, vector: steered, base: base, clauses: clauses)
        })
        defer { try? engine.close() }
        let items = catalogue(count: 300, dimension: 4, seed: 6)
        _ = try engine.upsert(items)
        let soft = try engine.recommend(RecommendRequest(history: [items[0].id], k: 10, excludeHistory: false))
        #expect(soft.hits.map(\.id) == bruteForce(items, query: steered, k: 10, metric: .innerProduct))
        #expect(soft.clauses == clauses)
        let allowed: (ItemInput) -> Bool = { $0.tags.contains("comedy") && !$0.tags.contains("horror") }
        let hybrid = try engine.recommend(RecommendRequest(history: [items[0].id], k: 10, excludeHistory: false, constraints: .hybrid))
        #expect(hybrid.hits.map(\.id) == bruteForce(items, query: steered, k: 10, metric: .innerProduct, where: allowed))
        #expect(hybrid.hits.allSatisfy { $0.tags.contains("comedy") && !$0.tags.contains("horror") })
        let hard = try engine.recommend(RecommendRequest(history: [items[0].id], k: 10, excludeHistory: false, constraints: .hard))
        #expect(hard.hits.map(\.id) == bruteForce(items, query: base, k: 10, metric: .innerProduct, where: allowed))
        let filtered = try engine.recommend(RecommendRequest(history: [items[0].id], k: 10, excludeHistory: false, constraints: .hybrid,
                                                             filter: TagFilter(tagsNone: ["drama"])))
        #expect(filtered.hits.map(\.id) == bruteForce(items, query: steered, k: 10, metric: .innerProduct) { allowed($0) && !$0.tags.contains("drama") })
    }

    @Test func hybridSearchesWithTheEncodersHybridVector() throws {
        // DPR with a tuned blend β gives hybrid its own vector (h⁺ + β · λ · Σ Δ): soft, hybrid and hard differ
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (steered, base, blended): ([Float], [Float], [Float]) = ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0])
        let clauses = [QueryClause(text: "comedies", polarity: .positive, tags: ["comedy"])]
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, syncWrites: false) { _, _, dimension in
            FixedEncoder(dimension: dimension, vector: steered, base: base, clauses: clauses, hybrid: blended)
        })
        defer { try? engine.close() }
        let items = catalogue(count: 300, dimension: 4, seed: 7)
        _ = try engine.upsert(items)
        let comedy: (ItemInput) -> Bool = { $0.tags.contains("comedy") }
        let hybrid = try engine.recommend(RecommendRequest(history: [items[0].id], k: 10, excludeHistory: false, constraints: .hybrid))
        #expect(hybrid.hits.map(\.id) == bruteForce(items, query: blended, k: 10, metric: .innerProduct, where: comedy))
        #expect(hybrid.hits.map(\.id) != bruteForce(items, query: steered, k: 10, metric: .innerProduct, where: comedy))
        let soft = try engine.recommend(RecommendRequest(history: [items[0].id], k: 10, excludeHistory: false))
        #expect(soft.hits.map(\.id) == bruteForce(items, query: steered, k: 10, metric: .innerProduct))
        let hard = try engine.recommend(RecommendRequest(history: [items[0].id], k: 10, excludeHistory: false, constraints: .hard))
        #expect(hard.hits.map(\.id) == bruteForce(items, query: base, k: 10, metric: .innerProduct, where: comedy))
    }

    @Test func withoutAnEncoderRecommendIsUnavailable() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 2, syncWrites: false) { _, _, _ in nil })
        defer { try? engine.close() }
        _ = try engine.upsert([ItemInput(id: .int(1), vector: [1, 0])])
        #expect {
            _ = try engine.recommend(RecommendRequest(history: [.int(1)]))
        } throws: { ($0 as? SteerError)?.code == .unavailable }
    }

    @Test func concurrentSearchesDuringWritesNeverFail() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, syncWrites: false))
        defer { try? engine.close() }
        let items = catalogue(count: 400, dimension: 4, seed: 8)
        _ = try engine.upsert(Array(items[0..<100]))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for start in stride(from: 100, to: 400, by: 50) { _ = try engine.upsert(Array(items[start..<(start + 50)])) }
                _ = try engine.delete(items[0..<50].map(\.id))
            }
            for _ in 0..<3 {
                group.addTask {
                    for index in 0..<200 { _ = try engine.search([items[index].vector], options: SearchOptions(k: 5)) }
                }
            }
            try await group.waitForAll()
        }
        #expect(engine.stats().items == 350 && engine.stats().indexed == 350)
    }

    @Test func reopenLoadsTheSavedIndexAndReplaysLaterWrites() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let items = catalogue(count: 60, dimension: 4, seed: 9)
        do {
            let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, indexSpec: "HNSW16", syncWrites: false))
            _ = try engine.upsert(Array(items[0..<40]))
            try engine.close()
        }
        #expect(FileManager.default.fileExists(atPath: directory + "/index/index.bin"))
        do {
            // Writes after the save, then the process "dies": the store is closed, the index is not saved.
            let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, syncWrites: false))
            _ = try engine.upsert(Array(items[40..<60]))
            _ = try engine.delete([items[0].id, items[45].id])
            engine.store.close()
        }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, syncWrites: false))
        defer { try? engine.close() }
        #expect(engine.stats().indexSpec == "HNSW16,efC100" || engine.stats().indexSpec.hasPrefix("HNSW16"))
        #expect(engine.stats().indexed == 58 && engine.stats().items == 58)
        let found = try engine.search([items[50].vector], options: SearchOptions(k: 1))[0]
        #expect(found.first?.id == items[50].id)
        let all = try engine.search([items[0].vector], options: SearchOptions(k: 60))[0].map(\.id)
        #expect(!all.contains(items[0].id) && !all.contains(items[45].id) && all.count == 58)
    }

    @Test func anIVFIndexTrainsOnceEnoughItemsArrive() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, indexSpec: "IVF4,Flat", syncWrites: false))
        defer { try? engine.close() }
        let items = catalogue(count: 50, dimension: 4, seed: 10)
        _ = try engine.upsert(Array(items[0..<2]))
        #expect {
            _ = try engine.search([items[0].vector], options: SearchOptions(k: 1))
        } throws: { ($0 as? SteerError)?.code == .unavailable }
        _ = try engine.upsert(Array(items[2..<50]))
        #expect(engine.stats().indexed == 50)
        let hits = try engine.search([items[7].vector], options: SearchOptions(k: 50, nprobe: 4))[0]
        #expect(hits.map(\.id) == bruteForce(items, query: items[7].vector, k: 50, metric: .innerProduct))
    }
}
