import SteerCore
import SteerIndex
import SteerStore

/// A set of internal ids or its complement, as bits: the in-memory counterpart of `LabelSet`.
private enum BitSet {
    case only(LabelBitset)
    case allBut(LabelBitset)

    func and(_ other: BitSet) -> BitSet {
        switch (self, other) {
        case (.only(var a), .only(let b)): a.formIntersection(b); return .only(a)
        case (.only(var a), .allBut(let b)), (.allBut(let b), .only(var a)): a.subtract(b); return .only(a)
        case (.allBut(var a), .allBut(let b)): a.formUnion(b); return .allBut(a)
        }
    }

    func or(_ other: BitSet) -> BitSet {
        switch (self, other) {
        case (.only(var a), .only(let b)): a.formUnion(b); return .only(a)
        case (.only(let a), .allBut(var b)), (.allBut(var b), .only(let a)): b.subtract(a); return .allBut(b)
        case (.allBut(var a), .allBut(let b)): a.formIntersection(b); return .allBut(a)
        }
    }

    var negated: BitSet {
        switch self {
        case .only(let a): return .allBut(a)
        case .allBut(let a): return .only(a)
        }
    }
}

extension RetrievalEngine {
    /// Resolves a filter whose every attribute leaf has a payload index on the store's in-memory columns
    /// (`ItemStore.payloadBits`), and its tags from the in-memory postings (`ItemStore.tagBits`), as
    /// bits; nil when some attribute leaf has none, or the in-memory postings are unusable (the caller
    /// then takes the RocksDB path, `resolveFilterUncached`).
    ///
    /// The result describes the same items as the RocksDB path and leads the planner to the same plan:
    /// a requirement comes back as `requiredBits` (required − excluded, resolved here), and a filter
    /// that only excludes as `excludedBits` (the planner then drops them after the index search, or
    /// takes the live items from `ItemStore.liveBits` minus them, as the RocksDB path does with sets).
    ///
    /// - Complexity: O(internal ids ÷ 64 words) per set operation and per tag list, O(internal ids) per
    ///   attribute leaf condition, O(postings) per tag; no RocksDB read.
    func resolveFilterBits(_ filter: TagFilter, extraRequired: [[String]], extraExcluded: [String]) throws(SteerError) -> ResolvedFilter? {
        let payloads = store.payloadIndexes
        if let expression = filter.expression, !Self.columnsAnswer(expression, payloads) { return nil }
        var required: LabelBitset?
        var groups = extraRequired + filter.tagGroups
        if !filter.tagsAny.isEmpty { groups.append(filter.tagsAny) }
        for group in groups {
            guard let union = store.tagBits(anyOf: group) else { return nil }
            if required == nil { required = union } else { required!.formIntersection(union) }
        }
        let excludedTags = filter.tagsNone + extraExcluded
        guard var excluded = excludedTags.isEmpty ? LabelBitset() : store.tagBits(anyOf: excludedTags) else { return nil }
        if let expression = filter.expression {
            guard let set = bits(expression, payloads) else { return nil }
            switch set {
            case .only(let matching):
                if required == nil { required = matching } else { required!.formIntersection(matching) }
            case .allBut(let failing): excluded.formUnion(failing)
            }
        }
        if var allowed = required {
            allowed.subtract(excluded)
            allowed.trim()
            var resolved = ResolvedFilter(required: nil, excluded: [], scannedRecords: 0)
            resolved.requiredBits = allowed
            return resolved
        }
        excluded.trim()
        var resolved = ResolvedFilter(required: nil, excluded: [], scannedRecords: 0)
        resolved.excludedBits = excluded
        return resolved
    }

    /// Whether every attribute leaf of `expression` has a payload index whose kind answers it.
    private static func columnsAnswer(_ expression: FilterExpression, _ payloads: [String: PayloadKind]) -> Bool {
        switch expression {
        case .tag: return true
        case .not(let child): return columnsAnswer(child, payloads)
        case .and(let children), .or(let children): return children.allSatisfy { columnsAnswer($0, payloads) }
        case .attribute(let predicate):
            guard let kind = payloads[predicate.name] else { return false }
            return predicate.conditions.allSatisfy { condition in
                if case .exists = condition { return kind == .keyword }
                return true
            }
        }
    }

    private func bits(_ expression: FilterExpression, _ payloads: [String: PayloadKind]) -> BitSet? {
        switch expression {
        case .tag(let tag): return store.tagBits(anyOf: [tag]).map(BitSet.only)
        case .not(let child): return bits(child, payloads)?.negated
        case .and(let children):
            var result = BitSet.allBut(LabelBitset())
            for child in children {
                guard let set = bits(child, payloads) else { return nil }
                result = result.and(set)
            }
            return result
        case .or(let children):
            var result = BitSet.only(LabelBitset())
            for child in children {
                guard let set = bits(child, payloads) else { return nil }
                result = result.or(set)
            }
            return result
        case .attribute(let predicate):
            guard let kind = payloads[predicate.name] else { return nil }
            var result = BitSet.allBut(LabelBitset())
            for condition in predicate.conditions {
                guard let set = conditionBits(predicate.name, kind, condition) else { return nil }
                result = result.and(set)
            }
            return result
        }
    }

    /// One condition of an attribute leaf from the in-memory payload index (the semantics of
    /// `payloadSet`, which answers it from RocksDB).
    private func conditionBits(_ name: String, _ kind: PayloadKind, _ condition: AttributePredicate.Condition) -> BitSet? {
        func ids(_ query: PayloadQuery) -> BitSet? { store.payloadBits(name, query).map(BitSet.only) }
        switch condition {
        case .eq(let value): return ids(.values([value]))
        case .in(let values): return ids(.values(values))
        case .ne(let value): return ids(.values([value]))?.negated
        case .nin(let values): return ids(.values(values))?.negated
        case .exists(let wanted):
            guard kind == .keyword else { return nil }
            let set = ids(.any)
            return wanted ? set : set?.negated
        case .gt(let bound): return ids(.range(lower: bound, lowerInclusive: false, upper: nil, upperInclusive: false))
        case .gte(let bound): return ids(.range(lower: bound, lowerInclusive: true, upper: nil, upperInclusive: false))
        case .lt(let bound): return ids(.range(lower: nil, lowerInclusive: false, upper: bound, upperInclusive: false))
        case .lte(let bound): return ids(.range(lower: nil, lowerInclusive: false, upper: bound, upperInclusive: true))
        }
    }
}
