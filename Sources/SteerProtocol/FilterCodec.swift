import SteerCore

/// The wire form of `FilterExpression` (docs/protocol.md, "Filter expressions"): parsing with errors that
/// name the path inside the expression, and writing back (the router and the clients send it on).
///
/// Grammar: a node is `{"and": [node, …]}`, `{"or": [node, …]}`, `{"not": node}`, `{"tag": "<tag>"}`,
/// or `{"attr": "<dotted.path>", "<op>": value, …}` with op one of `eq`, `ne`, `in`, `nin` (a string,
/// an integer or a boolean; `in`/`nin` a non-empty array of them), `gt`, `gte`, `lt`, `lte` (a finite
/// number; one lower and one upper bound may share a leaf) and `exists` (a boolean).
///
/// Cost: one pass over the JSON tree (each value is looked at once, an object's fields once), stopped
/// with `too_large` as soon as the tree is deeper than `maxDepth` or has more than `maxNodes` nodes (each
/// `in`/`nin` value counts as one node, since every one is compared per item).
public struct FilterParser: Sendable {
    public let maxDepth: Int
    public let maxNodes: Int

    public init(maxDepth: Int, maxNodes: Int) {
        self.maxDepth = maxDepth
        self.maxNodes = maxNodes
    }

    /// Keys that make an object a node.
    public static let nodeKeys: Set<String> = ["and", "or", "not", "tag", "attr"]
    static let equalityOps = ["eq", "ne", "in", "nin", "exists"]
    static let rangeOps = ["gt", "gte", "lt", "lte"]

    /// Parses the node held by `object` (whose fields are all node fields) at `path` (e.g. `filter`).
    ///
    /// - Returns: the expression and its node count (the cost model's unit).
    /// - Throws: `invalid_request` or `too_large`, the message starting with the path of the offending
    ///   value: `filter.and[2].gte: expected a number, got a string`.
    public func parse(_ object: JSONObject, path: String) throws(SteerError) -> (FilterExpression, nodes: Int) {
        var nodes = 0
        let expression = try node(object, path: path, depth: 1, nodes: &nodes)
        return (expression, nodes)
    }

    /// Parses any JSON value as a node at `path`.
    public func parse(_ value: JSONValue, path: String) throws(SteerError) -> (FilterExpression, nodes: Int) {
        guard case .object(let object) = value else { throw SteerError.invalid("\(path): expected an object, got \(value.typeName)") }
        return try parse(object, path: path)
    }

    private func count(_ nodes: inout Int, _ path: String, by amount: Int = 1) throws(SteerError) {
        nodes += amount
        guard nodes <= maxNodes else {
            throw SteerError(.tooLarge, "\(path): the filter has more than \(maxNodes) nodes (maxFilterNodes)")
        }
    }

    private func child(_ value: JSONValue, path: String, depth: Int, nodes: inout Int) throws(SteerError) -> FilterExpression {
        guard depth <= maxDepth else {
            throw SteerError(.tooLarge, "\(path): the filter is nested deeper than \(maxDepth) levels (maxFilterDepth)")
        }
        guard case .object(let object) = value else { throw SteerError.invalid("\(path): expected an object, got \(value.typeName)") }
        return try node(object, path: path, depth: depth, nodes: &nodes)
    }

    private func node(_ object: JSONObject, path: String, depth: Int, nodes: inout Int) throws(SteerError) -> FilterExpression {
        try count(&nodes, path)
        let kinds = object.fields.filter { Self.nodeKeys.contains($0.key) }.map(\.key)
        guard kinds.count == 1 else {
            if kinds.isEmpty {
                let known = object.fields.first.map { "unknown field '\($0.key)'; " } ?? ""
                throw SteerError.invalid("\(path): \(known)expected one of and, or, not, tag, attr")
            }
            throw SteerError.invalid("\(path): a node has one of and, or, not, tag, attr, got \(kinds.joined(separator: " and "))")
        }
        let kind = kinds[0]
        let value = object[kind]!
        if kind != "attr", let extra = object.fields.first(where: { $0.key != kind }) {
            throw SteerError.invalid("\(path): unknown field '\(extra.key)' beside '\(kind)'")
        }
        switch kind {
        case "and", "or":
            guard case .array(let elements) = value else {
                throw SteerError.invalid("\(path).\(kind): expected an array of nodes, got \(value.typeName)")
            }
            guard !elements.isEmpty else { throw SteerError.invalid("\(path).\(kind): must not be empty") }
            var children: [FilterExpression] = []
            children.reserveCapacity(elements.count)
            for (index, element) in elements.enumerated() {
                children.append(try child(element, path: "\(path).\(kind)[\(index)]", depth: depth + 1, nodes: &nodes))
            }
            return kind == "and" ? .and(children) : .or(children)
        case "not":
            return .not(try child(value, path: "\(path).not", depth: depth + 1, nodes: &nodes))
        case "tag":
            guard case .string(let tag) = value else { throw SteerError.invalid("\(path).tag: expected a string, got \(value.typeName)") }
            guard !tag.isEmpty else { throw SteerError.invalid("\(path).tag: must not be empty") }
            return .tag(tag)
        default:
            return .attribute(try attribute(object, path: path, nodes: &nodes))
        }
    }

    private func attribute(_ object: JSONObject, path: String, nodes: inout Int) throws(SteerError) -> AttributePredicate {
        guard case .string(let name) = object["attr"]! else {
            throw SteerError.invalid("\(path).attr: expected a string, got \(object["attr"]!.typeName)")
        }
        guard !name.isEmpty, !name.split(separator: ".", omittingEmptySubsequences: false).contains(where: \.isEmpty) else {
            throw SteerError.invalid("\(path).attr: expected a dotted attribute path without empty parts, got '\(name)'")
        }
        var conditions: [AttributePredicate.Condition] = []
        var equality: [String] = []
        var lower: [String] = []
        var upper: [String] = []
        for field in object.fields where field.key != "attr" {
            let at = "\(path).\(field.key)"
            switch field.key {
            case "eq": conditions.append(.eq(try scalar(field.value, path: at)))
            case "ne": conditions.append(.ne(try scalar(field.value, path: at)))
            case "in": conditions.append(.in(try scalars(field.value, path: at, nodes: &nodes)))
            case "nin": conditions.append(.nin(try scalars(field.value, path: at, nodes: &nodes)))
            case "gt": conditions.append(.gt(try number(field.value, path: at)))
            case "gte": conditions.append(.gte(try number(field.value, path: at)))
            case "lt": conditions.append(.lt(try number(field.value, path: at)))
            case "lte": conditions.append(.lte(try number(field.value, path: at)))
            case "exists":
                guard case .bool(let flag) = field.value else { throw SteerError.invalid("\(at): expected a boolean, got \(field.value.typeName)") }
                conditions.append(.exists(flag))
            default:
                throw SteerError.invalid("\(path): unknown field '\(field.key)' in an attr leaf (expected eq, ne, in, nin, gt, gte, lt, lte, exists)")
            }
            switch field.key {
            case "gt", "gte": lower.append(field.key)
            case "lt", "lte": upper.append(field.key)
            default: equality.append(field.key)
            }
        }
        guard !conditions.isEmpty else {
            throw SteerError.invalid("\(path): an attr leaf needs one of eq, ne, in, nin, gt, gte, lt, lte, exists")
        }
        if !equality.isEmpty && conditions.count > 1 {
            throw SteerError.invalid("\(path): '\(equality[0])' cannot share a leaf with another operator (only one lower and one upper bound can)")
        }
        if lower.count > 1 { throw SteerError.invalid("\(path): '\(lower[0])' and '\(lower[1])' are two lower bounds in one leaf") }
        if upper.count > 1 { throw SteerError.invalid("\(path): '\(upper[0])' and '\(upper[1])' are two upper bounds in one leaf") }
        return AttributePredicate(name: name, conditions: conditions)
    }

    private func scalar(_ value: JSONValue, path: String) throws(SteerError) -> FilterScalar {
        switch value {
        case .string(let text): return .string(text)
        case .int(let number): return .int(number)
        case .bool(let flag): return .bool(flag)
        default: throw SteerError.invalid("\(path): expected a string, an integer or a boolean, got \(value.typeName)")
        }
    }

    private func scalars(_ value: JSONValue, path: String, nodes: inout Int) throws(SteerError) -> [FilterScalar] {
        switch value {
        case .array(let elements):
            guard !elements.isEmpty else { throw SteerError.invalid("\(path): must not be empty") }
            try count(&nodes, path, by: elements.count)
            var result: [FilterScalar] = []
            result.reserveCapacity(elements.count)
            for (index, element) in elements.enumerated() { result.append(try scalar(element, path: "\(path)[\(index)]")) }
            return result
        case .floats(let values):
            let index = values.firstIndex { $0 != $0.rounded() } ?? 0
            throw SteerError.invalid("\(path)[\(index)]: expected a string, an integer or a boolean, got a number with a fraction")
        default:
            throw SteerError.invalid("\(path): expected an array of strings, integers or booleans, got \(value.typeName)")
        }
    }

    private func number(_ value: JSONValue, path: String) throws(SteerError) -> Double {
        switch value {
        case .int(let number): return Double(number)
        case .double(let number):
            guard number.isFinite else { throw SteerError.invalid("\(path): expected a finite number") }
            return number
        default: throw SteerError.invalid("\(path): expected a number, got \(value.typeName)")
        }
    }
}

extension FilterExpression {
    /// The wire form (parses back to an equal expression).
    public var jsonValue: JSONValue {
        switch self {
        case .and(let children): return .object(JSONObject([("and", .array(children.map(\.jsonValue)))]))
        case .or(let children): return .object(JSONObject([("or", .array(children.map(\.jsonValue)))]))
        case .not(let child): return .object(JSONObject([("not", child.jsonValue)]))
        case .tag(let tag): return .object(JSONObject([("tag", .string(tag))]))
        case .attribute(let predicate):
            var fields: [(key: String, value: JSONValue)] = [("attr", .string(predicate.name))]
            for condition in predicate.conditions {
                switch condition {
                case .eq(let value): fields.append(("eq", value.jsonValue))
                case .ne(let value): fields.append(("ne", value.jsonValue))
                case .in(let values): fields.append(("in", .array(values.map(\.jsonValue))))
                case .nin(let values): fields.append(("nin", .array(values.map(\.jsonValue))))
                case .gt(let bound): fields.append(("gt", .double(bound)))
                case .gte(let bound): fields.append(("gte", .double(bound)))
                case .lt(let bound): fields.append(("lt", .double(bound)))
                case .lte(let bound): fields.append(("lte", .double(bound)))
                case .exists(let flag): fields.append(("exists", .bool(flag)))
                }
            }
            return .object(JSONObject(fields))
        }
    }
}

extension FilterScalar {
    var jsonValue: JSONValue {
        switch self {
        case .string(let text): return .string(text)
        case .int(let number): return .int(number)
        case .double(let number): return .double(number)
        case .bool(let flag): return .bool(flag)
        }
    }
}
