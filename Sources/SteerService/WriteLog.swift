import SteerCore
import SteerEngine
import SteerProtocol

/// Where a server that follows a shard's write log sends client writes (docs/scaling.md, "Following a
/// stream"): instead of writing its own store, the `RequestHandler` appends the write to the log and
/// answers with what applying it here gave. `steer serve --follow` installs one backed by NATS
/// JetStream; without it writes go straight to the engine.
public protocol WriteLog: Sendable {
    /// Appends `operation` (for `collection`, an alias already resolved; nil: the default collection) to
    /// the log and blocks the calling worker thread until the log persisted it and this server applied it
    /// (so the client reads its own write here), or until `deadlineNanos` (`DispatchTime` uptime
    /// nanoseconds).
    ///
    /// - Returns: the write's stream sequence and what applying it here gave.
    /// - Throws: `.unavailable` when the log did not persist it in time (the write may still appear) or
    ///   it was persisted but not applied here in time (the message says which, with the sequence); the
    ///   apply's own error when every replica refuses the write (for example `dimension_mismatch`).
    func append(_ operation: WriteOperation, collection: String?, deadlineNanos: UInt64) throws(SteerError) -> LoggedWrite

    /// Appends a collection change (`create_collection` without `checkpoint`, `drop_collection`, `alias`,
    /// `delete_alias`) to the log and blocks like `append` until this server applied it.
    ///
    /// - Returns: the change's stream sequence and, for `alias`/`delete_alias`, the alias's target before it.
    /// - Throws: as `append`; the apply's refusal (for example `not_found` for an alias to a missing
    ///   collection), which every replica applies alike.
    func appendChange(_ change: Request.Operation, deadlineNanos: UInt64) throws(SteerError) -> LoggedChange

    /// Stream messages this server skipped because it refused them (undecodable, a wrong dimension, a
    /// collection it does not have, …): each is recorded as applied with no change.
    var refusedMessages: Int { get }
}

/// What a write through a `WriteLog` gave.
public struct LoggedWrite: Sendable {
    /// The write's stream sequence.
    public var sequence: UInt64
    /// `upserted`/`deleted`: items written or ids that existed; for a `delete_user`, the events deleted;
    /// for events, the events recorded.
    public var count: Int
    /// For events: the apply's full result (nil when the outcome is unknown, for example a duplicate).
    public var events: EventRecordResult?

    public init(sequence: UInt64, count: Int, events: EventRecordResult? = nil) {
        self.sequence = sequence
        self.count = count
        self.events = events
    }
}

/// What a collection change through a `WriteLog` gave.
public struct LoggedChange: Sendable {
    /// The change's stream sequence.
    public var sequence: UInt64
    /// `alias`: the collection the alias pointed to before (nil: it is new); `delete_alias`: the collection
    /// it pointed to. Nil for the others, and when the outcome is unknown here (applied before this
    /// process started, or a duplicate).
    public var previous: String?

    public init(sequence: UInt64, previous: String? = nil) {
        self.sequence = sequence
        self.previous = previous
    }
}
