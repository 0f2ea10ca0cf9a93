#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SteerCore

/// A parsed JSON value, as produced by `JSONParser`.
///
/// Arrays of numbers that contain at least one non-integer literal are kept as `.floats` (the fast
/// path for vectors: no per-element boxing); arrays of integer literals stay `.array` of `.int` so ids
/// keep their exact 64-bit values. `floatArray` reads either form.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// An integer literal (no fraction, no exponent) that fits in 64 bits.
    case int(Int64)
    /// Any other number, including the non-standard `NaN`, `Infinity` and `-Infinity` tokens (which
    /// Python's `json` writes) so that validation can name the offending field instead of failing to parse.
    case double(Double)
    case string(String)
    case array([JSONValue])
    /// An array of numbers, at least one of which is not an integer literal.
    case floats([Float])
    case object(JSONObject)

    /// A short name of the value's type for error messages ("a string", "an array", …).
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array, .floats: return "an array"
        case .object: return "an object"
        }
    }
}

/// A JSON object: fields in document order (objects on the wire are small; lookup is linear).
public struct JSONObject: Sendable, Equatable {
    public var fields: [(key: String, value: JSONValue)]

    public init(_ fields: [(key: String, value: JSONValue)] = []) { self.fields = fields }

    public subscript(key: String) -> JSONValue? {
        for field in fields where field.key == key { return field.value }
        return nil
    }

    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        lhs.fields.count == rhs.fields.count
            && zip(lhs.fields, rhs.fields).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

// MARK: - Parser

/// A strict, allocation-light JSON parser over UTF-8 bytes (RFC 8259), with two deliberate extensions:
/// the tokens `NaN`, `Infinity` and `-Infinity` parse as non-finite numbers (so the request validator can
/// reject them with a message naming the field), and number arrays take a fast path (see `JSONValue`).
///
/// Errors are `SteerError` with code `parse_error` and the byte offset; invalid UTF-8 in strings is a
/// parse error too. Nesting is limited to `maxDepth` and objects to `maxObjectFields` fields.
///
/// - Complexity: O(n) in the input's bytes for every input (duplicate field names are found with a hash
///   set once an object has more than a few fields), so a hostile line costs at most a bounded multiple of
///   its length.
public struct JSONParser {
    /// Deepest accepted nesting of arrays and objects.
    public static let maxDepth = 64
    /// Most fields in one object (a request object has about 15; item `attributes` are the wide ones).
    public static let maxObjectFields = 1024
    /// Objects up to this many fields look for duplicate names by a linear scan; wider ones use a set.
    static let linearDuplicateScanFields = 16

    /// Parses one complete JSON document; only whitespace may follow it.
    ///
    /// - Parameter bytes: the UTF-8 text (a line without its newline).
    /// - Throws: `SteerError` `.parseError` naming the byte offset and what was expected.
    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(SteerError) -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        if parser.index < bytes.count {
            throw parser.error("unexpected '\(parser.describe(bytes[parser.index]))' after the JSON value")
        }
        return value
    }

    /// Parses `text` (convenience for tests and the client).
    public static func parse(_ text: String) throws(SteerError) -> JSONValue {
        try parse(Array(text.utf8))
    }

    /// Parses a byte array.
    public static func parse(_ bytes: [UInt8]) throws(SteerError) -> JSONValue {
        try bytes.withUnsafeBufferPointer { (buffer) throws(SteerError) -> JSONValue in try parse(buffer) }
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0

    private init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    private func error(_ message: String) -> SteerError {
        SteerError(.parseError, "invalid JSON at byte \(index): \(message)")
    }

    private func describe(_ byte: UInt8) -> String {
        if byte >= 0x20 && byte < 0x7F { return String(UnicodeScalar(byte)) }
        return "\\x" + String(byte, radix: 16)
    }

    @inline(__always)
    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func parseValue(depth: Int) throws(SteerError) -> JSONValue {
        guard index < bytes.count else { throw error("unexpected end of input, expected a value") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectWord("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectWord("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectWord("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "N"), UInt8(ascii: "I"):
            let number = try parseNumber()
            if number.isInteger, let exact = number.exact { return .int(exact) }
            return .double(number.value)
        default:
            throw error("unexpected '\(describe(bytes[index]))', expected a value")
        }
    }

    private mutating func expectWord(_ word: StaticString) throws(SteerError) {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw error("unexpected end of input, expected '\(word)'") }
        let start = word.utf8Start
        for offset in 0..<count where bytes[index + offset] != start[offset] {
            throw error("invalid literal, expected '\(word)'")
        }
        index += count
    }

    private mutating func parseObject(depth: Int) throws(SteerError) -> JSONValue {
        if depth > Self.maxDepth { throw error("nesting deeper than \(Self.maxDepth)") }
        index += 1 // {
        var fields: [(key: String, value: JSONValue)] = []
        // Field names seen so far, kept only once the object is wider than a linear scan should handle.
        var seen: Set<String>? = nil
        skipWhitespace()
        if index < bytes.count && bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(JSONObject(fields))
        }
        while true {
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input in an object") }
            guard bytes[index] == UInt8(ascii: "\"") else {
                throw error("unexpected '\(describe(bytes[index]))', expected a field name in double quotes")
            }
            let key = try parseString()
            if fields.count >= Self.maxObjectFields {
                throw error("an object has more than \(Self.maxObjectFields) fields")
            }
            if var names = seen {
                seen = nil // keep the set uniquely referenced while inserting
                let inserted = names.insert(key).inserted
                seen = names
                if !inserted { throw error("duplicate field '\(key)'") }
            } else {
                for field in fields where field.key == key {
                    throw error("duplicate field '\(key)'")
                }
                if fields.count + 1 >= Self.linearDuplicateScanFields {
                    var names = Set<String>(minimumCapacity: 2 * Self.linearDuplicateScanFields)
                    for field in fields { names.insert(field.key) }
                    names.insert(key)
                    seen = names
                }
            }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':' after field '\(key)'") }
            index += 1
            skipWhitespace()
            let value = try parseValue(depth: depth)
            fields.append((key, value))
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input in an object") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(JSONObject(fields))
            }
            throw error("unexpected '\(describe(bytes[index]))', expected ',' or '}' in an object")
        }
    }

    private mutating func parseArray(depth: Int) throws(SteerError) -> JSONValue {
        if depth > Self.maxDepth { throw error("nesting deeper than \(Self.maxDepth)") }
        let start = index
        index += 1 // [
        skipWhitespace()
        if index < bytes.count && bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array([])
        }
        if index < bytes.count, Self.startsNumber(bytes[index]), let fast = try parseNumberArray() {
            return fast
        }
        index = start + 1
        var elements: [JSONValue] = []
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth))
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input in an array") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(elements)
            }
            throw error("unexpected '\(describe(bytes[index]))', expected ',' or ']' in an array")
        }
    }

    @inline(__always)
    private static func startsNumber(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "-")
            || byte == UInt8(ascii: "N") || byte == UInt8(ascii: "I")
    }

    /// The fast path for arrays of numbers. Returns nil (and the caller re-parses generally) when an
    /// element is not a number; number syntax errors are thrown at once.
    private mutating func parseNumberArray() throws(SteerError) -> JSONValue? {
        var floats: [Float] = []
        floats.reserveCapacity(64)
        var integers: [Int64] = []
        var allIntegers = true
        while true {
            skipWhitespace()
            guard index < bytes.count, Self.startsNumber(bytes[index]) else { return nil }
            let number = try parseNumber()
            if allIntegers {
                if number.isInteger, let exact = number.exact {
                    integers.append(exact)
                } else {
                    allIntegers = false
                    integers = []
                }
            }
            floats.append(Float(number.value))
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input in an array") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "]") {
                index += 1
                break
            }
            return nil
        }
        if allIntegers { return .array(integers.map { .int($0) }) }
        return .floats(floats)
    }

    private struct Number {
        var value: Double
        var isInteger: Bool
        var exact: Int64?
    }

    private static let powersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ]

    /// Parses a number per RFC 8259 (plus `NaN`, `Infinity`, `-Infinity`). Uses Clinger's exact fast path
    /// (mantissa below 2^53, power of ten up to 22) and falls back to the C library otherwise.
    private mutating func parseNumber() throws(SteerError) -> Number {
        let start = index
        var negative = false
        if bytes[index] == UInt8(ascii: "-") {
            negative = true
            index += 1
        }
        guard index < bytes.count else { throw error("unexpected end of input in a number") }
        if bytes[index] == UInt8(ascii: "N") {
            try expectWord("NaN")
            if negative { throw error("invalid number '-NaN'") }
            return Number(value: .nan, isInteger: false, exact: nil)
        }
        if bytes[index] == UInt8(ascii: "I") {
            try expectWord("Infinity")
            return Number(value: negative ? -.infinity : .infinity, isInteger: false, exact: nil)
        }
        var mantissa: UInt64 = 0
        var digits = 0
        var droppedDigits = 0
        let first = bytes[index]
        guard first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9") else {
            throw error("invalid number: expected a digit after '-'")
        }
        if first == UInt8(ascii: "0") {
            index += 1
            if index < bytes.count && bytes[index] >= UInt8(ascii: "0") && bytes[index] <= UInt8(ascii: "9") {
                throw error("invalid number: leading zero")
            }
        } else {
            while index < bytes.count {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { break }
                if digits < 19 {
                    mantissa = mantissa &* 10 &+ UInt64(byte &- UInt8(ascii: "0"))
                    digits += 1
                } else {
                    droppedDigits += 1
                }
                index += 1
            }
        }
        var isInteger = true
        var fractionDigits = 0
        if index < bytes.count && bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            let fractionStart = index
            while index < bytes.count {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { break }
                if digits < 19 {
                    // Leading zeros of the fraction ("0.0001") do not use up precision.
                    mantissa = mantissa &* 10 &+ UInt64(byte &- UInt8(ascii: "0"))
                    if mantissa != 0 { digits += 1 }
                    fractionDigits += 1
                } else {
                    droppedDigits += 1
                }
                index += 1
            }
            if index == fractionStart { throw error("invalid number: expected a digit after '.'") }
        }
        var exponent = 0
        if index < bytes.count && (bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E")) {
            isInteger = false
            index += 1
            var exponentNegative = false
            if index < bytes.count && (bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-")) {
                exponentNegative = bytes[index] == UInt8(ascii: "-")
                index += 1
            }
            let exponentStart = index
            while index < bytes.count {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { break }
                if exponent < 100_000 { exponent = exponent * 10 + Int(byte - UInt8(ascii: "0")) }
                index += 1
            }
            if index == exponentStart { throw error("invalid number: expected a digit in the exponent") }
            if exponentNegative { exponent = -exponent }
        }
        if isInteger && droppedDigits == 0 {
            if negative {
                if mantissa <= UInt64(Int64.max) + 1 {
                    let exact = mantissa == UInt64(Int64.max) + 1 ? Int64.min : -Int64(mantissa)
                    return Number(value: Double(exact), isInteger: true, exact: exact)
                }
            } else if mantissa <= UInt64(Int64.max) {
                return Number(value: Double(mantissa), isInteger: true, exact: Int64(mantissa))
            }
        }
        let power = exponent - fractionDigits
        if droppedDigits == 0 && mantissa < (1 << 53) && power >= -22 && power <= 22 {
            var value = Double(mantissa)
            value = power >= 0 ? value * Self.powersOfTen[power] : value / Self.powersOfTen[-power]
            return Number(value: negative ? -value : value, isInteger: isInteger, exact: nil)
        }
        if let value = Self.correctlyRounded(UnsafeBufferPointer(rebasing: bytes[start..<index])) {
            return Number(value: value, isInteger: isInteger, exact: nil)
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let value = Double(text) else { throw error("invalid number '\(text)'") }
        return Number(value: value, isInteger: isInteger, exact: nil)
    }

    /// `strtod` follows the process's LC_NUMERIC; Steer never changes it from "C", but a host process
    /// might: then this path is skipped.
    private static let decimalPointIsDot: Bool = {
        guard let conventions = localeconv(), let point = conventions.pointee.decimal_point else { return false }
        return String(cString: point) == "."
    }()

    /// Correctly rounded conversion of a number literal that the fast path above cannot do exactly
    /// (more than 15 significant digits, as `repr` of a double has, or a large exponent), without a heap
    /// allocation: the literal, already checked to be JSON number syntax, is copied to the stack and
    /// read by `strtod` (glibc's is correctly rounded). Nil for literals longer than 63 bytes or a
    /// non-"C" numeric locale (the caller then goes through `String`).
    private static func correctlyRounded(_ literal: UnsafeBufferPointer<UInt8>) -> Double? {
        guard literal.count < 64, decimalPointIsDot else { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer -> Double? in
            guard let base = buffer.baseAddress else { return nil }
            for offset in 0..<literal.count { base[offset] = CChar(bitPattern: literal[offset]) }
            base[literal.count] = 0
            var end: UnsafeMutablePointer<CChar>?
            let value = strtod(base, &end)
            return end == base + literal.count ? value : nil
        }
    }

    private mutating func parseString() throws(SteerError) -> String {
        index += 1 // opening quote
        let start = index
        // Fast path: no escapes.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<index])
                index += 1
                guard let text = String(validating: slice, as: UTF8.self) else {
                    index = start
                    throw error("string is not valid UTF-8")
                }
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error("unescaped control character \\x\(String(byte, radix: 16)) in a string") }
            index += 1
        }
        guard index < bytes.count else { throw error("unterminated string") }
        var buffer = Array(UnsafeBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                guard let text = String(validating: buffer, as: UTF8.self) else {
                    throw error("string starting at byte \(start - 1) is not valid UTF-8")
                }
                return text
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { throw error("unterminated escape") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): buffer.append(0x22)
                case UInt8(ascii: "\\"): buffer.append(0x5C)
                case UInt8(ascii: "/"): buffer.append(0x2F)
                case UInt8(ascii: "b"): buffer.append(0x08)
                case UInt8(ascii: "f"): buffer.append(0x0C)
                case UInt8(ascii: "n"): buffer.append(0x0A)
                case UInt8(ascii: "r"): buffer.append(0x0D)
                case UInt8(ascii: "t"): buffer.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if scalar >= 0xD800 && scalar < 0xDC00 {
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            throw error("unpaired surrogate \\u\(String(scalar, radix: 16))")
                        }
                        index += 2
                        let low = try parseHex4()
                        guard low >= 0xDC00 && low < 0xE000 else { throw error("invalid low surrogate \\u\(String(low, radix: 16))") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if scalar >= 0xDC00 && scalar < 0xE000 {
                        throw error("unpaired surrogate \\u\(String(scalar, radix: 16))")
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
                    buffer.append(contentsOf: String(Character(unicode)).utf8)
                default:
                    index -= 1
                    throw error("invalid escape '\\\(describe(escape))'")
                }
            default:
                if byte < 0x20 { throw error("unescaped control character \\x\(String(byte, radix: 16)) in a string") }
                buffer.append(byte)
                index += 1
            }
        }
        throw error("unterminated string")
    }

    private mutating func parseHex4() throws(SteerError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }
}

// MARK: - Writer

/// Appends JSON to a byte array without intermediate strings. The caller writes structure (`{`, `,`,
/// keys) itself through `raw`; strings are escaped, floats are written in Swift's shortest round-trip
/// form (non-finite values as `null`).
public struct JSONWriter: Sendable {
    public var bytes: [UInt8]

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inline(__always)
    public mutating func raw(_ text: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    @inline(__always)
    public mutating func byte(_ value: UInt8) { bytes.append(value) }

    /// `"key":`
    public mutating func key(_ text: StaticString) {
        bytes.append(UInt8(ascii: "\""))
        raw(text)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// A JSON string with escapes.
    public mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(0x5C); bytes.append(0x22)
            case UInt8(ascii: "\\"): bytes.append(0x5C); bytes.append(0x5C)
            case 0x0A: bytes.append(0x5C); bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(0x5C); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(0x5C); bytes.append(UInt8(ascii: "t"))
            case 0..<0x20:
                raw("\\u00")
                bytes.append(Self.hex[Int(byte >> 4)])
                bytes.append(Self.hex[Int(byte & 0xF)])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    public mutating func int(_ value: Int64) {
        if value == 0 {
            bytes.append(UInt8(ascii: "0"))
            return
        }
        var magnitude = value.magnitude
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            while magnitude > 0 {
                buffer[count] = UInt8(magnitude % 10) + UInt8(ascii: "0")
                magnitude /= 10
                count += 1
            }
            for position in stride(from: count - 1, through: 0, by: -1) { bytes.append(buffer[position]) }
        }
    }

    public mutating func int(_ value: Int) { int(Int64(value)) }

    public mutating func bool(_ value: Bool) {
        if value { raw("true") } else { raw("false") }
    }

    /// A float in shortest round-trip form; non-finite values become `null`.
    public mutating func float(_ value: Float) {
        guard value.isFinite else {
            raw("null")
            return
        }
        if value == value.rounded(), abs(value) < 1e15 {
            int(Int64(value))
            return
        }
        bytes.append(contentsOf: value.description.utf8)
    }

    /// `[f, f, …]`
    public mutating func floats(_ values: some Collection<Float>) {
        bytes.append(UInt8(ascii: "["))
        var first = true
        for value in values {
            if !first { bytes.append(UInt8(ascii: ",")) }
            first = false
            float(value)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    /// Any `JSONValue` (used to echo attributes).
    public mutating func value(_ value: JSONValue) {
        switch value {
        case .null: raw("null")
        case .bool(let flag): bool(flag)
        case .int(let number): int(number)
        case .double(let number):
            if number.isFinite {
                if number == number.rounded(), abs(number) < 1e15 { int(Int64(number)) } else { bytes.append(contentsOf: number.description.utf8) }
            } else {
                raw("null")
            }
        case .string(let text): string(text)
        case .floats(let values): floats(values)
        case .array(let elements):
            bytes.append(UInt8(ascii: "["))
            for (position, element) in elements.enumerated() {
                if position > 0 { bytes.append(UInt8(ascii: ",")) }
                self.value(element)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let object):
            bytes.append(UInt8(ascii: "{"))
            for (position, field) in object.fields.enumerated() {
                if position > 0 { bytes.append(UInt8(ascii: ",")) }
                string(field.key)
                bytes.append(UInt8(ascii: ":"))
                self.value(field.value)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    /// An item id as given: integers as numbers, strings as strings.
    public mutating func itemID(_ id: ItemID) {
        switch id {
        case .int(let value): int(value)
        case .string(let value): string(value)
        }
    }
}
