import Foundation
import SteerCore

/// Decoding of the user-history fields: `event` (one event or a batch), `user` of `get_user`,
/// `delete_user`, `recommend` and `encode` (docs/protocol.md, "User histories").
extension RequestDecoder {
    /// The server's clock in milliseconds since the Unix epoch: the timestamp of an event without `ts`.
    static func nowMillis() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }

    /// `user`: a string or an integer id (`ItemID` rules); nil when absent and not `required`.
    ///
    /// - Throws: `.invalidRequest` when missing but required or of the wrong type; `.tooLarge` for an
    ///   over-long id.
    func decodeUser(_ fields: Fields, required: Bool) throws(SteerError) -> UserID? {
        guard let value = fields.object["user"], value != .null else {
            if required { throw SteerError.invalid("\(fields.op): missing field 'user'") }
            return nil
        }
        return try Self.itemID(value, field: "user")
    }

    /// The events of an `event` request: `user`, `item`, `kind`, `ts` at the top level, or `events`, an
    /// array of objects with those fields (not both). `kind` defaults to `view`, `ts` to the server's
    /// clock when the line is read.
    ///
    /// - Throws: `.invalidRequest` naming the field; `.tooLarge` for more than `maxBatch` events, an
    ///   over-long id or kind.
    func decodeEvents(_ fields: Fields) throws(SteerError) -> [UserEvent] {
        let object = fields.object
        let now = Self.nowMillis()
        if let value = object["events"] {
            for name in ["user", "item", "kind", "ts"] where object[name] != nil {
                throw SteerError.invalid("event: give 'events' or one event's fields, not both ('\(name)' was given with 'events')")
            }
            guard case .array(let elements) = value else {
                throw SteerError.invalid("events must be an array of objects, got \(value.typeName)")
            }
            guard !elements.isEmpty else { throw SteerError.invalid("events must not be empty") }
            guard elements.count <= limits.maxBatch else {
                throw SteerError(.tooLarge, "events has \(elements.count) events, limit is \(limits.maxBatch)")
            }
            var events: [UserEvent] = []
            events.reserveCapacity(elements.count)
            for (index, element) in elements.enumerated() {
                guard case .object(let entry) = element else {
                    throw SteerError.invalid("events[\(index)] must be an object, got \(element.typeName)")
                }
                for field in entry.fields where !["user", "item", "kind", "ts"].contains(field.key) {
                    throw SteerError.invalid("unknown field 'events[\(index)].\(field.key)' (known: user, item, kind, ts)")
                }
                events.append(try Self.event(entry, prefix: "events[\(index)].", now: now))
            }
            return events
        }
        return [try Self.event(object, prefix: "", now: now)]
    }

    private static func event(_ object: JSONObject, prefix: String, now: Int64) throws(SteerError) -> UserEvent {
        guard let userValue = object["user"] else { throw SteerError.invalid("event: missing field '\(prefix)user'") }
        guard let itemValue = object["item"] else { throw SteerError.invalid("event: missing field '\(prefix)item'") }
        let user = try itemID(userValue, field: "\(prefix)user")
        let item = try itemID(itemValue, field: "\(prefix)item")
        var kind = UserEvent.defaultKind
        if let value = object["kind"] {
            guard case .string(let text) = value else { throw SteerError.invalid("\(prefix)kind must be a string, got \(value.typeName)") }
            guard !text.isEmpty else { throw SteerError.invalid("\(prefix)kind must not be empty") }
            guard text.utf8.count <= UserEvent.maxKindBytes else {
                throw SteerError(.tooLarge, "\(prefix)kind is \(text.utf8.count) bytes, limit is \(UserEvent.maxKindBytes)")
            }
            kind = text
        }
        var timestamp = now
        if let value = object["ts"] {
            switch value {
            case .int(let number): timestamp = number
            default: throw SteerError.invalid("\(prefix)ts must be an integer (milliseconds), got \(value.typeName)")
            }
        }
        return UserEvent(user: user, item: item, kind: kind, timestampMillis: timestamp)
    }
}
