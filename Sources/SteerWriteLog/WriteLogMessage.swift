import SteerCore
import SteerEngine
import SteerProtocol

/// The body of one message of a shard's write log (docs/scaling.md, "Following a stream"): the protocol's
/// own request line, `{"op":"upsert","items":[…]}` (vectors as `vector_b64`, exact bits) or
/// `{"op":"delete","ids":[…]}`. Replicas read it back with the server's `RequestDecoder` and limits: the
/// stream's bytes are as hostile as a client's. Written by replicas (writes sent to a following server)
/// and routers (`steer route --follow`) alike.
public enum WriteLogMessage {
    /// The body of a write.
    public static func encode(_ operation: WriteOperation) -> [UInt8] {
        var writer = JSONWriter(capacity: 1024)
        switch operation {
        case .upsert(let items):
            writer.raw("{\"op\":\"upsert\",\"items\":[")
            for (index, item) in items.enumerated() {
                if index > 0 { writer.raw(",") }
                writer.raw("{\"id\":")
                writer.itemID(item.id)
                writer.raw(",\"vector_b64\":")
                writer.string(Base64Floats.encode(item.vector))
                if let title = item.title {
                    writer.raw(",\"title\":")
                    writer.string(title)
                }
                writer.raw(",\"tags\":")
                writer.strings(item.tags)
                if let attributes = item.attributesJSON {
                    writer.raw(",\"attributes\":")
                    writer.bytes.append(contentsOf: attributes.utf8)
                }
                writer.raw("}")
            }
            writer.raw("]}")
        case .delete(let ids):
            writer.raw("{\"op\":\"delete\",\"ids\":[")
            for (index, id) in ids.enumerated() {
                if index > 0 { writer.raw(",") }
                writer.itemID(id)
            }
            writer.raw("]}")
        }
        return writer.bytes
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
