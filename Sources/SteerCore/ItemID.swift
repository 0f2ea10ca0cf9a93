import Foundation

/// An item's external identifier: a string or an integer.
///
/// `.int(7)` and `.string("7")` are different items. String ids are compared as Unicode text: the
/// NFC and NFD forms of one string (`"é"` as U+00E9 or as `e` + U+0301) are one item everywhere.
/// Swift's `==` and hashing already treat them as equal, and `keyBytes` (the store key, the record's
/// stored id and the router's shard hash) encodes the NFC form, so a string id comes back in NFC.
public enum ItemID: Sendable, Hashable, CustomStringConvertible {
    case int(Int64)
    case string(String)

    /// The longest accepted string id, in UTF-8 bytes.
    public static let maxStringBytes = 512

    public var description: String {
        switch self {
        case .int(let value): return String(value)
        case .string(let value): return "\"\(value)\""
        }
    }

    /// Checks the id is storable: a string id must be non-empty and at most `maxStringBytes` long.
    public func validate() throws(SteerError) {
        if case .string(let value) = self {
            if value.isEmpty { throw SteerError.invalid("item id must not be an empty string") }
            let bytes = Self.nfc(value).utf8.count
            if bytes > Self.maxStringBytes {
                throw SteerError(.tooLarge, "item id is \(bytes) bytes (NFC), limit is \(Self.maxStringBytes)")
            }
        }
    }

    /// A compact, unambiguous byte encoding: tag byte `0x01` + 8 bytes big-endian (sign flipped, so
    /// byte order equals numeric order) for integers, tag `0x02` + the UTF-8 of the string's NFC form
    /// for strings (ASCII strings are already NFC and are not normalised).
    public var keyBytes: [UInt8] {
        switch self {
        case .int(let value):
            var bytes: [UInt8] = [0x01]
            let flipped = UInt64(bitPattern: value) ^ (1 << 63)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: flipped >> UInt64(shift))) }
            return bytes
        case .string(let value):
            return [0x02] + Array(Self.nfc(value).utf8)
        }
    }

    /// The NFC form of `text` (Unicode canonical composition).
    public static func nfc(_ text: String) -> String {
        if text.utf8.allSatisfy({ $0 < 0x80 }) { return text }
        return text.precomposedStringWithCanonicalMapping
    }

    /// Decodes `keyBytes`; returns nil for bytes that no id encodes to.
    public init?(keyBytes bytes: some Collection<UInt8>) {
        guard let tag = bytes.first else { return nil }
        let body = bytes.dropFirst()
        switch tag {
        case 0x01:
            guard body.count == 8 else { return nil }
            var raw: UInt64 = 0
            for byte in body { raw = (raw << 8) | UInt64(byte) }
            self = .int(Int64(bitPattern: raw ^ (1 << 63)))
        case 0x02:
            guard !body.isEmpty, let text = String(validating: Array(body), as: UTF8.self) else { return nil }
            self = .string(text)
        default:
            return nil
        }
    }
}
