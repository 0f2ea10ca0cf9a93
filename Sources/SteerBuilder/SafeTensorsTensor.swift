import Foundation
import SteerCore

/// Reads one float32 matrix from a safetensors file, validating everything it relies on: the 8-byte
/// little-endian header length, the JSON header, the tensor's dtype, rank-2 shape and data offsets against
/// the file size. Only what `steer ingest` needs (SteerModel has the full reader).
public enum SafeTensorsMatrix {
    /// Largest accepted JSON header, in bytes.
    public static let maxHeaderBytes = 100 << 20

    /// The tensor `name` as `rows × columns` row-major floats.
    ///
    /// - Throws: `.notFound` when the file or the tensor is missing; `.corrupt` naming the file and the
    ///   problem for anything malformed; `.invalidRequest` for a dtype other than F32 or a rank other than 2.
    public static func read(path: String, tensor name: String) throws(SteerError) -> (rows: Int, columns: Int, values: [Float]) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw SteerError.notFound("'\(path)' does not exist") }
            throw SteerError(.io, "cannot open '\(path)': \(String(cString: strerror(code)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SteerError(.io, "cannot stat '\(path)'") }
        let fileSize = Int64(info.st_size)
        func corrupt(_ message: String) -> SteerError { SteerError(.corrupt, "'\(path)': \(message)") }

        var lengthBytes = [UInt8](repeating: 0, count: 8)
        try readExactly(fd, into: &lengthBytes, offset: 0, path: path)
        var headerLength: UInt64 = 0
        for (i, byte) in lengthBytes.enumerated() { headerLength |= UInt64(byte) << (8 * UInt64(i)) }
        guard headerLength > 0, headerLength <= UInt64(maxHeaderBytes), Int64(headerLength) + 8 <= fileSize else {
            throw corrupt("header length \(headerLength) does not fit the file (\(fileSize) bytes)")
        }
        var header = [UInt8](repeating: 0, count: Int(headerLength))
        try readExactly(fd, into: &header, offset: 8, path: path)
        guard let object = try? JSONSerialization.jsonObject(with: Data(header)) as? [String: Any] else {
            throw corrupt("the header is not a JSON object")
        }
        guard let entry = object[name] else { throw SteerError.notFound("'\(path)' has no tensor '\(name)'") }
        guard let fields = entry as? [String: Any] else { throw corrupt("entry '\(name)' is not an object") }
        guard let dtype = fields["dtype"] as? String else { throw corrupt("'\(name)'.dtype is missing") }
        guard dtype == "F32" else { throw SteerError.invalid("'\(path)': tensor '\(name)' is \(dtype), expected F32") }
        guard let shape = fields["shape"] as? [Any], let dims = integers(shape) else { throw corrupt("'\(name)'.shape is not a list of integers") }
        guard dims.count == 2 else { throw SteerError.invalid("'\(path)': tensor '\(name)' has rank \(dims.count), expected 2") }
        guard let offsetList = fields["data_offsets"] as? [Any], let offsets = integers(offsetList), offsets.count == 2 else {
            throw corrupt("'\(name)'.data_offsets is not two integers")
        }
        let (rows, columns) = (dims[0], dims[1])
        guard rows >= 0, columns > 0, rows <= Int.max / columns / 4 else { throw corrupt("'\(name)' has an invalid shape \(dims)") }
        let dataStart = 8 + Int64(headerLength)
        let (begin, end) = (Int64(offsets[0]), Int64(offsets[1]))
        guard begin >= 0, end >= begin, end - begin == Int64(rows * columns * 4) else {
            throw corrupt("'\(name)'.data_offsets [\(begin), \(end)] do not match its shape \(dims) of F32")
        }
        guard dataStart + end <= fileSize else {
            throw corrupt("tensor '\(name)' ends at byte \(dataStart + end), past the end of the file (\(fileSize) bytes): truncated?")
        }
        var values = [Float](repeating: 0, count: rows * columns)
        let failure = values.withUnsafeMutableBytes { raw in
            Result { () throws(SteerError) in try readExactly(fd, into: raw, offset: dataStart + begin, path: path) }
        }
        try failure.get()
        #if _endian(big)
        values = values.map { Float(bitPattern: UInt32(littleEndian: $0.bitPattern)) }
        #endif
        return (rows, columns, values)
    }

    private static func integers(_ list: [Any]) -> [Int]? {
        var result: [Int] = []
        for value in list {
            guard let number = value as? NSNumber, let exact = Int(exactly: number.doubleValue) else { return nil }
            result.append(exact)
        }
        return result
    }

    private static func readExactly(_ fd: Int32, into bytes: inout [UInt8], offset: Int64, path: String) throws(SteerError) {
        let result = bytes.withUnsafeMutableBytes { raw in
            Result { () throws(SteerError) in try readExactly(fd, into: raw, offset: offset, path: path) }
        }
        try result.get()
    }

    private static func readExactly(_ fd: Int32, into raw: UnsafeMutableRawBufferPointer, offset: Int64, path: String) throws(SteerError) {
        var done = 0
        while done < raw.count {
            let got = pread(fd, raw.baseAddress! + done, raw.count - done, off_t(offset + Int64(done)))
            if got < 0 {
                if errno == EINTR { continue }
                throw SteerError(.io, "cannot read '\(path)': \(String(cString: strerror(errno)))")
            }
            if got == 0 { throw SteerError(.corrupt, "'\(path)' is truncated") }
            done += got
        }
    }
}
