#if canImport(Glibc)
import Glibc
#endif
import SteerCore
@testable import SteerIndex
import Testing

/// OPQ in front of IVF-PQ (`OPQ<M>[_<D>],IVF<n>,PQ<m>`, faiss's IndexPreTransform + OPQMatrix): spec
/// parsing, training, search with filters, mutation, save/load and crafted files (docs/index.md).
@Suite struct OPQTests {
    @Test func specsParseAndRoundTrip() throws {
        let cases: [(String, IndexSpec.Family, String, String)] = [
            ("OPQ16,IVF64,PQ16", .opqIVFPQ(opq: 16, opqDimension: nil, lists: 64, subquantizers: 16, bits: 8), "OPQ16,IVF64,PQ16", "OPQ16,IVF64,PQ16x8"),
            ("opq8_16, ivf32, pq8x4", .opqIVFPQ(opq: 8, opqDimension: 16, lists: 32, subquantizers: 8, bits: 4), "OPQ8_16,IVF32,PQ8x4", "OPQ8_16,IVF32,PQ8x4"),
        ]
        for (text, family, canonical, faiss) in cases {
            let spec = try IndexSpec(parsing: text)
            #expect(spec.family == family && spec.factoryString == canonical && spec.faissFactory == faiss, "\(text)")
            #expect(try IndexSpec(parsing: canonical) == spec)
            #expect(spec.needsTraining && spec.isQuantized && !spec.isHNSW && spec.lists == (text.contains("64") ? 64 : 32))
        }
        #expect(try IndexSpec(parsing: "OPQ8_16,IVF32,PQ8").opqDimension(dimension: 32) == 16)
        #expect(try IndexSpec(parsing: "OPQ8,IVF32,PQ8").opqDimension(dimension: 32) == 32)
        #expect(try IndexSpec(parsing: "IVF32,PQ8").opqDimension(dimension: 32) == nil)
    }

    @Test(arguments: ["OPQ16", "OPQ16,IVF64,Flat", "OPQ16,IVF64,SQ8", "OPQ,IVF64,PQ8", "OPQ16_,IVF64,PQ8", "OPQ16_8_4,IVF64,PQ8",
                      "OPQ0,IVF64,PQ8", "OPQ16,HNSW32", "OPQ16,IVF64,PQ8,Flat", "IVF64,PQ8,OPQ16", "OPQ16,IVF0,PQ8",
                      "OPQ16,IVF64,PQ8x17", "OPQ8_0,IVF64,PQ8", "OPQ99999,IVF64,PQ8", "OPQ16,OPQ16,IVF64,PQ8", "OPQ-1,IVF64,PQ8"])
    func badOPQSpecsAreRefused(text: String) {
        expectSteerError(.invalidRequest) { _ = try IndexSpec(parsing: text) }
    }

    @Test func dimensionsAreCheckedAgainstTheIndex() {
        let cases: [(String, String)] = [
            ("OPQ5,IVF8,PQ4", "5 OPQ blocks do not divide"),
            ("OPQ4_32,IVF8,PQ4", "exceeds the index's dimension 16"),
            ("OPQ4_8,IVF8,PQ3", "3 PQ subquantizers do not divide the rotated dimension 8"),
        ]
        for (text, message) in cases {
            let error = expectSteerError(.invalidRequest) { _ = try VectorIndex(spec: IndexSpec(parsing: text), dimension: 16, metric: .l2) }
            #expect(error?.message.contains(message) == true, "\(text): \(error?.message ?? "")")
        }
    }

    @Test(arguments: ["OPQ4,IVF16,PQ4", "OPQ4_8,IVF16,PQ4"])
    func searchesFiltersAndMutates(factory: String) throws {
        let data = Fixtures.small
        let index = try VectorIndex(spec: IndexSpec(parsing: factory), dimension: data.dimension, metric: .innerProduct)
        expectSteerError(.invalidRequest) { try index.add(data.row(0), labels: [1]) }
        try index.train(data.base)
        try index.add(data.base, labels: data.labels)
        #expect(index.count == data.baseCount)
        let found = try index.search(data.queries, k: 10, parameters: .init(nprobe: 16))
        let r = recall(found, data.truth(k: 10, metric: .innerProduct))
        // 4-byte PQ codes: approximate (measured 0.554, and 0.292 when the rotation keeps 8 of 16
        // components); the engine rescores them.
        #expect(r >= (factory.contains("_") ? 0.2 : 0.45), "\(factory) recall@10 \(r)")
        let allowed = data.labels.filter { $0 % 4 == 0 }
        let filtered = try index.search(data.queries, k: 10, parameters: .init(nprobe: 4, allowed: AllowedLabels(allowed)))
        #expect(filtered.allSatisfy { $0.count == 10 && $0.allSatisfy { $0.label % 4 == 0 } })
        #expect(try index.remove(labels: [1000, 1001]) == 2)
        try index.add(data.row(2), labels: [1002])
        #expect(index.count == data.baseCount - 2 && !index.contains(label: 1000) && index.contains(label: 1002))
    }

    @Test(arguments: [false, true])
    func saveAndLoadGiveTheSameAnswers(mapped: Bool) throws {
        let data = Fixtures.small
        let index = try makeIndex("OPQ4,IVF16,PQ4", data, metric: .l2)
        _ = try index.remove(labels: [1000, 1001])
        let path = temporaryPath("opq")
        defer { unlink(path) }
        try index.save(to: path)
        let loaded = try VectorIndex.load(path: path, memoryMapped: mapped)
        #expect(loaded.spec == index.spec && loaded.count == index.count && loaded.isTrained)
        let parameters = SearchParameters(nprobe: 16)
        #expect(try loaded.search(data.queries, k: 10, parameters: parameters) == index.search(data.queries, k: 10, parameters: parameters))
        try loaded.add(data.row(0), labels: [1000])
        #expect(loaded.contains(label: 1000))
    }

    /// Offset of the first byte after the IxPT header (fourcc + 33-byte index header).
    static let afterHeader = 4 + 33

    @Test func craftedPreTransformSectionsAreRefused() throws {
        let data = Fixtures.small
        let index = try makeIndex("OPQ4,IVF16,PQ4", data, metric: .l2)
        let good = temporaryPath("opq-good")
        defer { unlink(good) }
        try index.save(to: good)
        let file = IndexFileTests.readFile(good)
        let section = IndexFileTests.faissSection(file)
        #expect(Array(section[0..<4]) == Array("IxPT".utf8))
        let count = Self.afterHeader
        let transform = count + 4
        #expect(Array(section[transform..<(transform + 4)]) == Array("LTra".utf8))
        let matrix = transform + 4 + 1
        let d = data.dimension
        let bias = matrix + 8 + d * d * 4
        let dims = bias + 8
        let inner = dims + 9
        #expect(Array(section[inner..<(inner + 4)]) == Array("IwPQ".utf8))
        let hostile = HostileIndexFileTests()
        try hostile.expectCorrupt(file, "two transforms", mentioning: "transform chain") { HostileIndexFileTests.put32(2, &$0, at: count) }
        try hostile.expectCorrupt(file, "a PCA", mentioning: "not an OPQ matrix") {
            for (i, byte) in "Pcam".utf8.enumerated() { $0[transform + i] = byte }
        }
        try hostile.expectCorrupt(file, "matrix 2^37", mentioning: "OPQ matrix") { HostileIndexFileTests.put64(1 << 37, &$0, at: matrix) }
        try hostile.expectCorrupt(file, "bias 2^37", mentioning: "OPQ bias") { HostileIndexFileTests.put64(1 << 37, &$0, at: bias) }
        try hostile.expectCorrupt(file, "IVF-Flat behind OPQ", mentioning: "must precede IVF-PQ") {
            for (i, byte) in "IwFl".utf8.enumerated() { $0[inner + i] = byte }
        }
        // The matrix read back declares fewer output components than it holds entries for.
        try hostile.expectCorrupt(file, "d_out 8 with a 16 × 16 matrix", mentioning: "OPQ matrix") { HostileIndexFileTests.put32(8, &$0, at: dims + 4) }
        try hostile.expectCorrupt(file, "d_in 17", mentioning: "OPQ matrix") { HostileIndexFileTests.put32(17, &$0, at: dims) }
        // The intact file loads; an OPQ file does not pass for plain IVF-PQ (or another rotated dimension).
        #expect(try VectorIndex.load(path: good).count == data.baseCount)
        let plain = try makeIndex("IVF16,PQ4", data, metric: .l2)
        let plainPath = temporaryPath("opq-plain"), swapped = temporaryPath("opq-swapped")
        defer { unlink(plainPath); unlink(swapped) }
        try plain.save(to: plainPath)
        IndexFileTests.writeFile(swapped, try IndexFileTests.rewrite(IndexFileTests.readFile(plainPath), faissBytes: section))
        expectSteerError(.corrupt) { _ = try VectorIndex.load(path: swapped) }
    }
}
