import SteerCore
import SteerEngine
import SteerProtocol

/// Answers of the user-history ops (docs/protocol.md, "User histories"), written after `"ok":true`.
extension RequestHandler {
    /// Runs `event`, `get_user` or `delete_user` against the engine of the request's collection and writes
    /// its fields. On a server that follows a write log, `event` and `delete_user` go through the log
    /// (`appendToLog`) and the answer adds their `sequence`; `unknown_items` is then empty when the
    /// outcome was not known here (a duplicate message).
    ///
    /// - Throws: the engine's errors; `.tooLarge` when a `get_user` answer outgrows `maxResponseBytes`;
    ///   `WriteLog.append`'s errors.
    func runHistoryOperation(_ operation: Request.Operation, lease: CollectionSet.Lease, deadlineNanos: UInt64?,
                             _ writer: inout JSONWriter) throws(SteerError) {
        let engine = lease.engine
        switch operation {
        case .event(let events):
            var result: EventRecordResult
            var sequence: UInt64?
            if writeLog != nil {
                let logged = try appendToLog(.events(events), lease: lease, deadlineNanos: deadlineNanos)
                result = logged.events ?? EventRecordResult(recorded: logged.count, dropped: 0, unknownItems: [])
                sequence = logged.sequence
            } else {
                result = try engine.recordEvents(events)
            }
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
            if let sequence { Self.writeSequence(sequence, &writer) }
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
            if writeLog != nil {
                let logged = try appendToLog(.deleteUser(user), lease: lease, deadlineNanos: deadlineNanos)
                writer.raw(",\"deleted\":")
                writer.int(logged.count)
                Self.writeSequence(logged.sequence, &writer)
            } else {
                writer.raw(",\"deleted\":")
                writer.int(try engine.deleteUser(user))
            }
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
