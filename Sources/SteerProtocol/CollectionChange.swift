import SteerCore

/// Collection changes in a shard's write log (docs/scaling.md, "Collections in the stream"): the
/// `create_collection`, `drop_collection`, `alias` and `delete_alias` request lines, appended to every
/// shard's stream by a router (`steer route --follow`) or to its own shard's stream by a following
/// replica, and applied by each replica in stream order between the writes around them. The body is the
/// protocol's own request line (`RequestEncoder`), read back by `WriteLogMessage.decodeMessage`.
///
/// A `create_collection` with `checkpoint` never enters the stream: each replica would ingest the
/// checkpoint's item table from its own disk, so the stream would not say what the collection holds.
public enum CollectionChange {
    /// Whether `operation` is a collection change that goes through the stream of a following server.
    public static func isChange(_ operation: Request.Operation) -> Bool {
        switch operation {
        case .createCollection, .dropCollection, .alias, .deleteAlias: return true
        default: return false
        }
    }

    /// Refuses what cannot go through a stream.
    ///
    /// - Throws: `.invalidRequest` for another op, or a `create_collection` with `checkpoint`.
    public static func check(_ operation: Request.Operation) throws(SteerError) {
        guard isChange(operation) else {
            throw SteerError.invalid("'\(operation.name)' is not a collection change (create_collection, drop_collection, alias, delete_alias)")
        }
        if case .createCollection(let settings) = operation, settings.checkpoint != nil {
            throw SteerError.invalid("create_collection with 'checkpoint' is refused when the servers follow a write log: each replica would ingest the checkpoint's items from its own disk, outside the stream; create the collection with 'dimension' and write its items (docs/scaling.md \"Collections in the stream\")")
        }
    }

    /// The message body of a change (its request line, no token or deadline).
    ///
    /// - Throws: `check`'s errors.
    public static func encode(_ operation: Request.Operation) throws(SteerError) -> [UInt8] {
        try check(operation)
        return RequestEncoder.encode(Request(operation: operation))
    }
}
