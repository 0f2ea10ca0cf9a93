import SteerCore
import SteerEngine

/// Filter and plan fragments written alike by the request handler, the router and the Swift client.
extension JSONWriter {
    /// `,"filter":{…}` for a non-empty filter: the tag lists, then the expression's node fields in the
    /// same object (docs/protocol.md, "Filter expressions"). Nothing for an empty filter.
    public mutating func filterField(_ filter: TagFilter) {
        filterField(tagsAny: filter.tagsAny, tagsNone: filter.tagsNone, tagGroups: filter.tagGroups, expression: filter.expression)
    }

    /// `filterField` from its parts.
    public mutating func filterField(tagsAny: [String], tagsNone: [String], tagGroups: [[String]] = [], expression: FilterExpression?) {
        var fields: [(key: String, value: JSONValue)] = []
        if !tagsAny.isEmpty { fields.append(("tags_any", .array(tagsAny.map(JSONValue.string)))) }
        if !tagsNone.isEmpty { fields.append(("tags_none", .array(tagsNone.map(JSONValue.string)))) }
        if !tagGroups.isEmpty { fields.append(("tag_groups", .array(tagGroups.map { .array($0.map(JSONValue.string)) }))) }
        if let expression, case .object(let node) = expression.jsonValue { fields.append(contentsOf: node.fields) }
        if fields.isEmpty { return }
        raw(",\"filter\":")
        value(.object(JSONObject(fields)))
    }

    /// `,"explain":{"plan":…,"matches":…,"items":…,"selectivity":…,"exact_threshold":…,"widenings":…,
    /// "exact_fallbacks":…,"scanned_records":…,"oversample":…,"rescored":…}` (`matches` and `selectivity` are null when unfiltered).
    public mutating func explainField(_ plan: SearchPlan) {
        raw(",\"explain\":{\"plan\":")
        string(plan.kind.rawValue)
        raw(",\"matches\":")
        if let matches = plan.matches { int(matches) } else { raw("null") }
        raw(",\"items\":")
        int(plan.items)
        raw(",\"selectivity\":")
        if let selectivity = plan.selectivity { value(.double(selectivity)) } else { raw("null") }
        raw(",\"exact_threshold\":")
        int(plan.exactThreshold)
        raw(",\"widenings\":")
        int(plan.widenings)
        raw(",\"exact_fallbacks\":")
        int(plan.exactFallbacks)
        raw(",\"scanned_records\":")
        int(plan.scannedRecords)
        raw(",\"oversample\":")
        int(plan.oversample)
        raw(",\"rescored\":")
        int(plan.rescored)
        raw("}")
    }

    /// `,"plans":{"unfiltered":n,"empty":n,"exact":n,"index":n,"post_filter":n}` for `stats`.
    public mutating func plansField(_ plans: [(kind: SearchPlan.Kind, count: Int)]) {
        raw(",\"plans\":{")
        for (index, entry) in plans.enumerated() {
            if index > 0 { raw(",") }
            string(entry.kind.rawValue)
            raw(":")
            int(entry.count)
        }
        raw("}")
    }
}
