import SteerCore
import SteerProtocol

/// The body of one message of a shard's write log (docs/scaling.md, "Following a stream"): the protocol's
/// own request line of the write, `{"op":"upsert","items":[…]}` (vectors as `vector_b64`, exact bits),
/// `{"op":"delete","ids":[…]}`, `{"op":"event","events":[{"user","item","kind","ts"},…]}` or
/// `{"op":"delete_user","user":…}`, with `"collection":"<name>"` for a named collection. Replicas read it
/// back with the server's `RequestDecoder` and limits: the stream's bytes are as hostile as a client's.
/// Written by replicas (writes sent to a following server) and routers (`steer route --follow`) alike.
public enum WriteLogMessage {
    /// A decoded message: the write and the collection it names (nil: the default collection).
    public struct Entry: Sendable {
        public var operation: WriteOperation
        public var collection: String?

        public init(operation: WriteOperation, collection: String? = nil) {
            self.operation = operation
            self.collection = collection
        }
    }

    /// The body of a write: `RequestEncoder`'s line of the request (vectors as `vector_b64`, exact bits;
    /// every event with its `ts`, so that every replica stores the same timestamps).
    public static func encode(_ operation: WriteOperation, collection: String? = nil) -> [UInt8] {
        let request: Request.Operation
        switch operation {
        case .upsert(let items): request = .upsert(items)
        case .delete(let ids): request = .delete(ids)
        case .events(let events): request = .event(events)
        case .deleteUser(let user): request = .deleteUser(user)
        }
        return RequestEncoder.encode(Request(operation: request, collection: collection), vectors: .base64)
    }

    /// Reads a message body back; anything but an `upsert`, `delete`, `event` or `delete_user` line is
    /// refused, and so is a body longer than the decoder's `maxLineBytes` (checked before parsing), an
    /// event without `ts` (a replica would fill in its own clock), and a token, deadline or sequence
    /// field (no client line carries them into the stream).
    ///
    /// - Throws: the decoder's errors; `.tooLarge` for an over-long body; `.invalidRequest` for another
    ///   op or field.
    public static func decode(_ payload: [UInt8], decoder: RequestDecoder) throws(SteerError) -> Entry {
        switch try decodeMessage(payload, decoder: decoder) {
        case .write(let entry): return entry
        case .collectionChange(let change):
            throw SteerError.invalid("stream message is a '\(change.name)', not an upsert, delete, event or delete_user")
        }
    }

    /// A decoded message of either kind: a write, or a collection change (`CollectionChange`).
    public enum Message: Sendable {
        case write(Entry)
        /// `create_collection` (never with `checkpoint`), `drop_collection`, `alias` or `delete_alias`.
        case collectionChange(Request.Operation)
    }

    /// Reads a message body back, a write or a collection change, with `decode`'s checks; a collection
    /// change is also refused with `checkpoint` or a `collection` field (an alias's target is its own field).
    ///
    /// - Throws: as `decode`.
    public static func decodeMessage(_ payload: [UInt8], decoder: RequestDecoder) throws(SteerError) -> Message {
        guard payload.count <= decoder.limits.maxLineBytes else {
            throw SteerError(.tooLarge, "stream message of \(payload.count) bytes, limit is \(decoder.limits.maxLineBytes)")
        }
        let root = try JSONParser.parse(payload)
        let request = try decoder.decode(root)
        guard request.token == nil, request.timeoutMillis == nil, request.fairQueue == nil, request.minSequence == nil,
              request.minSequences == nil
        else {
            throw SteerError.invalid("stream message carries a token, timeout_ms, fair_queue or min_sequence")
        }
        switch request.operation {
        case .upsert(let items): return .write(Entry(operation: .upsert(items), collection: request.collection))
        case .delete(let ids): return .write(Entry(operation: .delete(ids), collection: request.collection))
        case .event(let events):
            try requireTimestamps(root)
            return .write(Entry(operation: .events(events), collection: request.collection))
        case .deleteUser(let user): return .write(Entry(operation: .deleteUser(user), collection: request.collection))
        case .createCollection, .dropCollection, .alias, .deleteAlias:
            try CollectionChange.check(request.operation)
            if request.collection != nil {
                throw SteerError.invalid("stream message: a '\(request.operation.name)' carries a collection field")
            }
            return .collectionChange(request.operation)
        default:
            throw SteerError.invalid("stream message is a '\(request.operation.name)', not an upsert, delete, event, delete_user or a collection change")
        }
    }

    /// Refuses an `event` line any of whose events lacks `ts`.
    private static func requireTimestamps(_ root: JSONValue) throws(SteerError) {
        guard case .object(let object) = root else { return }
        if case .array(let events)? = object["events"] {
            for (index, event) in events.enumerated() {
                guard case .object(let fields) = event, fields["ts"] != nil else {
                    throw SteerError.invalid("stream message: events[\(index)] has no ts")
                }
            }
        } else if object["ts"] == nil {
            throw SteerError.invalid("stream message: the event has no ts")
        }
    }
}
