#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CFaissShim
import SteerCore

/// Steer's index file: a fixed header, the spec, HNSW's row-label map, faiss's own serialized bytes and
/// a CRC-32 trailer (layout in docs/index.md). Little-endian throughout.
enum IndexFile {
    static let magic: [UInt8] = Array("STEERIDX".utf8)
    static let endMagic: [UInt8] = Array("XDIS".utf8)
    static let formatVersion: UInt32 = 1
    static let headerBytes = 64
    static let trailerBytes = 8
    static let maxSpecBytes = 256

    static func metricCode(_ metric: Metric) -> UInt32 {
        switch metric {
        case .innerProduct: return 0
        case .l2: return 1
        case .cosine: return 2
        }
    }

    static func metric(code: UInt32) -> Metric? {
        switch code {
        case 0: return .innerProduct
        case 1: return .l2
        case 2: return .cosine
        default: return nil
        }
    }

    static func padded(_ n: Int) -> Int { (n + 7) & ~7 }
}

extension VectorIndex {
    /// Writes the index to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
    /// directory. Concurrent searches continue; mutations wait.
    /// - Throws: `io_error` naming the file when the system refuses a step.
    public func save(to path: String) throws(SteerError) {
        try withHandleForSave { (handle, nprobe, efSearch) throws(SteerError) in
            var bytes: UnsafeMutablePointer<UInt8>?
            var length: UInt64 = 0
            var error: UnsafeMutablePointer<CChar>?
            let status = steer_index_serialize(handle, &bytes, &length, &error)
            try Native.check(status, error, "serializing index \(spec) for \(path)")
            defer { steer_faiss_free(bytes) }
            let rows = Int(steer_index_family(handle) == STEER_FAMILY_HNSW ? steer_index_rows(handle) : 0)
            var rowLabels = [Int64](repeating: 0, count: rows)
            let labelStatus = rowLabels.withUnsafeMutableBufferPointer { steer_index_row_labels(handle, $0.baseAddress, Int64(rows), &error) }
            try Native.check(labelStatus, error, "reading the label map for \(path)")

            let specBytes = Array(spec.factoryString.utf8)
            var head = ByteWriter()
            head.append(IndexFile.magic)
            head.append(UInt32(IndexFile.formatVersion))
            head.append(IndexFile.metricCode(metric))
            head.append(UInt64(dimension))
            head.append(UInt64(nprobe))
            head.append(UInt64(efSearch))
            head.append(UInt64(specBytes.count))
            head.append(UInt64(rows))
            head.append(length)
            precondition(head.bytes.count == IndexFile.headerBytes)
            head.append(specBytes)
            head.append([UInt8](repeating: 0, count: IndexFile.padded(specBytes.count) - specBytes.count))
            for label in rowLabels { head.append(UInt64(bitPattern: label)) }

            let faissBytes = UnsafeRawBufferPointer(start: bytes, count: Int(length))
            var crc = head.bytes.withUnsafeBytes { steer_crc32(0, $0.baseAddress, $0.count) }
            crc = steer_crc32(crc, faissBytes.baseAddress, faissBytes.count)
            var tail = ByteWriter()
            tail.append(crc)
            tail.append(IndexFile.endMagic)

            var failure: SteerError?
            head.bytes.withUnsafeBytes { headBytes in
                tail.bytes.withUnsafeBytes { tailBytes in
                    do throws(SteerError) { try AtomicFile.write(parts: [headBytes, faissBytes, tailBytes], to: path) } catch { failure = error }
                }
            }
            if let failure { throw failure }
        }
    }

    /// Reads an index written by `save(to:)`.
    /// - Parameters:
    ///   - memoryMapped: IVF indexes map their inverted lists from the file instead of reading them
    ///     (faiss IO_FLAG_MMAP); the first mutation copies them into memory. Ignored for Flat and HNSW.
    /// - Throws: `not_found` for a missing file, `corrupt` naming the file for a wrong magic, an
    ///   unsupported version, a truncated file, a checksum mismatch or bytes faiss cannot read;
    ///   `io_error` for other system errors.
    public static func load(path: String, memoryMapped: Bool = false) throws(SteerError) -> VectorIndex {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == ENOENT { throw SteerError.notFound("index file \(path) does not exist") }
            throw SteerError(.io, "index file \(path): \(String(cString: strerror(code)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SteerError(.io, "index file \(path): \(String(cString: strerror(errno)))") }
        let fileSize = Int(info.st_size)
        func corrupt(_ what: String) -> SteerError { SteerError(.corrupt, "index file \(path): \(what)") }
        guard fileSize >= IndexFile.headerBytes + IndexFile.trailerBytes else {
            throw corrupt("truncated: \(fileSize) bytes is shorter than the header")
        }
        let header = try readBytes(fd: fd, offset: 0, count: IndexFile.headerBytes, path: path)
        var reader = ByteReader(header)
        guard reader.bytes(8) == IndexFile.magic else { throw corrupt("not a Steer index file (bad magic)") }
        let version = reader.u32()
        guard version == IndexFile.formatVersion else {
            throw corrupt("format version \(version) is not supported (this build reads version \(IndexFile.formatVersion))")
        }
        let metricCode = reader.u32()
        let dimension = reader.u64(), nprobe = reader.u64(), efSearch = reader.u64()
        let specCount = reader.u64(), rows = reader.u64(), faissLength = reader.u64()
        guard let metric = IndexFile.metric(code: metricCode) else { throw corrupt("unknown metric code \(metricCode)") }
        guard dimension >= 1, dimension <= UInt64(maxDimension) else { throw corrupt("dimension \(dimension) is out of range") }
        guard specCount >= 1, specCount <= UInt64(IndexFile.maxSpecBytes) else { throw corrupt("spec length \(specCount) is out of range") }
        guard rows <= UInt64(fileSize / 8), faissLength <= UInt64(fileSize) else { throw corrupt("section lengths exceed the file size") }
        let specOffset = IndexFile.headerBytes
        let labelsOffset = specOffset + IndexFile.padded(Int(specCount))
        let faissOffset = labelsOffset + Int(rows) * 8
        let expected = faissOffset + Int(faissLength) + IndexFile.trailerBytes
        guard expected == fileSize else {
            throw corrupt(expected > fileSize ? "truncated: header describes \(expected) bytes, file has \(fileSize)"
                                              : "header describes \(expected) bytes, file has \(fileSize)")
        }
        let trailer = try readBytes(fd: fd, offset: fileSize - IndexFile.trailerBytes, count: IndexFile.trailerBytes, path: path)
        var trailerReader = ByteReader(trailer)
        let storedCRC = trailerReader.u32()
        guard trailerReader.bytes(4) == IndexFile.endMagic else { throw corrupt("missing end marker (truncated or overwritten)") }
        var crc: UInt32 = 0
        var error: UnsafeMutablePointer<CChar>?
        let crcStatus = steer_file_crc32(path, 0, UInt64(fileSize - IndexFile.trailerBytes), &crc, &error)
        try Native.check(crcStatus, error, "index file \(path)")
        guard crc == storedCRC else {
            throw corrupt("checksum mismatch (stored \(hex(storedCRC)), computed \(hex(crc)))")
        }

        let specBytes = try readBytes(fd: fd, offset: specOffset, count: Int(specCount), path: path)
        guard let specText = String(validating: specBytes, as: UTF8.self) else { throw corrupt("spec is not UTF-8") }
        let spec: IndexSpec
        do { spec = try IndexSpec(parsing: specText) } catch { throw corrupt("bad spec '\(specText)': \(error.message)") }
        let labelBytes = try readBytes(fd: fd, offset: labelsOffset, count: Int(rows) * 8, path: path)
        var labelReader = ByteReader(labelBytes)
        var rowLabels = [Int64](repeating: 0, count: Int(rows))
        for i in 0..<Int(rows) { rowLabels[i] = Int64(bitPattern: labelReader.u64()) }

        var handle: OpaquePointer?
        let status = rowLabels.withUnsafeBufferPointer { labels in
            steer_index_read(path, UInt64(faissOffset), faissLength, memoryMapped ? 1 : 0,
                             labels.baseAddress, Int64(rows), &handle, &error)
        }
        if status == STEER_FAISS_INVALID || status == STEER_FAISS_CORRUPT {
            let message = error.map { String(cString: $0) } ?? "unreadable faiss section"
            steer_faiss_free(error)
            throw corrupt(message)
        }
        try Native.check(status, error, "index file \(path)")
        guard let handle else { throw SteerError.internalError("index file \(path): reader returned no handle") }

        let expectedFamily: Int32
        switch spec.family {
        case .flat: expectedFamily = STEER_FAMILY_FLAT
        case .hnsw, .hnswSQ8: expectedFamily = STEER_FAMILY_HNSW
        case .ivfFlat, .ivfPQ, .ivfSQ8, .opqIVFPQ: expectedFamily = STEER_FAMILY_IVF
        }
        let consistent = steer_index_family(handle) == expectedFamily
            && steer_index_dimension(handle) == Int64(dimension)
            && steer_index_metric(handle) == metric.faissCode
            && (spec.lists.map { Int64($0) == steer_index_lists(handle) } ?? true)
            && hnswMatches(spec, handle)
            && steer_index_opq_dimension(handle) == Int64(spec.opqDimension(dimension: Int(dimension)) ?? 0)
        guard consistent else {
            steer_index_free(handle)
            throw corrupt("faiss section does not match the header (spec \(spec), dimension \(dimension), metric \(metric.rawValue))")
        }
        return VectorIndex(handle: handle, spec: spec, dimension: Int(dimension), metric: metric,
                           nprobe: Int(max(1, min(nprobe, 1 << 30))), efSearch: Int(max(1, min(efSearch, 1 << 30))))
    }

    private static func hnswMatches(_ spec: IndexSpec, _ handle: OpaquePointer) -> Bool {
        let sq8: Bool
        let m: Int, efC: Int
        switch spec.family {
        case .hnsw(let links, let beam): (sq8, m, efC) = (false, links, beam)
        case .hnswSQ8(let links, let beam): (sq8, m, efC) = (true, links, beam)
        case .flat, .ivfFlat, .ivfPQ, .ivfSQ8, .opqIVFPQ: return true
        }
        return steer_index_hnsw_m(handle) == Int64(m) && steer_index_ef_construction(handle) == Int64(efC)
            && (steer_index_hnsw_sq8(handle) != 0) == sq8
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }

    private static func readBytes(fd: Int32, offset: Int, count: Int, path: String) throws(SteerError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if got < 0 {
                if errno == EINTR { continue }
                throw SteerError(.io, "index file \(path): \(String(cString: strerror(errno)))")
            }
            if got == 0 { throw SteerError(.corrupt, "index file \(path): truncated while reading") }
            done += got
        }
        return buffer
    }
}

// MARK: - Byte helpers

struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func append(_ values: [UInt8]) { bytes.append(contentsOf: values) }
    mutating func append(_ value: UInt32) { for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) } }
    mutating func append(_ value: UInt64) { for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) } }
}

struct ByteReader {
    let data: [UInt8]
    var position = 0
    init(_ data: [UInt8]) { self.data = data }
    mutating func bytes(_ n: Int) -> [UInt8] {
        defer { position += n }
        return Array(data[position..<(position + n)])
    }
    mutating func u32() -> UInt32 {
        var value: UInt32 = 0
        for i in 0..<4 { value |= UInt32(data[position + i]) << UInt32(8 * i) }
        position += 4
        return value
    }
    mutating func u64() -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<8 { value |= UInt64(data[position + i]) << UInt64(8 * i) }
        position += 8
        return value
    }
}
