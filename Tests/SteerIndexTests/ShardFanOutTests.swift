import Foundation
@testable import SteerIndex
import SteerCore
import Testing

@Suite struct ShardFanOutTests {
    private let dimension = 16

    /// `count` seeded vectors placed on `shardCount` Flat shards by their external ids (labels = rows).
    private func generation(shardCount: Int, count: Int = 2000) throws -> (IndexGeneration, [Float]) {
        var rng = SeededGenerator(seed: 21)
        let vectors = (0..<(count * dimension)).map { _ in rng.nextGaussian() }
        let sharding = try Sharding(shardCount: shardCount)
        var rows = [[Int]](repeating: [], count: shardCount)
        for row in 0..<count { rows[sharding.shard(of: .int(Int64(row)))].append(row) }
        let shards = try rows.map { shardRows in
            let index = try VectorIndex(spec: IndexSpec(parsing: "Flat"), dimension: dimension, metric: .innerProduct)
            try index.add(shardRows.flatMap { vectors[($0 * dimension)..<(($0 + 1) * dimension)] }, labels: shardRows.map { Int64($0) })
            return index
        }
        let generation = try IndexGeneration.unsaved(generationID: "g\(shardCount)", embeddingVersion: "v1", storeSequence: 0, shards: shards)
        return (generation, vectors)
    }

    @Test func parallelShards_giveTheExactTopKOfOneIndex() throws {
        let (single, vectors) = try generation(shardCount: 1)
        let (four, _) = try generation(shardCount: 4)
        var rng = SeededGenerator(seed: 5)
        let queries = (0..<(40 * dimension)).map { _ in rng.nextGaussian() }
        let expected = try single.search(queries, k: 10)
        // The exact answer by brute force agrees with the one-shard index (so the comparison means something).
        let exact = ExactSearch.topK(query: Array(queries[0..<dimension]), base: vectors, dimension: dimension, k: 10, metric: .innerProduct)
        #expect(expected[0].map(\.label) == exact.map(\.label))

        let wide = ShardFanOut(cores: 8)
        let narrow = ShardFanOut(cores: 1)
        for q in 0..<40 {
            let one = Array(queries[(q * dimension)..<((q + 1) * dimension)])
            let got = try four.search(one, k: 10, fanOut: wide)
            // The same items in the same order as one index holding them all (scores agree to rounding:
            // a batch of queries is scored by BLAS, a single one by the SIMD kernels).
            #expect(got[0].map(\.label) == expected[q].map(\.label), "query \(q)")
            for (a, b) in zip(got[0], expected[q]) { #expect(abs(a.score - b.score) <= 1e-4 * max(1, abs(b.score))) }
            // One core: the shards are searched in turn, with exactly the same answer.
            #expect(try four.search(one, k: 10, fanOut: narrow) == got)
        }
        #expect(wide.fanOutCount == 40, "every search of an idle gate fans out")
        #expect(narrow.fanOutCount == 0)
    }

    @Test func theGate_grantsOnlyIdleCores() {
        let gate = ShardFanOut(cores: 3)
        let first = gate.enter(wanted: 3)
        #expect(first == 2, "an idle 3-core gate lends 2 threads beside the caller's")
        let second = gate.enter(wanted: 3)
        #expect(second == 0, "every core is busy: the second search runs its shards in turn")
        gate.leave(granted: second)
        gate.leave(granted: first)
        #expect(gate.enter(wanted: 1) == 1, "released threads are lent again")
        #expect(gate.fanOutCount == 2)
    }

    @Test func aFailingShardSearch_throwsWhenFannedOut() throws {
        let (four, _) = try generation(shardCount: 4, count: 200)
        #expect(throws: SteerError.self) { try four.search([1, 2, 3], k: 10, fanOut: ShardFanOut(cores: 8)) }
    }
}
