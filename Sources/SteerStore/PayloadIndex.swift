import SteerCore

/// Payload indexes: per declared attribute, one key per (value, item) in the `postings` family, kept in
/// the same `WriteBatch` as the item (docs/protocol.md, "Payload indexes"). Enum `PayloadKind` is in SteerCore.
///
/// ## Keys (in `postings`, after the tag postings' key space)
/// Tag postings start with a tag's first byte, never 0x00 (tags are non-empty and hold no NUL), so every
/// payload key starts with 0x00 and neither kind of scan sees the other's keys.
///
/// | kind | key |
/// |---|---|
/// | keyword | 0x00 · `k` · u16 name length · name · value (below) · internal id (8 bytes) |
/// | numeric | 0x00 · `n` · u16 name length · name · 8-byte order-preserving float64 · internal id (8 bytes) |
///
/// Keyword values: `s` · u32 length · UTF-8 (strings), `i` · 8-byte order-preserving int64 (integers and
/// integral doubles within int64, so `3` and `3.0` are one value), `d` · 8-byte order-preserving float64
/// (other doubles), `b` · 0 or 1 (booleans). Numeric values: every integer and double, as float64; the
/// order-preserving form flips the sign bit of non-negative numbers and every bit of negative ones, so
/// byte order is numeric order. Declarations live in `meta` under `payload/<name>` (one byte: 1 keyword,
/// 2 numeric). Values are what `FilterAttributes` reads at the path (a scalar, or an array's scalars).
enum PayloadKey {
    /// Longest declared attribute path, in UTF-8 bytes.
    static let maxNameBytes = 256
    /// Most declared attributes per store.
    static let maxDeclared = 64

    static func declaration(_ name: String) -> [UInt8] { Array("payload/".utf8) + Array(name.utf8) }
    static let declarationPrefix = Array("payload/".utf8)
    static let declarationEnd = Array("payload0".utf8)

    /// 0x00 · kind letter · u16 name length · name.
    static func prefix(_ kind: PayloadKind, _ name: String) -> [UInt8] {
        let bytes = Array(name.utf8)
        return [0, kind == .keyword ? UInt8(ascii: "k") : UInt8(ascii: "n"), UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes
    }

    static func orderedInt(_ value: Int64) -> [UInt8] { bigEndian(UInt64(bitPattern: value) ^ (1 << 63)) }

    static func orderedDouble(_ value: Double) -> [UInt8] {
        let bits = (value == 0 ? 0.0 : value).bitPattern
        return bigEndian(value.sign == .minus && value != 0 ? ~bits : bits | (1 << 63))
    }

    private static func bigEndian(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) } }

    /// The keyword encoding of a scalar (integral doubles as integers).
    static func keyword(_ value: FilterScalar) -> [UInt8] {
        switch value {
        case .string(let text):
            let bytes = Array(text.utf8)
            return [UInt8(ascii: "s")] + bigEndian(UInt64(bytes.count)).suffix(4) + bytes
        case .int(let number): return [UInt8(ascii: "i")] + orderedInt(number)
        case .double(let number):
            if number == number.rounded(), abs(number) < 9.2e18 { return [UInt8(ascii: "i")] + orderedInt(Int64(number)) }
            return [UInt8(ascii: "d")] + orderedDouble(number)
        case .bool(let flag): return [UInt8(ascii: "b"), flag ? 1 : 0]
        }
    }

    /// The index keys of one item's attributes for one declared attribute.
    static func entries(_ kind: PayloadKind, _ name: String, path: [String], attributes: inout FilterAttributes, internalID: Int64) -> [[UInt8]] {
        let prefix = prefix(kind, name)
        let id = StoreKey.internalID(internalID)
        var keys = Set<[UInt8]>()
        for value in attributes.values(at: path) {
            switch kind {
            case .keyword: keys.insert(prefix + keyword(value) + id)
            case .numeric:
                if let number = value.number { keys.insert(prefix + orderedDouble(number) + id) }
            }
        }
        return Array(keys)
    }

    /// After every key of `prefix` (keys are the prefix and at most 16 more bytes).
    static func end(_ prefix: [UInt8]) -> [UInt8] { prefix + [UInt8](repeating: 0xFF, count: 17) }

    /// The scan ranges `[start, end)` answering `query` for one declared attribute, or nil when that kind
    /// of index cannot answer it.
    static func ranges(_ kind: PayloadKind, _ name: String, _ query: PayloadQuery) -> [([UInt8], [UInt8])]? {
        let prefix = prefix(kind, name)
        switch (kind, query) {
        case (.keyword, .any): return [(prefix, prefix + [0xFF])]
        case (.keyword, .values(let values)):
            return values.map { value in
                let start = prefix + keyword(value)
                return (start, start + [0xFF])
            }
        case (.numeric, .range(let lower, let lowerInclusive, let upper, let upperInclusive)):
            let start = lower.map { prefix + orderedDouble($0) + (lowerInclusive ? [] : [0xFF]) } ?? prefix
            let stop = upper.map { prefix + orderedDouble($0) + (upperInclusive ? [0xFF] : []) } ?? end(prefix)
            return [(start, stop)]
        case (.numeric, .values(let values)):
            var result: [([UInt8], [UInt8])] = []
            for value in values {
                guard let number = value.number else { return nil }
                let start = prefix + orderedDouble(number)
                result.append((start, start + [0xFF]))
            }
            return result
        default: return nil
        }
    }

    static func declaredPath(_ name: String) -> [String] { name.split(separator: ".", omittingEmptySubsequences: false).map(String.init) }

    /// Checks a name to declare: a dotted path with non-empty parts, at most `maxNameBytes`.
    static func validate(_ name: String) throws(SteerError) {
        guard !name.isEmpty, name.utf8.count <= maxNameBytes, !declaredPath(name).contains(where: \.isEmpty), !name.utf8.contains(0) else {
            throw SteerError.invalid("payload index name must be a dotted attribute path of 1...\(maxNameBytes) bytes without empty parts, got '\(name)'")
        }
    }
}

/// A question a payload index answers (one attribute leaf's condition).
public enum PayloadQuery: Sendable, Hashable {
    /// Items with one of these values (keyword index).
    case values([FilterScalar])
    /// Items with a number in the range (numeric index); nil bounds are open.
    case range(lower: Double?, lowerInclusive: Bool, upper: Double?, upperInclusive: Bool)
    /// Items with any value (keyword index: every scalar is indexed).
    case any
}
