#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import SteerIndex
import SteerCore
import Testing

/// Steer's HNSW insertion (used by `add` when OpenMP runs one thread) must build exactly the graph that
/// faiss 1.7.3's own `IndexHNSW::add` builds on one thread: same levels, links, entry point, so the saved
/// files are byte-identical and every search answers the same.
@Suite struct HNSWInsertionTests {
    /// Runs `body` with OpenMP at one thread on this thread, restoring the previous count.
    func withOneThread<T>(_ body: () throws -> T) rethrows -> T {
        let previous = FaissInfo.openMPMaxThreads
        FaissInfo.setOpenMPThreadsForCurrentThread(1)
        defer { FaissInfo.setOpenMPThreadsForCurrentThread(previous) }
        return try body()
    }

    func savedBytes(_ index: VectorIndex, _ name: String) throws -> [UInt8] {
        let path = temporaryPath(name)
        defer { unlink(path) }
        try index.save(to: path)
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    @Test(arguments: [(Metric.innerProduct, "HNSW16,efC40"), (Metric.l2, "HNSW8,efC24"), (Metric.cosine, "HNSW32")])
    func sameGraphAsFaissAdd(metric: Metric, factory: String) throws {
        let data = Fixtures.small
        let split = 2_000 // two batches: the second links into an existing graph
        let first = Array(data.base[0..<(split * data.dimension)]), rest = Array(data.base[(split * data.dimension)...])
        let firstLabels = Array(data.labels[0..<split]), restLabels = Array(data.labels[split...])
        let spec = try IndexSpec(parsing: factory)

        let (ours, reference, inserted) = try withOneThread {
            let ours = try VectorIndex(spec: spec, dimension: data.dimension, metric: metric)
            let reference = try VectorIndex(spec: spec, dimension: data.dimension, metric: metric)
            let before = VectorIndex.steerInsertedRows
            try ours.add(first, labels: firstLabels)
            try ours.add(rest, labels: restLabels)
            let inserted = VectorIndex.steerInsertedRows - before
            try reference.faissReferenceHNSWAdd(first, labels: firstLabels)
            try reference.faissReferenceHNSWAdd(rest, labels: restLabels)
            return (ours, reference, inserted)
        }
        // Other tests may insert concurrently, so at least this test's rows.
        #expect(inserted >= UInt64(data.baseCount))
        let oursBytes = try savedBytes(ours, "ours-\(factory)")
        let referenceBytes = try savedBytes(reference, "reference-\(factory)")
        #expect(oursBytes.count == referenceBytes.count)
        #expect(oursBytes == referenceBytes, "the graphs differ (\(metric), \(factory))")

        for ef in [10, 40] {
            let a = try ours.search(data.queries, k: 10, parameters: .init(efSearch: ef))
            let b = try reference.search(data.queries, k: 10, parameters: .init(efSearch: ef))
            #expect(a == b)
        }
        let truth = data.truth(k: 10, metric: metric)
        #expect(recall(try ours.search(data.queries, k: 10, parameters: .init(efSearch: 64)), truth) >= 0.95)
    }

    /// Compaction rebuilds through the same insertion: live rows only, recall kept, the same answers as
    /// a fresh one-thread build of the survivors.
    @Test func compactionWithOneThread() throws {
        let data = Fixtures.small
        try withOneThread {
            let index = try makeIndex("HNSW16", data)
            let removed = data.labels.filter { $0 % 3 == 0 }
            try index.remove(labels: removed)
            try index.compact()
            #expect(index.tombstoneCount == 0)
            #expect(index.count == data.baseCount - removed.count)
            let gone = Set(removed)
            let fresh = try VectorIndex(spec: IndexSpec(parsing: "HNSW16"), dimension: data.dimension, metric: .innerProduct)
            var vectors: [Float] = []
            var labels: [Int64] = []
            for (row, label) in data.labels.enumerated() where !gone.contains(label) {
                vectors += data.row(row)
                labels.append(label)
            }
            try fresh.add(vectors, labels: labels)
            let a = try index.search(data.queries, k: 10, parameters: .init(efSearch: 32))
            let b = try fresh.search(data.queries, k: 10, parameters: .init(efSearch: 32))
            #expect(a == b)
            let truth = data.truth(k: 10, metric: .innerProduct, skip: gone)
            #expect(recall(a, truth) >= 0.95)
        }
    }
}
