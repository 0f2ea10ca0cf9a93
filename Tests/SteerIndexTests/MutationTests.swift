import SteerCore
@testable import SteerIndex
import Testing

@Suite struct MutationTests {
    static let families = ["Flat", "HNSW16", "IVF32,Flat", "IVF32,SQ8", "IVF32,PQ8"]

    /// After removing labels, searches return k live results and never a removed label.
    @Test(arguments: families)
    func removeReturnsKLiveResults(factory: String) throws {
        let data = Fixtures.small
        let index = try makeIndex(factory, data)
        index.autoCompactFraction = 1 // keep every tombstone for this test
        let removed = Set(data.labels.filter { $0 % 3 == 0 })
        #expect(try index.remove(labels: Array(removed) + [999_999]) == removed.count)
        #expect(try index.remove(labels: Array(removed.prefix(10))) == 0, "removing twice counts nothing")
        #expect(index.count == data.baseCount - removed.count)
        #expect(index.tombstoneCount == (factory.hasPrefix("HNSW") ? removed.count : 0))
        #expect(!index.contains(label: removed.first!))
        #expect(index.contains(label: 1001))
        let found = try index.search(data.queries, k: 10, parameters: .init(nprobe: 32, efSearch: 64))
        let truth = data.truth(k: 10, metric: .innerProduct, skip: removed)
        for list in found {
            #expect(list.count == 10)
            #expect(list.allSatisfy { !removed.contains($0.label) })
        }
        let minimum = factory.contains("PQ") ? 0.6 : 0.9
        #expect(recall(found, truth) >= minimum, "\(factory) recall after removal \(recall(found, truth))")
    }

    @Test func hnswTombstonesCompactionAndAutoCompaction() throws {
        let data = Fixtures.small
        let index = try makeIndex("HNSW16", data)
        index.autoCompactFraction = 1
        let removed = Set(data.labels.filter { $0 % 5 != 0 }) // 80% dead
        try index.remove(labels: Array(removed))
        #expect(index.tombstoneCount == removed.count)
        let truth = data.truth(k: 10, metric: .innerProduct, skip: removed)
        let before = try index.search(data.queries, k: 10)
        #expect(before.allSatisfy { $0.count == 10 && $0.allSatisfy { !removed.contains($0.label) } })
        #expect(recall(before, truth) >= 0.9, "with 80% tombstones: \(recall(before, truth))")
        #expect(index.nativeHNSWParameters == (16, 100))
        try index.compact()
        #expect(index.nativeHNSWParameters == (16, 100), "compaction keeps M and efConstruction")
        #expect(index.tombstoneCount == 0)
        #expect(index.count == data.baseCount - removed.count)
        let after = try index.search(data.queries, k: 10)
        #expect(recall(after, truth) >= 0.95, "after compaction: \(recall(after, truth))")
        #expect(!index.contains(label: removed.first!) && index.contains(label: 1000))

        // Automatic: more than 20% of rows dead triggers a rebuild inside remove.
        let auto = try makeIndex("HNSW16", data)
        #expect(auto.autoCompactFraction == 0.2)
        try auto.remove(labels: Array(data.labels.prefix(500))) // 16.7%: kept
        #expect(auto.tombstoneCount == 500)
        try auto.remove(labels: Array(data.labels[500..<700])) // 23.3%: compacted
        #expect(auto.tombstoneCount == 0)
        #expect(auto.count == data.baseCount - 700)
    }

    /// Removing all but a handful still returns every live item (the beam walks through tombstones).
    @Test func fewLiveItemsAmongManyTombstones() throws {
        let data = Fixtures.small
        let index = try makeIndex("HNSW16", data)
        index.autoCompactFraction = 1
        let keep: Set<Int64> = [1000, 1500, 2222, 3999]
        try index.remove(labels: data.labels.filter { !keep.contains($0) })
        for list in try index.search(data.queries, k: 10) { #expect(Set(list.map(\.label)) == keep) }
    }

    @Test(arguments: families)
    func reAddingALabelReplacesIt(factory: String) throws {
        let data = Fixtures.small
        let index = try makeIndex(factory, data)
        let target = data.query(0)
        // Label 1003 moves onto the query vector itself.
        try index.add(target, labels: [1003])
        #expect(index.count == data.baseCount)
        let found = try index.search(target, k: 10, parameters: .init(nprobe: 32))[0]
        #expect(found.first?.label == 1003, "\(factory): \(found.prefix(3))")
        #expect(found.filter { $0.label == 1003 }.count == 1)
        // The old vector no longer answers for 1003.
        let old = try index.search(data.row(3), k: 5, parameters: .init(nprobe: 32))[0]
        #expect(old.first?.label != 1003)
    }

    @Test func resetKeepsTraining() throws {
        let data = Fixtures.small
        let index = try makeIndex("IVF32,Flat", data)
        index.reset()
        #expect(index.count == 0 && index.isTrained)
        #expect(try index.search(data.queries, k: 5).allSatisfy { $0.isEmpty })
        try index.add(data.base, labels: data.labels)
        #expect(index.count == data.baseCount)
        let hnsw = try makeIndex("HNSW8", data)
        hnsw.reset()
        #expect(hnsw.count == 0 && hnsw.tombstoneCount == 0)
        try hnsw.add(data.row(0), labels: [5])
        #expect(try hnsw.search(data.row(0), k: 3)[0].map(\.label) == [5])
    }

    @Test func cosineNormalisesAndRejectsZeroVectors() throws {
        let index = try VectorIndex(spec: IndexSpec(parsing: "Flat"), dimension: 3, metric: .cosine)
        try index.add([2, 0, 0, 0, 5, 0, 1, 1, 0], labels: [1, 2, 3])
        let found = try index.search([10, 0, 0], k: 3)[0]
        #expect(found.map(\.label) == [1, 3, 2])
        #expect(abs(found[0].score - 1) < 1e-6)
        #expect(abs(found[1].score - 0.70710677) < 1e-6)
        #expect(try index.search([0.1, 0, 0], k: 3) == [found], "query length does not matter")
        let error = expectSteerError(.invalidRequest) { try index.add([1, 1, 1, 0, 0, 0], labels: [7, 8]) }
        #expect(error?.message.contains("row 1") == true)
        #expect(!index.contains(label: 7), "a rejected batch adds nothing")
        expectSteerError(.invalidRequest) { _ = try index.search([0, 0, 0], k: 1) }
    }
}
