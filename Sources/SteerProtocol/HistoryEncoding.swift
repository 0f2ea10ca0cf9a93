import SteerCore

/// The request fields of the user-history ops, of `recommend`'s `user` and examples, and of
/// `ingest_vectors`, for `RequestEncoder` (docs/protocol.md).
extension RequestEncoder {
    /// `user`, `max_history`, `positive`, `negative`, `strategy` of a `recommend`/`encode` (each left out
    /// when it has its default).
    static func writeHistorySource(_ request: RecommendRequest, _ writer: inout JSONWriter) {
        if let user = request.user {
            writer.raw(",\"user\":")
            writer.itemID(user)
            if request.maxHistory != RecommendRequest.defaultMaxHistory {
                writer.raw(",\"max_history\":")
                writer.int(request.maxHistory)
            }
        }
        for (name, ids) in [("positive", request.positive), ("negative", request.negative)] where !ids.isEmpty {
            writer.raw(",")
            writer.string(name)
            writer.raw(":[")
            for (index, id) in ids.enumerated() {
                if index > 0 { writer.raw(",") }
                writer.itemID(id)
            }
            writer.raw("]")
        }
        if (!request.positive.isEmpty || !request.negative.isEmpty) && request.strategy != .averageVector {
            writer.raw(",\"strategy\":")
            writer.string(request.strategy.rawValue)
        }
    }

    /// One event object: `{"user","item","kind","ts"}`.
    public static func writeEvent(_ event: UserEvent, _ writer: inout JSONWriter) {
        writer.raw("{\"user\":")
        writer.itemID(event.user)
        writer.raw(",\"item\":")
        writer.itemID(event.item)
        writer.raw(",\"kind\":")
        writer.string(event.kind)
        writer.raw(",\"ts\":")
        writer.int(event.timestampMillis)
        writer.raw("}")
    }

    static func writeHistoryFields(_ operation: Request.Operation, vectors: VectorEncoding, _ writer: inout JSONWriter) {
        switch operation {
        case .event(let events):
            writer.raw(",\"events\":[")
            for (index, event) in events.enumerated() {
                if index > 0 { writer.raw(",") }
                writeEvent(event, &writer)
            }
            writer.raw("]")
        case .getUser(let user, let limit):
            writer.raw(",\"user\":")
            writer.itemID(user)
            if let limit {
                writer.raw(",\"limit\":")
                writer.int(limit)
            }
        case .deleteUser(let user):
            writer.raw(",\"user\":")
            writer.itemID(user)
        case .ingestVectors(let version, let dimension, let checkpointHash, let items, let complete):
            writer.raw(",\"version\":")
            writer.string(version)
            writer.raw(",\"dimension\":")
            writer.int(dimension)
            writer.raw(",\"checkpoint_hash\":")
            writer.string(checkpointHash)
            if complete { writer.raw(",\"complete\":true") }
            writer.raw(",\"items\":[")
            for (index, item) in items.enumerated() {
                if index > 0 { writer.raw(",") }
                writer.raw("{\"id\":")
                writer.itemID(item.id)
                switch vectors {
                case .json:
                    writer.raw(",\"vector\":")
                    writer.floats(item.vector)
                case .base64:
                    writer.raw(",\"vector_b64\":")
                    writer.string(Base64Floats.encode(item.vector))
                }
                if let title = item.title {
                    writer.raw(",\"title\":")
                    writer.string(title)
                }
                if let tags = item.tags {
                    writer.raw(",\"tags\":")
                    writer.strings(tags)
                }
                writer.raw("}")
            }
            writer.raw("]")
        default:
            break
        }
    }
}
