import SteerCore
import SteerEngine
import SteerProtocol

/// Answers of the user-history ops (docs/protocol.md, "User histories"), written after `"ok":true`.
extension RequestHandler {
    /// Runs `event`, `get_user` or `delete_user` against the engine of the request's collection and writes its fields.
    ///
    /// - Throws: the engine's errors; `.tooLarge` when a `get_user` answer outgrows `maxResponseBytes`.
    func runHistoryOperation(_ operation: Request.Operation, engine: RetrievalEngine, _ writer: inout JSONWriter) throws(SteerError) {
        if writeLog != nil, operation.name != "get_user" {
            // A follower applies only what the stream carries; events written here would live on this replica alone.
            throw SteerError.invalid("\(operation.name) is not available on a server that follows a write log (steer serve --follow): histories are not replicated through the stream")
        }
        switch operation {
        case .event(let events):
            let result = try engine.recordEvents(events)
            writer.raw(",\"recorded\":")
            writer.int(result.recorded)
            writer.raw(",\"dropped\":")
            writer.int(result.dropped)
            writer.raw(",\"unknown_items\":[")
            for (index, item) in result.unknownItems.enumerated() {
                if index > 0 { writer.raw(",") }
                writer.itemID(item)
            }
            writer.raw("]")
        case .getUser(let user, let limit):
            let events = try engine.userEvents(user, limit: limit)
            writer.raw(",\"user\":")
            writer.itemID(user)
            writer.raw(",\"events\":[")
            for (index, event) in events.enumerated() {
                try requireRoom(writer)
                if index > 0 { writer.raw(",") }
                Self.writeEvent(event, &writer)
            }
            writer.raw("]")
        case .deleteUser(let user):
            let deleted = try engine.deleteUser(user)
            writer.raw(",\"deleted\":")
            writer.int(deleted)
        default:
            throw SteerError.internalError("\(operation.name) is not a user-history op")
        }
    }

    /// `{"item":…,"kind":…,"ts":…}` of one stored event.
    static func writeEvent(_ event: StoredEvent, _ writer: inout JSONWriter) {
        writer.raw("{\"item\":")
        writer.itemID(event.item)
        writer.raw(",\"kind\":")
        writer.string(event.kind)
        writer.raw(",\"ts\":")
        writer.int(event.timestampMillis)
        writer.raw("}")
    }
}
