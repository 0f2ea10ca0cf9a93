import Foundation

/// A filter over an item's tags and attributes: the `filter` expression of `search` and `recommend`
/// (docs/protocol.md, "Filter expressions").
///
/// A tree of `and`, `or`, `not`, tag leaves and attribute leaves. Built by the protocol's parser
/// (which bounds its depth and node count, `ProtocolLimits.maxFilterDepth` / `maxFilterNodes`) or by
/// code. Evaluation (`matches`) is O(nodes) per item, plus one parse of the item's attributes JSON
/// the first time an attribute leaf asks for it.
public indirect enum FilterExpression: Sendable, Hashable {
    /// Every child holds (an empty `and` holds for every item).
    case and([FilterExpression])
    /// At least one child holds (an empty `or` holds for no item).
    case or([FilterExpression])
    case not(FilterExpression)
    /// The item carries this tag.
    case tag(String)
    case attribute(AttributePredicate)

    /// Nodes in the tree: each leaf and each operator counts one, each value of an `in`/`nin` one more
    /// (every one is compared per item). The protocol's cost unit for filters.
    public var nodeCount: Int {
        switch self {
        case .and(let children), .or(let children): return 1 + children.reduce(0) { $0 + $1.nodeCount }
        case .not(let child): return 1 + child.nodeCount
        case .tag: return 1
        case .attribute(let predicate):
            return predicate.conditions.reduce(1) { total, condition in
                switch condition {
                case .in(let values), .nin(let values): return total + values.count
                default: return total
                }
            }
        }
    }

    /// Distinct tags named by tag leaves.
    public var tags: Set<String> {
        var result = Set<String>()
        collectTags(into: &result)
        return result
    }

    private func collectTags(into result: inout Set<String>) {
        switch self {
        case .and(let children), .or(let children): for child in children { child.collectTags(into: &result) }
        case .not(let child): child.collectTags(into: &result)
        case .tag(let tag): result.insert(tag)
        case .attribute: break
        }
    }

    /// Whether any leaf tests an attribute (such a filter reads every item's attributes, or a payload index).
    public var usesAttributes: Bool {
        switch self {
        case .and(let children), .or(let children): return children.contains { $0.usesAttributes }
        case .not(let child): return child.usesAttributes
        case .tag: return false
        case .attribute: return true
        }
    }

    /// Whether an item with these tags and attributes passes.
    ///
    /// - Parameters:
    ///   - tags: the item's tags.
    ///   - attributes: the item's attributes, parsed on first use.
    public func matches(tags: [String], attributes: inout FilterAttributes) -> Bool {
        switch self {
        case .and(let children):
            for child in children where !child.matches(tags: tags, attributes: &attributes) { return false }
            return true
        case .or(let children):
            for child in children where child.matches(tags: tags, attributes: &attributes) { return true }
            return false
        case .not(let child):
            return !child.matches(tags: tags, attributes: &attributes)
        case .tag(let tag):
            return tags.contains(tag)
        case .attribute(let predicate):
            return predicate.matches(attributes.values(at: predicate.path))
        }
    }

    /// Convenience for one item: tags and the attributes JSON text as stored.
    public func matches(tags: [String], attributesJSON: String?) -> Bool {
        var attributes = FilterAttributes(json: attributesJSON)
        return matches(tags: tags, attributes: &attributes)
    }
}

/// A scalar an attribute leaf compares with, or an attribute holds.
public enum FilterScalar: Sendable, Hashable, CustomStringConvertible {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)

    /// The value as a number (integers and doubles), nil for strings and booleans.
    public var number: Double? {
        switch self {
        case .int(let value): return Double(value)
        case .double(let value): return value
        case .string, .bool: return nil
        }
    }

    /// Equality as filters see it: strings and booleans by value, numbers numerically (`3` equals `3.0`).
    public func filterEquals(_ other: FilterScalar) -> Bool {
        switch (self, other) {
        case (.string(let a), .string(let b)): return a == b
        case (.bool(let a), .bool(let b)): return a == b
        case (.int(let a), .int(let b)): return a == b
        default:
            guard let a = number, let b = other.number else { return false }
            return a == b
        }
    }

    public var description: String {
        switch self {
        case .string(let value): return "\"\(value)\""
        case .int(let value): return String(value)
        case .double(let value): return String(value)
        case .bool(let value): return String(value)
        }
    }
}

/// An attribute leaf: a path into the item's `attributes` object and the conditions it must meet
/// (all of them: `{"attr": "year", "gte": 1990, "lt": 2000}` is two range conditions).
///
/// Semantics (docs/protocol.md): a path that is missing or `null` has no values. An attribute that is an
/// array has its scalar elements as values. `eq`, `in` and the range conditions hold when some value
/// meets them; `ne` and `nin` are their negations (so a missing attribute passes them); `exists`
/// holds when the path has a value (true) or has none (false). Objects are no values.
public struct AttributePredicate: Sendable, Hashable {
    public enum Condition: Sendable, Hashable {
        case eq(FilterScalar)
        case ne(FilterScalar)
        case `in`([FilterScalar])
        case nin([FilterScalar])
        case gt(Double)
        case gte(Double)
        case lt(Double)
        case lte(Double)
        case exists(Bool)
    }

    /// The dotted name as given (`"specs.lang"`).
    public var name: String
    /// `name` split at dots; each part is non-empty.
    public var path: [String]
    /// At least one; the parser allows one of eq/ne/in/nin/exists alone, or one or two range bounds.
    public var conditions: [Condition]

    public init(name: String, conditions: [Condition]) {
        self.name = name
        self.path = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        self.conditions = conditions
    }

    /// Whether an attribute with these values meets every condition.
    public func matches(_ values: [FilterScalar]) -> Bool {
        for condition in conditions where !Self.holds(condition, values) { return false }
        return true
    }

    private static func holds(_ condition: Condition, _ values: [FilterScalar]) -> Bool {
        switch condition {
        case .eq(let wanted): return values.contains { $0.filterEquals(wanted) }
        case .ne(let wanted): return !values.contains { $0.filterEquals(wanted) }
        case .in(let set): return values.contains { value in set.contains { value.filterEquals($0) } }
        case .nin(let set): return !values.contains { value in set.contains { value.filterEquals($0) } }
        case .gt(let bound): return values.contains { ($0.number ?? -.infinity) > bound }
        case .gte(let bound): return values.contains { ($0.number ?? -.infinity) >= bound }
        case .lt(let bound): return values.contains { ($0.number ?? .infinity) < bound }
        case .lte(let bound): return values.contains { ($0.number ?? .infinity) <= bound }
        case .exists(let wanted): return values.isEmpty != wanted
        }
    }
}

/// One item's attributes as filters read them: the stored JSON text, parsed (with Foundation's
/// `JSONSerialization`) on the first lookup and kept for the item's later leaves.
public struct FilterAttributes {
    private var text: String?
    private var parsed: [String: Any]?

    public init(json: String?) { self.text = json }

    /// The scalar values at `path`: one for a scalar, the scalar elements of an array, none when the
    /// path is missing, null, an object, or the attributes are not a JSON object.
    public mutating func values(at path: [String]) -> [FilterScalar] {
        if let text {
            parsed = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
            self.text = nil
        }
        guard var node: Any = parsed else { return [] }
        for part in path {
            guard let object = node as? [String: Any], let next = object[part] else { return [] }
            node = next
        }
        if let array = node as? [Any] { return array.compactMap(Self.scalar) }
        return Self.scalar(node).map { [$0] } ?? []
    }

    /// A JSON scalar from `JSONSerialization`: booleans are NSNumbers of type `c`, integers of an
    /// integer type, other numbers doubles.
    private static func scalar(_ value: Any) -> FilterScalar? {
        if let string = value as? String { return .string(string) }
        guard let number = value as? NSNumber else { return nil }
        switch String(cString: number.objCType) {
        case "c", "B": return .bool(number.boolValue)
        case "f", "d": return .double(number.doubleValue)
        default: return .int(number.int64Value)
        }
    }
}

/// The kind of a payload index on one attribute path (`ItemStore.declarePayloadIndex`): `keyword`
/// indexes every scalar value for eq/ne/in/nin/exists, `numeric` every number for ranges and numeric eq/in.
public enum PayloadKind: UInt8, Sendable, Hashable, CaseIterable {
    case keyword = 1
    case numeric = 2

    /// `keyword` or `numeric`.
    public init(parsing text: String) throws(SteerError) {
        switch text {
        case "keyword": self = .keyword
        case "numeric": self = .numeric
        default: throw SteerError.invalid("payload index kind must be 'keyword' or 'numeric', got '\(text)'")
        }
    }

    public var name: String { self == .keyword ? "keyword" : "numeric" }
}
