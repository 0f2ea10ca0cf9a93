import Foundation
import SteerCore
@testable import SteerIndex
import Testing

/// HNSW compaction is built aside: searches keep being answered while the graph is rebuilt, and writes
/// made meanwhile are in the graph that is switched in (docs/index.md "Deletes and compaction").
@Suite(.serialized) struct CompactionTests {
    final class Recorder: @unchecked Sendable {
        private let lock = NSLock()
        private var spans: [(start: UInt64, end: UInt64)] = []
        private var stopped = false
        private var failures: [String] = []

        func record(_ start: UInt64, _ end: UInt64) { lock.withLock { spans.append((start, end)) } }
        func fail(_ message: String) { lock.withLock { failures.append(message) } }
        func stop() { lock.withLock { stopped = true } }
        var isStopped: Bool { lock.withLock { stopped } }
        var recorded: [(start: UInt64, end: UInt64)] { lock.withLock { spans } }
        var errors: [String] { lock.withLock { failures } }
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    @Test func searchesAreAnsweredWhileACompactionIsBuiltAndWritesMadeMeanwhileSurvive() throws {
        let dimension = 32, count = 16_000
        let data = SyntheticVectors(count: count + 200, dimension: dimension, clusters: 40, spread: 1.0, seed: 11)
        @Sendable func row(_ i: Int) -> [Float] { Array(data.values[(i * dimension)..<((i + 1) * dimension)]) }
        let index = try VectorIndex(spec: IndexSpec(parsing: "HNSW16"), dimension: dimension, metric: .l2)
        index.autoCompactFraction = 1
        try index.add(Array(data.values[0..<(count * dimension)]), labels: (0..<count).map { Int64($0) })
        let removed = (0..<(count / 4)).map { Int64($0 * 4) }
        try index.remove(labels: removed)
        #expect(index.tombstoneCount == removed.count)
        index.autoCompactFraction = 0.2

        let recorder = Recorder()
        let searcher = Thread {
            var q = 0
            while !recorder.isStopped {
                let start = Self.now()
                do {
                    _ = try index.search(row(count + q % 200), k: 10)
                } catch {
                    recorder.fail("\(error)")
                }
                recorder.record(start, Self.now())
                q += 1
            }
        }
        searcher.start()
        Thread.sleep(forTimeInterval: 0.05)
        // Writes racing the compaction: new labels, a replaced vector and removals.
        let writer = Thread {
            for round in 0..<20 {
                do {
                    let label = count + round
                    try index.add(row(label), labels: [Int64(100_000 + round)])
                    try index.remove(labels: [Int64(round * 4 + 1)])
                    if round == 5 { try index.add(row(count + 150), labels: [3]) }
                } catch {
                    recorder.fail("writer: \(error)")
                }
                Thread.sleep(forTimeInterval: 0.005)
            }
        }
        let t0 = Self.now()
        writer.start()
        try index.remove(labels: [Int64(2)])  // crosses 20 %: this call compacts
        let t1 = Self.now()
        while !writer.isFinished { Thread.sleep(forTimeInterval: 0.005) }
        recorder.stop()
        while !searcher.isFinished { Thread.sleep(forTimeInterval: 0.005) }

        #expect(recorder.errors.isEmpty, "\(recorder.errors.prefix(3))")
        let inside = recorder.recorded.filter { $0.start > t0 && $0.end < t1 }
        let compactionMs = Double(t1 - t0) / 1e6
        #expect(compactionMs > 20, "the compaction took \(compactionMs) ms: too short to measure")
        // Today's searches during a compaction: answered while it runs, not queued behind it.
        #expect(inside.count >= 10, "\(inside.count) searches answered during a \(compactionMs) ms compaction")
        if let slowest = inside.map({ $0.end - $0.start }).max() {
            #expect(Double(slowest) / 1e6 < compactionMs / 2, "slowest search \(Double(slowest) / 1e6) ms of a \(compactionMs) ms compaction")
        }

        // The switched-in graph: no tombstones from before, every write made meanwhile.
        #expect(index.tombstoneCount < 50)
        for round in 0..<20 {
            #expect(index.contains(label: Int64(100_000 + round)))
            #expect(!index.contains(label: Int64(round * 4 + 1)))
            #expect(try index.search(row(count + round), k: 1)[0].first?.label == Int64(100_000 + round), "round \(round)")
        }
        #expect(!index.contains(label: 2) && !index.contains(label: 0) && index.contains(label: 3))
        #expect(try index.search(row(count + 150), k: 1)[0].first?.label == 3, "label 3 carries its replacement vector")
        #expect(index.count == count - removed.count - 1)
        var probes = 0, found = 0
        for i in stride(from: 3, to: count, by: 37) where i % 4 > 1 && i != 3 {
            probes += 1
            if try index.search(row(i), k: 1)[0].first?.label == Int64(i) { found += 1 }
        }
        #expect(Double(found) >= 0.95 * Double(probes), "\(found) of \(probes) rows find themselves")
    }
}
