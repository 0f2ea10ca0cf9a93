import Foundation
import SteerCore

/// A validated safetensors file: an 8-byte little-endian header length, a JSON header that maps each
/// tensor name to `{"dtype", "shape", "data_offsets"}` (offsets relative to the data section), then the
/// data. The file is mapped once; tensors are copied out as `[Float]` on request.
///
/// Validation at open (the file is untrusted): the header length fits the file and is at most
/// `maxHeaderBytes`, its JSON nests at most `maxHeaderDepth` deep (checked by a byte scan before it is
/// parsed), it is a JSON object of at most `maxTensors` entries, every entry has a known dtype, a shape
/// of at most `maxRank` non-negative integers and offsets `[begin, end]` inside the data section whose
/// length equals `product(shape) × size(dtype)` (so no tensor is ever larger than the file), and no
/// two tensors overlap. Every error is `SteerError(.corrupt, …)` naming the file and, where there is
/// one, the tensor.
public struct SafeTensorsFile: @unchecked Sendable {
    // @unchecked: `data` is an immutable Data value (possibly memory-mapped, never written).

    /// One tensor's header entry.
    public struct Entry: Sendable, Equatable {
        public let dtype: String
        public let shape: [Int]
        /// Byte range inside the data section.
        public let begin: Int
        public let end: Int

        public var count: Int { shape.reduce(1, *) }
    }

    /// The largest accepted JSON header, in bytes: 16 MiB (the format allows 100 MB; Steer's checkpoints
    /// and MiniLM have headers of a few tens of KiB, and parsing is bounded before it starts).
    public static let maxHeaderBytes = 16 << 20
    /// The deepest JSON nesting accepted in a header (a header needs 3: object, entry, shape).
    public static let maxHeaderDepth = 8
    /// The most tensors (header entries) accepted.
    public static let maxTensors = 65_536
    /// The most dimensions a tensor's shape may have.
    public static let maxRank = 8

    /// Bytes per element of the dtypes the format defines.
    static let dtypeSizes: [String: Int] = [
        "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
        "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    ]

    public let path: String
    public let entries: [String: Entry]
    /// `__metadata__`, if the header has it (string values only).
    public let metadata: [String: String]
    private let data: Data
    private let dataStart: Int

    /// Reads and validates `path`.
    /// - Throws: `.notFound` if the file does not exist, `.io` if it cannot be read, `.corrupt` for
    ///   anything malformed.
    public init(path: String) throws(SteerError) {
        guard FileManager.default.fileExists(atPath: path) else {
            throw SteerError(.notFound, "\(path): no such file")
        }
        let bytes: Data
        do {
            bytes = try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
        } catch {
            throw SteerError(.io, "\(path): cannot read: \(error.localizedDescription)")
        }
        try self.init(data: bytes, path: path)
    }

    /// Validates an in-memory file; `path` is only used in messages.
    public init(data input: Data, path: String) throws(SteerError) {
        let bytes = input.startIndex == 0 ? input : Data(input)
        self.path = path
        func corrupt(_ message: String) -> SteerError { SteerError(.corrupt, "\(path): \(message)") }
        guard bytes.count >= 8 else {
            throw corrupt("file is \(bytes.count) bytes, shorter than the 8-byte safetensors header length")
        }
        var headerLength: UInt64 = 0
        for i in 0..<8 { headerLength |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw corrupt("safetensors header length \(headerLength) exceeds the limit of \(Self.maxHeaderBytes) bytes")
        }
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw corrupt("safetensors header length \(headerLength) exceeds the file size \(bytes.count)")
        }
        let header = bytes[8..<(8 + Int(headerLength))]
        guard Self.nestingDepth(header) <= Self.maxHeaderDepth else {
            throw corrupt("safetensors header nests deeper than \(Self.maxHeaderDepth) levels")
        }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: header, options: [])
        } catch {
            throw corrupt("safetensors header is not valid JSON")
        }
        guard let object = parsed as? [String: Any] else { throw corrupt("safetensors header is not a JSON object") }
        let tensorCount = object.count - (object["__metadata__"] == nil ? 0 : 1)
        guard tensorCount <= Self.maxTensors else {
            throw corrupt("safetensors header lists \(tensorCount) tensors, limit is \(Self.maxTensors) tensors")
        }
        let dataStart = 8 + Int(headerLength)
        let dataLength = bytes.count - dataStart
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                guard let meta = value as? [String: Any] else { throw corrupt("__metadata__ is not an object") }
                for (key, item) in meta { if let text = item as? String { metadata[key] = text } }
                continue
            }
            guard let fields = value as? [String: Any] else { throw corrupt("tensor '\(name)': header entry is not an object") }
            guard let dtype = fields["dtype"] as? String else { throw corrupt("tensor '\(name)': missing dtype") }
            guard let size = Self.dtypeSizes[dtype] else { throw corrupt("tensor '\(name)': unknown dtype \(dtype)") }
            guard let shapeValues = fields["shape"] as? [Any] else { throw corrupt("tensor '\(name)': missing shape") }
            guard shapeValues.count <= Self.maxRank else {
                throw corrupt("tensor '\(name)': shape has \(shapeValues.count) dimensions, limit is \(Self.maxRank)")
            }
            var shape: [Int] = []
            for dimension in shapeValues {
                guard let n = JSONValue.integer(dimension), n >= 0, n <= Int(Int32.max) else {
                    throw corrupt("tensor '\(name)': shape is not a list of non-negative integers")
                }
                shape.append(n)
            }
            guard let offsets = fields["data_offsets"] as? [Any], offsets.count == 2,
                  let begin = JSONValue.integer(offsets[0]), let end = JSONValue.integer(offsets[1]) else {
                throw corrupt("tensor '\(name)': data_offsets must be two integers")
            }
            guard begin >= 0, begin <= end, end <= dataLength else {
                throw corrupt("tensor '\(name)': data_offsets [\(begin), \(end)] lie outside the data section (\(dataLength) bytes)")
            }
            var elements = 1
            for n in shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: n)
                guard !overflow else { throw corrupt("tensor '\(name)': shape \(shape) is too large") }
                elements = product
            }
            let (byteCount, overflow) = elements.multipliedReportingOverflow(by: size)
            guard !overflow, byteCount == end - begin else {
                throw corrupt("tensor '\(name)': shape \(shape) of \(dtype) needs \(elements) × \(size) bytes but data_offsets span \(end - begin)")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, begin: begin, end: end)
        }
        let sorted = entries.sorted { ($0.value.begin, $0.value.end) < ($1.value.begin, $1.value.end) }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where next.value.begin < previous.value.end {
            throw corrupt("tensors '\(previous.key)' and '\(next.key)' overlap in the data section")
        }
        self.entries = entries
        self.metadata = metadata
        self.data = bytes
        self.dataStart = dataStart
    }

    /// The deepest nesting of `[`/`{` outside JSON strings (escapes honoured); linear in the bytes.
    static func nestingDepth(_ bytes: Data) -> Int {
        var depth = 0, deepest = 0
        var inString = false, escaped = false
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                deepest = max(deepest, depth)
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return deepest
    }

    /// Copies an F32 tensor out.
    /// - Parameters:
    ///   - name: the tensor name.
    ///   - shape: if given, the shape it must have.
    /// - Throws: `.corrupt` naming the tensor and the file if it is missing, not F32 or of another shape.
    public func floats(_ name: String, shape expected: [Int]? = nil) throws(SteerError) -> [Float] {
        guard let entry = entries[name] else { throw SteerError(.corrupt, "\(path): tensor '\(name)' is missing") }
        guard entry.dtype == "F32" else {
            throw SteerError(.corrupt, "\(path): tensor '\(name)' has dtype \(entry.dtype), expected F32")
        }
        if let expected, expected != entry.shape {
            throw SteerError(.corrupt, "\(path): tensor '\(name)' has shape \(entry.shape), expected \(expected)")
        }
        let count = entry.count
        var out = [Float](repeating: 0, count: count)
        let start = dataStart + entry.begin
        out.withUnsafeMutableBytes { destination in
            data.withUnsafeBytes { source in
                destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[start..<(start + count * 4)]))
            }
        }
        #if _endian(big)
        for i in out.indices { out[i] = Float(bitPattern: UInt32(littleEndian: out[i].bitPattern)) }
        #endif
        return out
    }
}

/// Helpers for values out of `JSONSerialization`.
enum JSONValue {
    /// JSON integers only (no fractions, no booleans).
    static func integer(_ value: Any) -> Int? {
        if isBoolean(value) { return nil }
        if let n = value as? Int { return n }
        if let n = value as? Double, n.rounded() == n, abs(n) < 9e15 { return Int(n) }
        return nil
    }

    /// JSON `true`/`false` (on Linux `1 is Bool` holds for any NSNumber, so compare the class).
    static func isBoolean(_ value: Any) -> Bool {
        type(of: value) == type(of: NSNumber(value: true))
    }

    static func double(_ value: Any) -> Double? {
        if isBoolean(value) { return nil }
        if let n = value as? Double { return n }
        if let n = value as? Int { return Double(n) }
        return nil
    }
}
