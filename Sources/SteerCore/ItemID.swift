/// An item's external identifier: a string or an integer, returned exactly as the client gave it.
///
/// `.int(7)` and `.string("7")` are different items.
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
            if value.utf8.count > Self.maxStringBytes {
                throw SteerError(.tooLarge, "item id is \(value.utf8.count) bytes, limit is \(Self.maxStringBytes)")
            }
        }
    }

    /// A compact, unambiguous byte encoding: tag byte `0x01` + 8 bytes big-endian (sign flipped, so
    /// byte order equals numeric order) for integers, tag `0x02` + UTF-8 for strings.
    public var keyBytes: [UInt8] {
        switch self {
        case .int(let value):
            var bytes: [UInt8] = [0x01]
            let flipped = UInt64(bitPattern: value) ^ (1 << 63)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: flipped >> UInt64(shift))) }
            return bytes
        case .string(let value):
            return [0x02] + Array(value.utf8)
        }
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
