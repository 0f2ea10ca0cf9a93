#if canImport(Glibc)
import Glibc
#endif
import SteerCore
@testable import SteerIndex
import Testing

/// Index files are untrusted: crafted files (valid checksum, hostile content) must load as `corrupt`,
/// never read outside faiss's arrays or allocate what the file does not hold (docs/index.md).
@Suite struct HostileIndexFileTests {
    /// Byte offsets of the fields of an HNSW faiss section ("IHNf", 1.7.3 layout): each vector's
    /// offset is that of its element count (u64), followed by the elements.
    struct HNSWLayout {
        var ntotal = 0, assignProbas = 0, cum = 0, levels = 0, offsets = 0, neighbors = 0, entryPoint = 0
        var storage = 0
        var rows = 0, cumCount = 0, neighborCount = 0

        init(_ s: [UInt8]) {
            func u64(_ at: Int) -> Int { Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(s[at + $1]) << (8 * UInt64($1)) }) }
            #expect(Array(s[0..<4]) == Array("IHNf".utf8))
            ntotal = 8
            rows = u64(ntotal)
            assignProbas = 4 + 33
            cum = assignProbas + 8 + u64(assignProbas) * 8
            cumCount = u64(cum)
            levels = cum + 8 + cumCount * 4
            offsets = levels + 8 + u64(levels) * 4
            neighbors = offsets + 8 + u64(offsets) * 8
            neighborCount = u64(neighbors)
            entryPoint = neighbors + 8 + neighborCount * 4
            storage = entryPoint + 20
        }
    }

    static func put32(_ value: Int32, _ bytes: inout [UInt8], at offset: Int) {
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: UInt32(bitPattern: value) >> (8 * UInt32(i))) }
    }

    static func put64(_ value: UInt64, _ bytes: inout [UInt8], at offset: Int) {
        for i in 0..<8 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    static func get32(_ bytes: [UInt8], at offset: Int) -> Int32 {
        Int32(bitPattern: (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) })
    }

    /// Writes `file` with its faiss section changed by `change`, checksum recomputed; expects `corrupt`
    /// mentioning `mentioning`.
    func expectCorrupt(_ file: [UInt8], _ what: String, mentioning: String, sourceLocation: SourceLocation = #_sourceLocation,
                       _ change: (inout [UInt8]) -> Void) throws {
        var faiss = IndexFileTests.faissSection(file)
        change(&faiss)
        let path = temporaryPath("hostile")
        defer { unlink(path) }
        IndexFileTests.writeFile(path, try IndexFileTests.rewrite(file, faissBytes: faiss))
        let error = expectSteerError(.corrupt, sourceLocation: sourceLocation) { _ = try VectorIndex.load(path: path) }
        #expect(error?.message.contains(mentioning) == true, "\(what): \(error?.message ?? "no error")", sourceLocation: sourceLocation)
    }

    @Test func everyHNSWGraphFieldIsBoundsChecked() throws {
        let data = Fixtures.small
        let index = try makeIndex("HNSW8", data, metric: .l2)
        let good = temporaryPath("hnsw-good")
        defer { unlink(good) }
        try index.save(to: good)
        let file = IndexFileTests.readFile(good)
        let layout = HNSWLayout(IndexFileTests.faissSection(file))
        #expect(layout.rows == data.baseCount && layout.cumCount >= 2)
        let last = layout.neighbors + 8 + (layout.neighborCount - 1) * 4

        // Entry point and top level.
        try expectCorrupt(file, "entry point past the rows", mentioning: "entry point") { Self.put32(Int32(data.baseCount + 7), &$0, at: layout.entryPoint) }
        try expectCorrupt(file, "negative entry point", mentioning: "entry point") { Self.put32(-5, &$0, at: layout.entryPoint) }
        try expectCorrupt(file, "max level above the entry point's", mentioning: "max_level") { Self.put32(40, &$0, at: layout.entryPoint + 4) }
        try expectCorrupt(file, "efConstruction 0", mentioning: "efConstruction") { Self.put32(0, &$0, at: layout.entryPoint + 8) }
        // Levels.
        try expectCorrupt(file, "level 0", mentioning: "level") { Self.put32(0, &$0, at: layout.levels + 8) }
        try expectCorrupt(file, "level beyond the table", mentioning: "level") { Self.put32(1_000_000, &$0, at: layout.levels + 8 + 4 * 17) }
        // Neighbour ids: past the rows, negative other than -1, and linking at a level the target lacks.
        try expectCorrupt(file, "neighbour past the rows", mentioning: "links to row") { Self.put32(Int32(data.baseCount), &$0, at: layout.neighbors + 8) }
        try expectCorrupt(file, "neighbour -9", mentioning: "links to row") { Self.put32(-9, &$0, at: last) }
        // Offsets and the per-level table.
        try expectCorrupt(file, "offset shifted", mentioning: "offsets") {
            Self.put64(UInt64(41), &$0, at: layout.offsets + 8 + 8)
        }
        try expectCorrupt(file, "offsets not starting at 0", mentioning: "offsets") { Self.put64(3, &$0, at: layout.offsets + 8) }
        try expectCorrupt(file, "cum table not starting at 0", mentioning: "cum_nneighbor_per_level") { Self.put32(5, &$0, at: layout.cum + 8) }
        try expectCorrupt(file, "cum table decreasing", mentioning: "cum_nneighbor_per_level") {
            Self.put32(Int32.max, &$0, at: layout.cum + 8 + 4)
        }
        try expectCorrupt(file, "assign_probas NaN", mentioning: "assign_probas") {
            Self.put64(Double.nan.bitPattern, &$0, at: layout.assignProbas + 8)
        }
        // Declared lengths the section does not hold: refused before any allocation.
        for (field, offset) in [("HNSW neighbors", layout.neighbors), ("HNSW levels", layout.levels), ("HNSW offsets", layout.offsets),
                                ("HNSW assign_probas", layout.assignProbas), ("HNSW cum_nneighbor_per_level", layout.cum)] {
            try expectCorrupt(file, "\(field) count 2^39", mentioning: field) { Self.put64(1 << 39, &$0, at: offset) }
            try expectCorrupt(file, "\(field) count 2^26", mentioning: field) { Self.put64(1 << 26, &$0, at: offset) }
        }
        try expectCorrupt(file, "storage vectors 2^37", mentioning: "flat vectors") { Self.put64(1 << 37, &$0, at: layout.storage + 4 + 33) }
        try expectCorrupt(file, "ntotal beyond the section", mentioning: "ntotal") { Self.put64(1 << 40, &$0, at: layout.ntotal) }
        // The intact file loads and answers as before.
        let loaded = try VectorIndex.load(path: good)
        #expect(try loaded.search(data.queries, k: 5) == index.search(data.queries, k: 5))
    }

    @Test func aLinkToARowWithoutThatLevelIsRefused() throws {
        let data = Fixtures.small
        let index = try makeIndex("HNSW8", data)
        let good = temporaryPath("hnsw-levels")
        defer { unlink(good) }
        try index.save(to: good)
        let file = IndexFileTests.readFile(good)
        let section = IndexFileTests.faissSection(file)
        let layout = HNSWLayout(section)
        // The entry point's level-1 list (its second list) pointing to a row that is only on level 0.
        let entry = Int(Self.get32(section, at: layout.entryPoint))
        let levels = (0..<layout.rows).map { Self.get32(section, at: layout.levels + 8 + 4 * $0) }
        let groundRow = try #require(levels.firstIndex(of: 1))
        func u64(_ at: Int) -> Int { Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(section[at + $1]) << (8 * UInt64($1)) }) }
        let entryOffset = u64(layout.offsets + 8 + 8 * entry)
        let levelOneStart = entryOffset + Int(Self.get32(section, at: layout.cum + 8 + 4))
        try expectCorrupt(file, "level-1 link to a level-0 row", mentioning: "not on that level") {
            Self.put32(Int32(groundRow), &$0, at: layout.neighbors + 8 + 4 * levelOneStart)
        }
    }

    @Test func ivfSectionsAreWalkedBeforeFaissAllocates() throws {
        let data = Fixtures.small
        func u64(_ bytes: [UInt8], _ at: Int) -> Int { Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) }) }
        for factory in ["IVF32,Flat", "IVF32,PQ8"] {
            let index = try makeIndex(factory, data)
            let good = temporaryPath("ivf-good")
            defer { unlink(good) }
            try index.save(to: good)
            let file = IndexFileTests.readFile(good)
            let section = IndexFileTests.faissSection(file)
            // "Iw..", header (33), nlist, nprobe, quantizer "IxFI" + header + vectors, direct map (type, count).
            let nlist = 37, quantizerVectors = 53 + 37
            #expect(u64(section, nlist) == 32 && u64(section, quantizerVectors) == 32 * data.dimension)
            let directMap = quantizerVectors + 8 + 32 * data.dimension * 4
            try expectCorrupt(file, "\(factory) nlist 2^40", mentioning: "nlist") { Self.put64(1 << 40, &$0, at: nlist) }
            try expectCorrupt(file, "\(factory) nlist 31", mentioning: "quantizer holds another count") { Self.put64(31, &$0, at: nlist) }
            try expectCorrupt(file, "\(factory) direct map 2^40", mentioning: "IVF direct map") { Self.put64(1 << 40, &$0, at: directMap + 1) }
            try expectCorrupt(file, "\(factory) unknown type", mentioning: "not one Steer writes") { $0.replaceSubrange(0..<4, with: Array("IwFd".utf8)) }
            var lists = directMap + 9
            if factory.hasSuffix("PQ8") {
                let pq = directMap + 9 + 1 + 8
                try expectCorrupt(file, "PQ M 0", mentioning: "PQ parameters") { Self.put64(0, &$0, at: pq + 8) }
                try expectCorrupt(file, "PQ nbits 40", mentioning: "PQ parameters") { Self.put64(40, &$0, at: pq + 16) }
                try expectCorrupt(file, "PQ centroids 2^40", mentioning: "PQ centroids") { Self.put64(1 << 40, &$0, at: pq + 24) }
                lists = pq + 32 + u64(section, pq + 24) * 4
            }
            #expect(Array(section[lists..<(lists + 4)]) == Array("ilar".utf8), "\(factory): inverted lists at \(lists)")
            try expectCorrupt(file, "\(factory) code size", mentioning: "code size") { Self.put64(3, &$0, at: lists + 12) }
            let sizes = lists + 32
            try expectCorrupt(file, "\(factory) list size 2^40", mentioning: "inverted list sizes exceed") { Self.put64(1 << 40, &$0, at: sizes) }
            try expectCorrupt(file, "\(factory) list size 10^4", mentioning: "more entries than the section holds") { Self.put64(10_000, &$0, at: sizes + 8) }
            try expectCorrupt(file, "\(factory) size count", mentioning: "do not match nlist") { Self.put64(33, &$0, at: lists + 24) }
            for mapped in [false, true] { #expect(try VectorIndex.load(path: good, memoryMapped: mapped).count == data.baseCount) }
        }
    }

    @Test func flatIDMapsAreChecked() throws {
        let data = Fixtures.small
        let index = try makeIndex("Flat", data)
        let good = temporaryPath("flat-good")
        defer { unlink(good) }
        try index.save(to: good)
        let file = IndexFileTests.readFile(good)
        let section = IndexFileTests.faissSection(file)
        #expect(Array(section[0..<4]) == Array("IxM2".utf8))
        // IxM2 header (4 + 33), inner IxFI/IxF2 (4 + 33), vectors (8 + n·d·4), then the id map (8 + n·8).
        let vectors = 4 + 33 + 4 + 33
        let idMap = vectors + 8 + data.baseCount * data.dimension * 4
        try expectCorrupt(file, "negative label", mentioning: "negative") { Self.put64(UInt64(bitPattern: -3), &$0, at: idMap + 8) }
        try expectCorrupt(file, "duplicate label", mentioning: "twice") {
            let second = Array($0[(idMap + 16)..<(idMap + 24)])
            $0.replaceSubrange((idMap + 8)..<(idMap + 16), with: second)
        }
        try expectCorrupt(file, "id map count 2^40", mentioning: "id_map") { Self.put64(1 << 40, &$0, at: idMap) }
        try expectCorrupt(file, "vector count 2^36", mentioning: "flat vectors") { Self.put64(1 << 36, &$0, at: vectors) }
        #expect(try VectorIndex.load(path: good).count == data.baseCount)
    }
}
