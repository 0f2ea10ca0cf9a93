import SteerCore
@testable import SteerIndex
import Testing

@Suite struct FilterTests {
    /// A label's pseudo-random bucket in 0..<100, so selectivity p keeps buckets below p.
    static func bucket(_ label: Int64) -> Int {
        var x = UInt64(bitPattern: label) &* 0x9E37_79B9_7F4A_7C15
        x ^= x >> 29
        return Int(x % 100)
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let factory: String
        let percent: Int
        let inScan: Bool // exactFilterThreshold 0: always filter inside the ANN scan
        var testDescription: String { "\(factory) \(percent)% \(inScan ? "in-scan" : "default")" }
    }

    static let cases: [Case] = ["Flat", "HNSW16", "IVF64,Flat", "IVF64,SQ8"].flatMap { factory in
        [1, 10, 50].flatMap { percent in [false, true].map { Case(factory: factory, percent: percent, inScan: $0) } }
    }

    /// Filtered search against brute force over the allowed set at 1%, 10% and 50% selectivity:
    /// only allowed labels, k of them, and high recall.
    @Test(arguments: cases)
    func filteredSearchMatchesBruteForce(c: Case) throws {
        let data = Fixtures.standard
        let index = try Self.indexes.get(c.factory)
        let allowedLabels = data.labels.filter { Self.bucket($0) < c.percent }
        var rng = SeededGenerator(seed: 99)
        let allowed = AllowedLabels(allowedLabels.shuffled(using: &rng))
        #expect(allowed.count == allowedLabels.count)
        let threshold = c.inScan ? 0 : VectorIndex.standardExactFilterThreshold
        let found = try index.search(data.queries, k: 10, parameters: .init(allowed: allowed, exactFilterThreshold: threshold))
        let truth = Self.truth[c.percent]!
        for list in found {
            #expect(list.count == 10)
            #expect(list.allSatisfy { allowed.contains($0.label) })
        }
        let r = recall(found, truth)
        let exactPath = c.factory == "Flat" || (!c.inScan && allowed.count <= threshold && !c.factory.contains("SQ"))
        #expect(r >= (exactPath ? 1.0 : 0.85), "\(c.testDescription): recall \(r) with \(allowed.count) allowed")
    }

    @Test(arguments: ["Flat", "HNSW16", "IVF64,Flat"])
    func tinyAndEmptyAllowedSets(factory: String) throws {
        let data = Fixtures.standard
        let index = try Self.indexes.get(factory)
        let few: [Int64] = [1003, 4444, 7999, 123_456_789] // the last one is not in the index
        for threshold in [0, 1024] {
            let found = try index.search(data.queries, k: 10, parameters: .init(allowed: AllowedLabels(few), exactFilterThreshold: threshold))
            for list in found { #expect(Set(list.map(\.label)) == [1003, 4444, 7999], "\(factory) threshold \(threshold)") }
            let none = try index.search(data.queries, k: 10, parameters: .init(allowed: AllowedLabels([]), exactFilterThreshold: threshold))
            #expect(none.allSatisfy { $0.isEmpty })
        }
    }

    @Test func filterSkipsTombstones() throws {
        let data = Fixtures.small
        let index = try makeIndex("HNSW16", data)
        index.autoCompactFraction = 1
        let allowed = AllowedLabels(data.labels.filter { $0 % 2 == 0 })
        try index.remove(labels: data.labels.filter { $0 % 4 == 0 })
        for threshold in [0, 10_000] {
            let found = try index.search(data.queries, k: 10, parameters: .init(allowed: allowed, exactFilterThreshold: threshold))
            for list in found {
                #expect(list.count == 10)
                #expect(list.allSatisfy { $0.label % 2 == 0 && $0.label % 4 != 0 })
            }
        }
    }

    @Test func allowedLabelsNormalises() {
        let a = AllowedLabels([5, 1, 5, 3])
        #expect(a.sortedLabels == [1, 3, 5] && a.count == 3)
        #expect(a.contains(3) && !a.contains(4))
        #expect(AllowedLabels(sortedLabels: [3, 1]).sortedLabels == [1, 3])
        #expect(AllowedLabels(sortedLabels: [1, 2, 9]).sortedLabels == [1, 2, 9])
    }

    /// Brute-force truth per selectivity, computed once.
    static let truth: [Int: [[ScoredLabel]]] = Dictionary(uniqueKeysWithValues: [1, 10, 50].map { percent in
        (percent, Fixtures.standard.truth(k: 10, metric: .innerProduct) { bucket($0) < percent })
    })

    /// One index per family for the whole suite (building is the slow part).
    static let indexes = IndexCache()
}

final class IndexCache: @unchecked Sendable {
    private let lock = ReadWriteLock()
    private var built: [String: VectorIndex] = [:]
    func get(_ factory: String) throws -> VectorIndex {
        try lock.withWriteLock {
            if let index = built[factory] { return index }
            let index = try makeIndex(factory, Fixtures.standard)
            built[factory] = index
            return index
        }
    }
}

