import SteerCore

/// Base64 (RFC 4648, standard alphabet, padded) for little-endian float32 vectors (`vector_b64`).
public enum Base64Floats {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (value, byte) in alphabet.enumerated() { table[Int(byte)] = UInt8(value) }
        return table
    }()

    /// Decodes base64 text into floats.
    ///
    /// - Parameters:
    ///   - text: padded base64 of `4 * n` bytes, n ≥ 1.
    ///   - field: the field name for error messages.
    /// - Throws: `.invalidRequest` naming `field` for bad characters, bad length, or a byte count that is
    ///   not a multiple of 4 or is zero.
    public static func decode(_ text: String, field: String) throws(SteerError) -> [Float] {
        try Array(text.utf8).withUnsafeBufferPointer { (utf8) throws(SteerError) -> [Float] in try decode(utf8, field: field) }
    }

    public static func decode(_ utf8: UnsafeBufferPointer<UInt8>, field: String) throws(SteerError) -> [Float] {
        guard !utf8.isEmpty else { throw SteerError.invalid("\(field) must not be empty") }
        guard utf8.count % 4 == 0 else {
            throw SteerError.invalid("\(field) is not valid base64: length \(utf8.count) is not a multiple of 4")
        }
        var padding = 0
        if utf8[utf8.count - 1] == UInt8(ascii: "=") { padding += 1 }
        if utf8[utf8.count - 2] == UInt8(ascii: "=") { padding += 1 }
        let byteCount = utf8.count / 4 * 3 - padding
        var bytes = [UInt8](repeating: 0, count: byteCount + 3)
        let table = decodeTable
        var out = 0
        var position = 0
        while position < utf8.count {
            var quad: UInt32 = 0
            for offset in 0..<4 {
                let character = utf8[position + offset]
                let value: UInt8
                if character == UInt8(ascii: "=") && position + offset >= utf8.count - padding {
                    value = 0
                } else {
                    value = table[Int(character)]
                    if value == 0xFF {
                        throw SteerError.invalid("\(field) is not valid base64: unexpected character at offset \(position + offset)")
                    }
                }
                quad = quad << 6 | UInt32(value)
            }
            bytes[out] = UInt8(truncatingIfNeeded: quad >> 16)
            bytes[out + 1] = UInt8(truncatingIfNeeded: quad >> 8)
            bytes[out + 2] = UInt8(truncatingIfNeeded: quad)
            out += 3
            position += 4
        }
        guard byteCount % 4 == 0 else {
            throw SteerError.invalid("\(field) decodes to \(byteCount) bytes, not a multiple of 4 (float32)")
        }
        let count = byteCount / 4
        var floats = [Float](repeating: 0, count: count)
        for index in 0..<count {
            let base = index * 4
            let bits = UInt32(bytes[base]) | UInt32(bytes[base + 1]) << 8 | UInt32(bytes[base + 2]) << 16 | UInt32(bytes[base + 3]) << 24
            floats[index] = Float(bitPattern: bits)
        }
        return floats
    }

    /// Encodes floats as padded base64 of their little-endian float32 bytes.
    public static func encode(_ values: [Float]) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(values.count * 4)
        for value in values {
            let bits = value.bitPattern
            bytes.append(UInt8(truncatingIfNeeded: bits))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 8))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 16))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 24))
        }
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index + 3 <= bytes.count {
            let triple = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
            out.append(alphabet[Int(triple >> 18 & 63)])
            out.append(alphabet[Int(triple >> 12 & 63)])
            out.append(alphabet[Int(triple >> 6 & 63)])
            out.append(alphabet[Int(triple & 63)])
            index += 3
        }
        let rest = bytes.count - index
        if rest > 0 {
            let triple = UInt32(bytes[index]) << 16 | (rest > 1 ? UInt32(bytes[index + 1]) << 8 : 0)
            out.append(alphabet[Int(triple >> 18 & 63)])
            out.append(alphabet[Int(triple >> 12 & 63)])
            out.append(rest > 1 ? alphabet[Int(triple >> 6 & 63)] : UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }
}
