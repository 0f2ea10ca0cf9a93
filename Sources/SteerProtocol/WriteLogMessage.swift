#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import SteerCore

/// The body of one message of a shard's write log (docs/scaling.md, "Following a stream"). Item writes
/// (`upsert`, `delete`) are written in the binary layout of `WriteLogBinary` (vectors as raw float32);
/// the other writes as the protocol's own request line, `{"op":"event","events":[{"user","item","kind",
/// "ts"},…]}` or `{"op":"delete_user","user":…}`, with `"collection":"<name>"` for a named collection.
/// JSON lines of `upsert` (`vector_b64`, exact bits) and `delete` are read too (`encodeLine` writes
/// them). Replicas read every body back with the server's `RequestDecoder` limits: the stream's bytes
/// are as hostile as a client's. Written by replicas (writes sent to a following server) and routers
/// (`steer route --follow`) alike.
///
/// **Batch messages**: a router that has several writes for one shard at once appends them as ONE message
/// (`encodeBatch`): a binary message of their parts (`WriteLogBinary.merge`), or for JSON bodies only,
/// the bodies joined by `\n` (a JSON line never holds a raw newline); each part an `upsert` or `delete`
/// with its own `collection`. The message has one stream sequence; every part is applied in order as a
/// *part* of it, with its own outcome (`RetrievalEngine.apply(parts:)`). A message of one part is
/// exactly a single write's body. Only item writes are batched: an `event`, `delete_user` or collection
/// change part in a message of several parts is refused (alike on every replica).
public enum WriteLogMessage {
    /// The byte between the lines of a batch message.
    public static let lineSeparator: UInt8 = 10

    /// The body of a batch message: when any of `bodies` (each from `encode`) is binary, the binary message
    /// of all their parts (`WriteLogBinary.merge`); else the JSON bodies (without a newline) joined by `\n`.
    public static func encodeBatch(_ bodies: [[UInt8]]) -> [UInt8] {
        if bodies.contains(where: WriteLogBinary.isBinary) { return WriteLogBinary.merge(bodies) }
        var out: [UInt8] = []
        out.reserveCapacity(bodies.reduce(0) { $0 + $1.count + 1 })
        for (index, body) in bodies.enumerated() {
            if index > 0 { out.append(lineSeparator) }
            out.append(contentsOf: body)
        }
        return out
    }

    /// Whether `body` is a JSON body holding a line separator (a body that does must not join a batch
    /// message; a binary body's framing does not depend on its bytes, so it never does).
    public static func containsLineSeparator(_ body: [UInt8]) -> Bool {
        if WriteLogBinary.isBinary(body) { return false }
        return body.withUnsafeBufferPointer { bytes in
            guard let base = bytes.baseAddress else { return false }
            return memchr(base, Int32(lineSeparator), bytes.count) != nil
        }
    }

    /// The byte ranges of the lines of `payload` (empty lines included; one range for a body without a
    /// separator). `memchr`: one pass over the bytes.
    static func lineRanges(_ payload: [UInt8]) -> [Range<Int>] {
        payload.withUnsafeBufferPointer { bytes -> [Range<Int>] in
            guard let base = bytes.baseAddress else { return [0..<0] }
            var ranges: [Range<Int>] = []
            var start = 0
            while start <= bytes.count {
                guard start < bytes.count, let found = memchr(base + start, Int32(lineSeparator), bytes.count - start) else {
                    ranges.append(start..<bytes.count)
                    break
                }
                let end = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
                ranges.append(start..<end)
                start = end + 1
            }
            return ranges
        }
    }

    /// Reads back each line of a message (one line: a single write) with `decodeMessage`'s checks; in a
    /// message of several lines only `upsert`/`delete` lines are accepted. One bad line refuses that line
    /// only. Cost linear in the payload (each line is bounded by the decoder's `maxLineBytes`).
    ///
    /// - Returns: one result per line, in order (at least one).
    public static func decodeParts(_ payload: [UInt8], decoder: RequestDecoder) -> [Result<Message, SteerError>] {
        if WriteLogBinary.isBinary(payload) { return WriteLogBinary.decodeParts(payload, decoder: decoder) }
        let lines = lineRanges(payload)
        guard lines.count > 1 else {
            do throws(SteerError) {
                return [.success(try decodeMessage(payload, decoder: decoder))]
            } catch {
                return [.failure(error)]
            }
        }
        return lines.map { range -> Result<Message, SteerError> in
            do throws(SteerError) {
                let message = try decodeMessage(Array(payload[range]), decoder: decoder)
                switch message {
                case .write(let entry):
                    switch entry.operation {
                    case .upsert, .delete: return .success(message)
                    case .events, .deleteUser:
                        throw SteerError.invalid("stream message: an event or delete_user line in a batch message")
                    }
                case .collectionChange(let change):
                    throw SteerError.invalid("stream message: a '\(change.name)' line in a batch message")
                }
            } catch {
                return .failure(error)
            }
        }
    }

    /// A decoded message: the write and the collection it names (nil: the default collection).
    public struct Entry: Sendable {
        public var operation: WriteOperation
        public var collection: String?

        public init(operation: WriteOperation, collection: String? = nil) {
            self.operation = operation
            self.collection = collection
        }
    }

    /// The body of a write: `WriteLogBinary`'s message for an `upsert` or `delete`, else `encodeLine`.
    public static func encode(_ operation: WriteOperation, collection: String? = nil) -> [UInt8] {
        WriteLogBinary.encode(operation, collection: collection) ?? encodeLine(operation, collection: collection)
    }

    /// The JSON body of a write: `RequestEncoder`'s line of the request (vectors as `vector_b64`, exact
    /// bits; every event with its `ts`, so that every replica stores the same timestamps).
    public static func encodeLine(_ operation: WriteOperation, collection: String? = nil) -> [UInt8] {
        let request: Request.Operation
        switch operation {
        case .upsert(let items): request = .upsert(items)
        case .delete(let ids): request = .delete(ids)
        case .events(let events): request = .event(events)
        case .deleteUser(let user): request = .deleteUser(user)
        }
        return RequestEncoder.encode(Request(operation: request, collection: collection), vectors: .base64)
    }

    /// Reads a message body back (binary or JSON); anything but an `upsert`, `delete`, `event` or `delete_user` line is
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
        if WriteLogBinary.isBinary(payload) {
            let parts = WriteLogBinary.decodeParts(payload, decoder: decoder)
            guard parts.count == 1 else { throw SteerError.invalid("stream message: a batch message of \(parts.count) parts, not one write") }
            return try parts[0].get()
        }
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
