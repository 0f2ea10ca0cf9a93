#if canImport(Glibc)
import Glibc
#endif
@testable import SteerIndex
import Foundation
import SteerCore
import Testing

/// Seeded clustered data shared by the index tests: `baseCount` base rows and `queryCount` query rows
/// drawn from the same clusters (one SyntheticVectors set, split).
struct Dataset: Sendable {
    let dimension: Int
    let base: [Float]
    let queries: [Float]
    let baseCount: Int
    let queryCount: Int
    /// Labels of the base rows: 1000 + row (so labels differ from row numbers).
    var labels: [Int64] { (0..<baseCount).map { Int64(1000 + $0) } }

    init(baseCount: Int, queryCount: Int, dimension: Int, clusters: Int, spread: Float, seed: UInt64) {
        let all = SyntheticVectors(count: baseCount + queryCount, dimension: dimension, clusters: clusters, spread: spread, seed: seed)
        self.dimension = dimension
        self.baseCount = baseCount
        self.queryCount = queryCount
        self.base = Array(all.values[0..<(baseCount * dimension)])
        self.queries = Array(all.values[(baseCount * dimension)...])
    }

    func query(_ i: Int) -> [Float] { Array(queries[(i * dimension)..<((i + 1) * dimension)]) }
    func row(_ i: Int) -> [Float] { Array(base[(i * dimension)..<((i + 1) * dimension)]) }

    /// Brute-force truth (SteerCore.ExactSearch) over the base rows with their labels.
    func truth(k: Int, metric: Metric, allowed: ((Int64) -> Bool)? = nil, skip: Set<Int64> = []) -> [[ScoredLabel]] {
        let labels = self.labels
        let filter: ((Int64) -> Bool)? = (allowed == nil && skip.isEmpty) ? nil : { label in
            !skip.contains(label) && (allowed?(label) ?? true)
        }
        return (0..<queryCount).map { q in
            ExactSearch.topK(query: query(q), base: base, dimension: dimension, labels: labels, k: k, metric: metric, allowed: filter)
        }
    }
}

enum Fixtures {
    /// 8,000 × 32-d, 64 overlapping clusters: the recall and filter data set.
    static let standard = Dataset(baseCount: 8_000, queryCount: 100, dimension: 32, clusters: 64, spread: 1.5, seed: 7)
    static let standardTruthIP = standard.truth(k: 10, metric: .innerProduct)
    /// 3,000 × 16-d for the smaller functional tests.
    static let small = Dataset(baseCount: 3_000, queryCount: 50, dimension: 16, clusters: 20, spread: 0.7, seed: 21)
}

func recall(_ found: [[ScoredLabel]], _ truth: [[ScoredLabel]]) -> Double {
    ExactSearch.recall(found: found.map { $0.map(\.label) }, truth: truth.map { $0.map(\.label) })
}

/// Builds an index over a data set (training IVF on the base rows).
func makeIndex(_ factory: String, _ data: Dataset, metric: Metric = .innerProduct) throws -> VectorIndex {
    let index = try VectorIndex(spec: IndexSpec(parsing: factory), dimension: data.dimension, metric: metric)
    try index.train(data.base)
    try index.add(data.base, labels: data.labels)
    return index
}

/// Runs `body` expecting a SteerError with `code`; returns it for further checks.
@discardableResult
func expectSteerError(_ code: SteerError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> SteerError? {
    do {
        try body()
        Issue.record("expected SteerError \(code), nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as SteerError {
        #expect(error.code == code, "got \(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected SteerError \(code), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// A path no other test uses: tests of one suite run in parallel, so the name alone is not enough.
func temporaryPath(_ name: String) -> String {
    "/tmp/steer-index-tests-\(getpid())-\(name)-\(UUID().uuidString)"
}

import CFaissShim

func steerCRC(_ bytes: UnsafeRawBufferPointer) -> UInt32 { steer_crc32(0, bytes.baseAddress, bytes.count) }
