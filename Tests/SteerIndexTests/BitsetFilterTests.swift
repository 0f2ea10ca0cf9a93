import SteerCore
@testable import SteerIndex
import Testing

/// The bitset form of `AllowedLabels` (the in-memory filter path): the native scan must return exactly
/// what the sorted-array form returns, on every family, in the ANN scan and on the exact (label lookup)
/// path, including labels past the bitset's end and the empty set.
@Suite struct BitsetFilterTests {
    @Test(arguments: ["Flat", "HNSW16", "IVF64,Flat", "IVF64,SQ8"])
    func bitsetSearchEqualsSortedSearch(factory: String) throws {
        let data = Fixtures.standard
        let index = try FilterTests.indexes.get(factory)
        for percent in [1, 10, 50] {
            let labels = data.labels.filter { FilterTests.bucket($0) < percent }
            let sorted = AllowedLabels(sortedLabels: labels)
            let bits = AllowedLabels(bitset: LabelBitset(labels))
            #expect(bits.count == sorted.count && bits.sortedLabels == labels)
            for threshold in [0, VectorIndex.standardExactFilterThreshold] {
                let expected = try index.search(data.queries, k: 10, parameters: .init(nprobe: 8, efSearch: 32, allowed: sorted, exactFilterThreshold: threshold))
                let found = try index.search(data.queries, k: 10, parameters: .init(nprobe: 8, efSearch: 32, allowed: bits, exactFilterThreshold: threshold))
                #expect(found == expected, "\(factory) \(percent)% threshold \(threshold)")
                #expect(found.allSatisfy { $0.allSatisfy { bits.contains($0.label) } })
            }
        }
        // Labels not in the index and past the words' end; the empty set still filters.
        let few = AllowedLabels(bitset: LabelBitset([1003, 4444, 7999, 123_456]))
        for threshold in [0, 1024] {
            let found = try index.search(data.queries, k: 10, parameters: .init(allowed: few, exactFilterThreshold: threshold))
            for list in found { #expect(Set(list.map(\.label)) == [1003, 4444, 7999], "\(factory) threshold \(threshold)") }
            let none = try index.search(data.queries, k: 10, parameters: .init(allowed: AllowedLabels(bitset: LabelBitset()), exactFilterThreshold: threshold))
            #expect(none.allSatisfy { $0.isEmpty }, "\(factory) threshold \(threshold): empty bitset")
        }
    }

    @Test func bitsetOperations() {
        var generator = SeededGenerator(seed: 5)
        for _ in 0..<50 {
            let a = Set((0..<Int.random(in: 0..<300, using: &generator)).map { _ in Int64.random(in: 0..<700, using: &generator) })
            let b = Set((0..<Int.random(in: 0..<300, using: &generator)).map { _ in Int64.random(in: 0..<900, using: &generator) })
            let bitsA = LabelBitset(a), bitsB = LabelBitset(b)
            #expect(bitsA.count == a.count && Set(bitsA.labels) == a && bitsA.labels == a.sorted())
            var and = bitsA; and.formIntersection(bitsB)
            var or = bitsA; or.formUnion(bitsB)
            var minus = bitsA; minus.subtract(bitsB)
            #expect(Set(and.labels) == a.intersection(b))
            #expect(Set(or.labels) == a.union(b))
            #expect(Set(minus.labels) == a.subtracting(b))
            for probe in Int64(-2)..<Int64(1000) { #expect(bitsA.contains(probe) == a.contains(probe)) }
        }
        let built = LabelBitset.build(labels: 130) { $0 % 3 == 0 }
        #expect(built.labels == stride(from: Int64(0), to: 130, by: 3).map { $0 })
        var removed = LabelBitset([1, 64, 200])
        removed.remove(64)
        removed.remove(10_000)
        removed.insert(-1)
        #expect(removed.labels == [1, 200])
    }
}
