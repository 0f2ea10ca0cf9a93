import SteerCore

/// Where a server that follows a shard's write log sends client writes (docs/scaling.md, "Following a
/// stream"): instead of writing its own store, the `RequestHandler` appends the write to the log and
/// answers with what applying it here gave. `steer serve --follow` installs one backed by NATS
/// JetStream; without it writes go straight to the engine.
public protocol WriteLog: Sendable {
    /// Appends `operation` to the log and blocks the calling worker thread until the log persisted it
    /// and this server applied it (so the client reads its own write here), or until `deadlineNanos`
    /// (`DispatchTime` uptime nanoseconds).
    ///
    /// - Returns: the write's stream sequence and its count (`upserted` / `deleted`).
    /// - Throws: `.unavailable` when the log did not persist it in time (the write may still appear) or
    ///   it was persisted but not applied here in time (the message says which, with the sequence); the
    ///   apply's own error when every replica refuses the write (for example `dimension_mismatch`).
    func append(_ operation: WriteOperation, deadlineNanos: UInt64) throws(SteerError) -> (sequence: UInt64, count: Int)
}
