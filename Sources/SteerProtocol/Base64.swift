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
        var text = text
        // Native strings are contiguous UTF-8: decode in place, without copying the text.
        let result = text.withUTF8 { utf8 in Result { () throws(SteerError) -> [Float] in try decode(utf8, field: field) } }
        return try result.get()
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
        // Validate every character first (so errors name the first bad offset), then decode straight into
        // the floats' storage: the bytes of a little-endian float32 array are the floats on this platform.
        let table = decodeTable
        for offset in 0..<(utf8.count - padding) where table[Int(utf8[offset])] == 0xFF {
            throw SteerError.invalid("\(field) is not valid base64: unexpected character at offset \(offset)")
        }
        guard byteCount % 4 == 0 else {
            throw SteerError.invalid("\(field) decodes to \(byteCount) bytes, not a multiple of 4 (float32)")
        }
        let count = byteCount / 4
        return [Float](unsafeUninitializedCapacity: count) { floats, initialized in
            let raw = UnsafeMutableRawBufferPointer(floats)
            var out = 0
            var position = 0
            table.withUnsafeBufferPointer { table in
                while position < utf8.count {
                    var quad: UInt32 = 0
                    for offset in 0..<4 {
                        let character = utf8[position + offset]
                        // Padding (already located) decodes as zero bits.
                        let value = position + offset >= utf8.count - padding ? 0 : UInt32(table[Int(character)])
                        quad = quad << 6 | value
                    }
                    raw[out] = UInt8(truncatingIfNeeded: quad >> 16)
                    if out + 1 < byteCount { raw[out + 1] = UInt8(truncatingIfNeeded: quad >> 8) }
                    if out + 2 < byteCount { raw[out + 2] = UInt8(truncatingIfNeeded: quad) }
                    out += 3
                    position += 4
                }
            }
            #if _endian(big)
            for index in 0..<count { floats[index] = Float(bitPattern: UInt32(littleEndian: floats[index].bitPattern)) }
            #endif
            initialized = count
        }
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
