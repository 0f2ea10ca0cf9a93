#if canImport(Glibc)
import Glibc
#endif
import SteerCore
@testable import SteerIndex
import Testing

@Suite struct IndexFileTests {
    static func readFile(_ path: String) -> [UInt8] {
        guard let file = fopen(path, "rb") else { return [] }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let got = fread(&chunk, 1, chunk.count, file)
            if got == 0 { break }
            bytes.append(contentsOf: chunk[0..<got])
        }
        return bytes
    }

    static func writeFile(_ path: String, _ bytes: [UInt8]) {
        let file = fopen(path, "wb")!
        _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
    }

    @Test(arguments: ["Flat", "HNSW16", "IVF32,Flat", "IVF32,PQ8", "IVF32,SQ8"], [false, true])
    func saveAndLoadGiveIdenticalResults(factory: String, mapped: Bool) throws {
        let data = Fixtures.small
        let index = try makeIndex(factory, data, metric: factory == "HNSW16" ? .cosine : .innerProduct)
        index.autoCompactFraction = 1
        try index.remove(labels: [1000, 1001, 1002])
        index.defaultNprobe = 5
        index.defaultEfSearch = 33
        let path = temporaryPath("roundtrip-\(factory)-\(mapped)")
        defer { unlink(path) }
        try index.save(to: path)
        let loaded = try VectorIndex.load(path: path, memoryMapped: mapped)
        #expect(loaded.spec == index.spec && loaded.dimension == index.dimension && loaded.metric == index.metric)
        #expect(loaded.count == index.count && loaded.tombstoneCount == index.tombstoneCount)
        #expect(loaded.defaultNprobe == 5 && loaded.defaultEfSearch == 33)
        #expect(loaded.nativeHNSWParameters == index.nativeHNSWParameters)
        #expect(loaded.isMemoryMapped == (mapped && factory.hasPrefix("IVF")))
        #expect(!loaded.contains(label: 1001) && loaded.contains(label: 1003))
        let allowed = AllowedLabels(data.labels.filter { $0 % 7 == 0 })
        for parameters in [SearchParameters(), SearchParameters(nprobe: 32, efSearch: 100), SearchParameters(allowed: allowed)] {
            #expect(try loaded.search(data.queries, k: 10, parameters: parameters) == index.search(data.queries, k: 10, parameters: parameters))
        }
        // A loaded (even memory-mapped) index accepts mutations; the file is left as it was.
        let before = Self.readFile(path)
        try loaded.add(data.query(0), labels: [77])
        try loaded.remove(labels: [1003])
        #expect(!loaded.isMemoryMapped)
        #expect(try loaded.search(data.query(0), k: 1, parameters: .init(nprobe: 32))[0].first?.label == 77)
        #expect(Self.readFile(path) == before)
        #expect(try VectorIndex.load(path: path).count == index.count)
    }

    @Test func saveReplacesAnExistingFileAndLeavesNoTemporaries() throws {
        let data = Fixtures.small
        let directory = temporaryPath("dir")
        mkdir(directory, 0o755)
        defer { rmdir(directory) }
        let path = directory + "/index.steer"
        defer { unlink(path) }
        let index = try makeIndex("Flat", data)
        try index.save(to: path)
        try index.remove(labels: [1000])
        try index.save(to: path)
        #expect(try VectorIndex.load(path: path).count == data.baseCount - 1)
        var entries: [String] = []
        if let dir = opendir(directory) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { entries.append(name) }
            }
            closedir(dir)
        }
        #expect(entries == ["index.steer"])
        expectSteerError(.io) { try index.save(to: temporaryPath("no-such-dir") + "/x/index.steer") }
    }

    @Test func damagedFilesGiveCorruptErrorsNamingTheFile() throws {
        let data = Fixtures.small
        let index = try makeIndex("HNSW8", data)
        let good = temporaryPath("good")
        let bad = temporaryPath("bad")
        defer { unlink(good); unlink(bad) }
        try index.save(to: good)
        let bytes = Self.readFile(good)
        #expect(bytes.count > 1000)

        func expectCorrupt(_ damaged: [UInt8], _ what: String, mentioning: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
            Self.writeFile(bad, damaged)
            for mapped in [false, true] {
                let error = expectSteerError(.corrupt, sourceLocation: sourceLocation) { _ = try VectorIndex.load(path: bad, memoryMapped: mapped) }
                #expect(error?.message.contains(bad) == true, "\(what): \(error?.message ?? "")", sourceLocation: sourceLocation)
                if let mentioning { #expect(error?.message.contains(mentioning) == true, "\(what): \(error?.message ?? "")", sourceLocation: sourceLocation) }
            }
        }

        var wrongMagic = bytes
        wrongMagic[0] = UInt8(ascii: "X")
        expectCorrupt(wrongMagic, "magic", mentioning: "magic")
        var version = bytes
        version[8] = 2
        expectCorrupt(version, "version", mentioning: "version")
        for cut in [0, 10, 63, 64, 100, bytes.count / 2, bytes.count - 9, bytes.count - 1] {
            expectCorrupt(Array(bytes[0..<cut]), "truncated at \(cut)")
        }
        expectCorrupt(bytes + [0], "trailing byte")
        for position in [70, bytes.count / 2, bytes.count - 20] {
            var flipped = bytes
            flipped[position] ^= 0x40
            expectCorrupt(flipped, "flipped byte at \(position)", mentioning: "checksum")
        }

        // A faiss section that faiss itself rejects, with a valid checksum: the C++ exception is
        // caught in the shim and reported as corrupt.
        let garbage = try Self.rewrite(bytes, faissBytes: Array("not a faiss index at all".utf8))
        expectCorrupt(garbage, "garbage faiss section")
        // A valid faiss section of another family than the header says.
        let flat = try makeIndex("Flat", data)
        try flat.save(to: bad)
        let flatBytes = Self.readFile(bad)
        let flatFaiss = Self.faissSection(flatBytes)
        var mismatched = try Self.rewrite(bytes, faissBytes: flatFaiss, rows: 0)
        expectCorrupt(mismatched, "Flat bytes under an HNSW header")
        mismatched = try Self.rewrite(bytes, faissBytes: Self.faissSection(bytes), rows: 5)
        expectCorrupt(mismatched, "wrong label-map length")

        let missing = expectSteerError(.notFound) { _ = try VectorIndex.load(path: temporaryPath("missing")) }
        #expect(missing?.message.contains("missing") == true)
        #expect(try VectorIndex.load(path: good).count == data.baseCount, "the intact file still loads")
    }

    /// The faiss section of a saved file (layout in docs/index.md).
    static func faissSection(_ bytes: [UInt8]) -> [UInt8] {
        var reader = ByteReader(Array(bytes[0..<64]))
        _ = reader.bytes(16)
        _ = reader.u64(); _ = reader.u64(); _ = reader.u64()
        let spec = Int(reader.u64()), rows = Int(reader.u64()), length = Int(reader.u64())
        let offset = 64 + IndexFile.padded(spec) + rows * 8
        return Array(bytes[offset..<(offset + length)])
    }

    /// Rebuilds a file with another faiss section (and optionally another row count, labels 0...),
    /// recomputing the checksum so only the content is wrong.
    static func rewrite(_ bytes: [UInt8], faissBytes: [UInt8], rows newRows: Int? = nil) throws -> [UInt8] {
        var reader = ByteReader(Array(bytes[0..<64]))
        _ = reader.bytes(16)
        _ = reader.u64(); _ = reader.u64(); _ = reader.u64()
        let spec = Int(reader.u64()), rows = Int(reader.u64())
        let specEnd = 64 + IndexFile.padded(spec)
        let useRows = newRows ?? rows
        var writer = ByteWriter()
        writer.append(Array(bytes[0..<48]))
        writer.append(UInt64(useRows))
        writer.append(UInt64(faissBytes.count))
        writer.append(Array(bytes[64..<specEnd]))
        if let newRows {
            for i in 0..<newRows { writer.append(UInt64(i)) }
        } else {
            writer.append(Array(bytes[specEnd..<(specEnd + rows * 8)]))
        }
        writer.append(faissBytes)
        let crc = writer.bytes.withUnsafeBytes { steerCRC($0) }
        writer.append(crc)
        writer.append(IndexFile.endMagic)
        return writer.bytes
    }
}
