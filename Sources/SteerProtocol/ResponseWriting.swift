import SteerCore

/// Response fragments written the same way by the engine's `RequestHandler` and by the router.
extension JSONWriter {
    /// `"id":<id>,` when the request had an id; nothing otherwise.
    public mutating func requestIDField(_ id: RequestID?) {
        guard let id else { return }
        raw("\"id\":")
        switch id {
        case .int(let number): int(number)
        case .string(let text): string(text)
        }
        raw(",")
    }

    /// A JSON array of strings.
    public mutating func strings(_ values: [String]) {
        raw("[")
        for (index, value) in values.enumerated() {
            if index > 0 { raw(",") }
            string(value)
        }
        raw("]")
    }

    /// `,"clauses":[{"text":…,"polarity":…,"tags":[…]},…]`
    public mutating func clausesField(_ clauses: [QueryClause]) {
        raw(",\"clauses\":[")
        for (index, clause) in clauses.enumerated() {
            if index > 0 { raw(",") }
            raw("{\"text\":")
            string(clause.text)
            raw(",\"polarity\":")
            string(clause.polarity.rawValue)
            raw(",\"tags\":")
            strings(clause.tags)
            raw("}")
        }
        raw("]")
    }

    /// `,"unknown_history":[…]`
    public mutating func unknownHistoryField(_ ids: [ItemID]) {
        raw(",\"unknown_history\":[")
        for (index, id) in ids.enumerated() {
            if index > 0 { raw(",") }
            itemID(id)
        }
        raw("]")
    }
}
