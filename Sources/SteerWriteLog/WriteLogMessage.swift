import SteerCore
import SteerProtocol

/// The body of one message of a shard's write log (docs/scaling.md, "Following a stream"): the protocol's
/// own request line, `{"op":"upsert","items":[…]}` (vectors as `vector_b64`, exact bits) or
/// `{"op":"delete","ids":[…]}`. Replicas read it back with the server's `RequestDecoder` and limits: the
/// stream's bytes are as hostile as a client's. Written by replicas (writes sent to a following server)
/// and routers (`steer route --follow`) alike.
public enum WriteLogMessage {
    /// The body of a write: `RequestEncoder`'s line of the `upsert`/`delete` request (vectors as
    /// `vector_b64`, exact bits).
    public static func encode(_ operation: WriteOperation) -> [UInt8] {
        switch operation {
        case .upsert(let items): return RequestEncoder.encode(Request(operation: .upsert(items)), vectors: .base64)
        case .delete(let ids): return RequestEncoder.encode(Request(operation: .delete(ids)), vectors: .base64)
        }
    }

    /// Reads a message body back; anything but an `upsert` or `delete` line is refused.
    ///
    /// - Throws: the decoder's errors; `.invalidRequest` for another op.
    public static func decode(_ payload: [UInt8], decoder: RequestDecoder) throws(SteerError) -> WriteOperation {
        let request = try decoder.decode(try JSONParser.parse(payload))
        switch request.operation {
        case .upsert(let items): return .upsert(items)
        case .delete(let ids): return .delete(ids)
        default: throw SteerError.invalid("stream message is a '\(request.operation.name)', not an upsert or delete")
        }
    }
}
