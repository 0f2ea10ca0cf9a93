#if canImport(Glibc)
import Glibc
#endif
import SteerCore
@testable import SteerIndex
import Testing

/// HNSW over SQ8 codes (`HNSW<M>,SQ8`, faiss's IndexHNSWSQ) through Steer's own HNSW search and
/// insertion: recall of the code scores, training, tombstones and compaction, save/load, and crafted
/// files (docs/index.md).
@Suite struct HNSWSQ8Tests {
    @Test func specParsesInBothSpellingsAndRoundTrips() throws {
        for text in ["HNSW32,SQ8", "hnsw32_sq8", " HNSW32 , sq8 "] {
            let spec = try IndexSpec(parsing: text)
            #expect(spec.family == .hnswSQ8(m: 32, efConstruction: 100) && spec.factoryString == "HNSW32,SQ8", "\(text)")
        }
        let withBeam = try IndexSpec(parsing: "HNSW16,SQ8,efC40")
        #expect(withBeam.family == .hnswSQ8(m: 16, efConstruction: 40) && withBeam.factoryString == "HNSW16,SQ8,efC40")
        #expect(try IndexSpec(parsing: withBeam.factoryString) == withBeam)
        #expect(withBeam.needsTraining && withBeam.isQuantized && withBeam.isHNSW && withBeam.lists == nil)
        #expect(withBeam.faissFactory == "HNSW16_SQ8")
    }

    @Test(arguments: ["HNSW32,SQ4", "HNSW32,SQ8,SQ8", "HNSW32,PQ8", "HNSW32,Flat", "HNSW32,SQ8,efC0", "HNSW32,SQ8,efC40,x",
                      "HNSW32,efC40,SQ8", "HNSW32_", "HNSW1,SQ8", "HNSW32,SQfp16", "HNSW_SQ8", "HNSW32,,SQ8"])
    func badHNSWSQSpecsAreRefused(text: String) {
        expectSteerError(.invalidRequest) { _ = try IndexSpec(parsing: text) }
    }

    @Test func refusalsNameTheProblem() {
        #expect(expectSteerError(.invalidRequest) { _ = try IndexSpec(parsing: "HNSW32,SQ4") }?.message.contains("SQ8 codes only") == true)
        #expect(expectSteerError(.invalidRequest) { _ = try IndexSpec(parsing: "HNSW32,PQ8") }?.message.contains("not supported") == true)
        let long = "HNSW32," + String(repeating: "x", count: 300)
        #expect(expectSteerError(.invalidRequest) { _ = try IndexSpec(parsing: long) }?.message.contains("more than 256") == true)
    }

    @Test func needsTrainingAndScoresCodesWithGoodRecall() throws {
        let data = Fixtures.standard
        let index = try VectorIndex(spec: IndexSpec(parsing: "HNSW32,SQ8"), dimension: data.dimension, metric: .innerProduct)
        #expect(!index.isTrained)
        expectSteerError(.invalidRequest) { try index.add(data.row(0), labels: [1]) }
        try index.train(data.base)
        #expect(index.isTrained)
        try index.add(data.base, labels: data.labels)
        #expect(index.count == data.baseCount)
        expectSteerError(.invalidRequest) { try index.train(data.base) }
        let found = try index.search(data.queries, k: 10, parameters: .init(efSearch: 128))
        let r = recall(found, Fixtures.standardTruthIP)
        // SQ8 codes order near neighbours almost like floats; the engine rescores.
        #expect(r >= 0.9, "HNSW32,SQ8 recall@10 \(r)")
        // Scores are code scores: close to the exact inner products, not equal.
        let query = data.query(0)
        for hit in found[0] {
            let row = data.row(Int(hit.label - 1000))
            let exact = zip(query, row).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            #expect(abs(hit.score - exact) < 0.05 * max(1, abs(exact)), "score \(hit.score) vs exact \(exact)")
        }
    }

    @Test func filtersTombstonesAndCompactionKeepWorking() throws {
        let data = Fixtures.small
        let index = try makeIndex("HNSW16,SQ8", data, metric: .l2)
        // A small allowed set is scored exactly over the codes; a larger one inside the beam.
        let few = Array(data.labels.prefix(40))
        let many = data.labels.filter { $0 % 3 == 0 }
        for allowed in [few, many] {
            let hits = try index.search(data.queries, k: 10, parameters: .init(efSearch: 64, allowed: AllowedLabels(allowed)))
            let allowedSet = Set(allowed)
            #expect(hits.allSatisfy { $0.count == 10 && $0.allSatisfy { allowedSet.contains($0.label) } })
        }
        // 30 % removed: automatic compaction rebuilds the graph from the decoded codes.
        index.autoCompactFraction = 0.25
        let removed = data.labels.filter { $0 % 10 < 3 }
        #expect(try index.remove(labels: removed) == removed.count)
        #expect(index.tombstoneCount == 0 && index.count == data.baseCount - removed.count)
        let removedSet = Set(removed)
        let truth = data.truth(k: 10, metric: .l2, skip: removedSet)
        let found = try index.search(data.queries, k: 10, parameters: .init(efSearch: 64))
        #expect(found.allSatisfy { $0.count == 10 && $0.allSatisfy { !removedSet.contains($0.label) } })
        let r = recall(found, truth)
        #expect(r >= 0.9, "recall after compaction \(r)")
        // Re-adding a removed label puts it back; replacing a live one keeps one copy.
        try index.add(data.row(0), labels: [1000])
        try index.add(data.row(5), labels: [1005])
        #expect(index.contains(label: 1000) && index.count == data.baseCount - removed.count + 1)
    }

    @Test func saveAndLoadGiveTheSameAnswers() throws {
        let data = Fixtures.small
        for metric in [Metric.innerProduct, .l2, .cosine] {
            let index = try makeIndex("HNSW8,SQ8,efC40", data, metric: metric)
            _ = try index.remove(labels: [1000, 1001, 1002])
            let path = temporaryPath("hnsw-sq8")
            defer { unlink(path) }
            try index.save(to: path)
            let loaded = try VectorIndex.load(path: path)
            #expect(loaded.spec == index.spec && loaded.isTrained && loaded.count == index.count && loaded.tombstoneCount == 3)
            #expect(try loaded.search(data.queries, k: 10) == index.search(data.queries, k: 10), "\(metric)")
            // The loaded index takes more vectors with the same trained ranges.
            try loaded.add(data.row(1), labels: [1001])
            #expect(loaded.contains(label: 1001))
        }
    }

    @Test func anUntrainedEmptyIndexSavesAndLoads() throws {
        let index = try VectorIndex(spec: IndexSpec(parsing: "HNSW8,SQ8"), dimension: 16, metric: .l2)
        let path = temporaryPath("hnsw-sq8-empty")
        defer { unlink(path) }
        try index.save(to: path)
        let loaded = try VectorIndex.load(path: path)
        #expect(!loaded.isTrained && loaded.count == 0)
        try loaded.train(Fixtures.small.base)
        try loaded.add(Fixtures.small.base, labels: Fixtures.small.labels)
        #expect(loaded.count == Fixtures.small.baseCount)
    }

    /// Offset of the storage ("IxSQ") in an IHNs section: the HNSW vectors as in IHNf, then 5 ints.
    static func storageOffset(_ s: [UInt8]) -> Int {
        func u64(_ at: Int) -> Int { Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(s[at + $1]) << (8 * UInt64($1)) }) }
        var at = 4 + 33
        for element in [8, 4, 4, 8, 4] { at += 8 + u64(at) * element }
        return at + 20
    }

    @Test func craftedSQ8SectionsAreRefused() throws {
        let data = Fixtures.small
        let index = try makeIndex("HNSW8,SQ8", data, metric: .l2)
        let good = temporaryPath("hnsw-sq8-good")
        defer { unlink(good) }
        try index.save(to: good)
        let file = IndexFileTests.readFile(good)
        let section = IndexFileTests.faissSection(file)
        #expect(Array(section[0..<4]) == Array("IHNs".utf8))
        let storage = Self.storageOffset(section)
        #expect(Array(section[storage..<(storage + 4)]) == Array("IxSQ".utf8))
        let sq = storage + 4 + 33 // qtype, rangestat, rangestat_arg, d (u64), code_size (u64), trained (vector), codes (vector)
        let hostile = HostileIndexFileTests()
        try hostile.expectCorrupt(file, "Flat storage under IHNs", mentioning: "does not belong") {
            for (i, byte) in "IxFl".utf8.enumerated() { $0[storage + i] = byte }
        }
        try hostile.expectCorrupt(file, "SQ storage under IHNf", mentioning: "does not belong") {
            for (i, byte) in "IHNf".utf8.enumerated() { $0[i] = byte }
        }
        // (The SQ code_size field is not checked: faiss's reader recomputes it from qtype and d.)
        try hostile.expectCorrupt(file, "4-bit codes", mentioning: "Flat or SQ8") { HostileIndexFileTests.put32(1, &$0, at: sq) }
        try hostile.expectCorrupt(file, "SQ d", mentioning: "SQ dimension") { HostileIndexFileTests.put64(17, &$0, at: sq + 12) }
        try hostile.expectCorrupt(file, "trained 2^37", mentioning: "SQ trained") { HostileIndexFileTests.put64(1 << 37, &$0, at: sq + 28) }
        let codes = sq + 28 + 8 + 2 * data.dimension * 4
        try hostile.expectCorrupt(file, "codes 2^37", mentioning: "SQ codes") { HostileIndexFileTests.put64(1 << 37, &$0, at: codes) }
        try hostile.expectCorrupt(file, "NaN range", mentioning: "non-finite") {
            HostileIndexFileTests.put32(Int32(bitPattern: Float.nan.bitPattern), &$0, at: sq + 28 + 8)
        }
        // The intact file still loads.
        #expect(try VectorIndex.load(path: good).search(data.queries, k: 5) == index.search(data.queries, k: 5))
    }

    @Test func aFloatHNSWFileDoesNotPassForSQ8() throws {
        // The header's spec says HNSW8,SQ8 while the faiss section is IndexHNSWFlat (or the reverse).
        let data = Fixtures.small
        let flat = try makeIndex("HNSW8", data)
        let sq8 = try makeIndex("HNSW8,SQ8", data)
        let flatPath = temporaryPath("hnsw-flat"), sqPath = temporaryPath("hnsw-sq8")
        defer { unlink(flatPath); unlink(sqPath) }
        try flat.save(to: flatPath)
        try sq8.save(to: sqPath)
        let swapped = try IndexFileTests.rewrite(IndexFileTests.readFile(sqPath), faissBytes: IndexFileTests.faissSection(IndexFileTests.readFile(flatPath)))
        let path = temporaryPath("hnsw-swapped")
        defer { unlink(path) }
        IndexFileTests.writeFile(path, swapped)
        expectSteerError(.corrupt) { _ = try VectorIndex.load(path: path) }
    }
}
