import Foundation
import SteerCore
import SteerIndex
import Testing
@testable import SteerEngine

/// Quantized indexes (IVF-PQ, IVF-SQ8): k × oversample candidates rescored with the float vectors from
/// the store; and the layout memory estimate.
@Suite struct RescoringTests {
    static func catalogue(count: Int, dimension: Int, seed: UInt64) -> [ItemInput] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { index in
            ItemInput(id: .int(Int64(index)), vector: (0..<dimension).map { _ in Float.random(in: -1...1, using: &generator) },
                      tags: index % 2 == 0 ? ["even"] : [])
        }
    }

    static func dot(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

    @Test(arguments: ["IVF16,PQ4", "IVF16,SQ8", "HNSW16,SQ8", "OPQ4,IVF16,PQ4"])
    func rescoredHitsCarryExactScoresAndReachTheTrueTopK(spec: String) throws {
        let directory = NSTemporaryDirectory() + "steer-rescore-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 16, indexSpec: spec, syncWrites: false))
        defer { try? engine.close() }
        let items = Self.catalogue(count: 600, dimension: 16, seed: 21)
        _ = try engine.upsert(items)
        let byID = Dictionary(uniqueKeysWithValues: items.map { ($0.id, $0.vector) })
        var generator = SeededGenerator(seed: 22)
        var recallOne = 0.0, recallEight = 0.0
        for _ in 0..<10 {
            let query = (0..<16).map { _ in Float.random(in: -1...1, using: &generator) }
            let truth = ExactSearch.topK(query: query, base: items.flatMap(\.vector), dimension: 16, k: 10, metric: .innerProduct)
                .map { items[Int($0.label)].id }
            // Every list probed and 10 × 64 ≥ 600 candidates: every item is rescored, so the answer is exact.
            var all = SearchOptions(k: 10, nprobe: 16)
            all.oversample = 64
            all.explain = true
            let (hits, plan) = try engine.searchExplained([query], options: all)
            #expect(hits[0].map(\.id) == truth, "\(spec)")
            #expect(plan.oversample == 64 && plan.rescored == 600)
            for hit in hits[0] { #expect(abs(hit.score - Self.dot(byID[hit.id]!, query)) < 1e-4) }
            // Fewer candidates: still exact scores, sorted, and more candidates never lose recall here.
            var one = SearchOptions(k: 10, nprobe: 16)
            one.oversample = 1
            var eight = SearchOptions(k: 10, nprobe: 16)
            eight.oversample = 8
            let hitsOne = try engine.search([query], options: one)[0]
            let hitsEight = try engine.search([query], options: eight)[0]
            for hit in hitsOne + hitsEight { #expect(abs(hit.score - Self.dot(byID[hit.id]!, query)) < 1e-4) }
            #expect(hitsEight.map(\.score) == hitsEight.map(\.score).sorted(by: >))
            recallOne += Double(Set(hitsOne.map(\.id)).intersection(truth).count) / 10
            recallEight += Double(Set(hitsEight.map(\.id)).intersection(truth).count) / 10
            // A filtered index plan rescores too; the default oversample is 4.
            engine.filterPlanner.settings.withLock { $0.exactMinimum = 0; $0.exactFraction = 0 }
            let filtered = try engine.searchExplained([query], options: SearchOptions(k: 10, nprobe: 16, filter: TagFilter(tagsAny: ["even"])))
            #expect(filtered.plan.kind == .index && filtered.plan.oversample == 4 && filtered.plan.rescored > 0)
            #expect(filtered.hits[0].count == 10 && filtered.hits[0].allSatisfy { $0.tags == ["even"] })
            for hit in filtered.hits[0] { #expect(abs(hit.score - Self.dot(byID[hit.id]!, query)) < 1e-4) }
            engine.filterPlanner.settings.withLock { $0 = FilterPlanner.Settings() }
        }
        #expect(recallEight >= recallOne, "\(spec): oversample 8 recall \(recallEight / 10) vs 1 \(recallOne / 10)")
        #expect(recallEight / 10 >= 0.9, "\(spec)")
    }

    @Test func floatIndexesAreNotRescored() throws {
        let directory = NSTemporaryDirectory() + "steer-rescore-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 8, indexSpec: "HNSW16", syncWrites: false))
        defer { try? engine.close() }
        _ = try engine.upsert(Self.catalogue(count: 200, dimension: 8, seed: 23))
        var options = SearchOptions(k: 5)
        options.oversample = 8
        let plan = try engine.searchExplained([[Float](repeating: 0.1, count: 8)], options: options).plan
        #expect(plan.oversample == 1 && plan.rescored == 0)
    }

    @Test func memoryEstimateFollowsTheLayout() throws {
        let hnsw = try IndexSpec(parsing: "HNSW32").memoryEstimate(dimension: 128)
        #expect(abs(hnsw.bytesPerVector - (512 + 256 + 32.0 / 31 * 4 + 12 + 8 + 40)) < 1e-9)
        let sq8 = try IndexSpec(parsing: "IVF4096,SQ8").memoryEstimate(dimension: 128)
        #expect(sq8.bytesPerVector == 128 + 8 + 40 && sq8.fixedBytes == 4096 * 512 + 1024)
        let pq = try IndexSpec(parsing: "IVF4096,PQ16").memoryEstimate(dimension: 128)
        #expect(pq.bytesPerVector == 16 + 8 + 40 && pq.fixedBytes == 4096 * 512 + 256 * 512)
        #expect(sq8.bytesPerVector / hnsw.bytesPerVector < 0.35 && pq.bytesPerVector / hnsw.bytesPerVector < 0.1)
        #expect(try IndexSpec(parsing: "Flat").memoryEstimate(dimension: 64).totalBytes(vectors: 10) == 10 * (256 + 8 + 40))
        // HNSW over SQ8 codes: d bytes instead of 4·d, the same graph, the SQ8 ranges fixed.
        let hnswSQ8 = try IndexSpec(parsing: "HNSW32,SQ8").memoryEstimate(dimension: 128)
        #expect(abs(hnswSQ8.bytesPerVector - (hnsw.bytesPerVector - 3 * 128)) < 1e-9 && hnswSQ8.fixedBytes == 1024)
        // OPQ: PQ codes in the rotated space plus the rotation matrix.
        let opq = try IndexSpec(parsing: "OPQ16_64,IVF4096,PQ16").memoryEstimate(dimension: 128)
        let opqFixed: Double = 128 * 64 * 4 + 4096 * 256 + 256 * 256
        #expect(opq.bytesPerVector == pq.bytesPerVector && opq.fixedBytes == opqFixed)
    }
}
