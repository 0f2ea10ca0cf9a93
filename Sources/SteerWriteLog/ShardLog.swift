import Dispatch
import Foundation
import SteerCore
import SteerNATS
import SteerProtocol

/// Publishes one write to a shard's stream (docs/scaling.md, "Following a stream"): the body is
/// `WriteLogMessage.encode(operation, collection:)`, the `Nats-Msg-Id` a fresh UUID (so a publish the client library
/// repeats inside the stream's duplicate window is stored once), and the answer is the stream sequence
/// JetStream acknowledged (the message is persisted: with R=3 a quorum stored it).
public enum StreamPublisher {
    /// - Parameters:
    ///   - collection: the named collection the write is for; nil: the default collection.
    ///   - deadlineNanos: `DispatchTime` uptime nanoseconds by which the PubAck must come.
    /// - Returns: the message's stream sequence.
    /// - Throws: `.tooLarge` when the body exceeds the server's `max_payload`; `.unavailable` when NATS
    ///   refused or did not confirm in time (the write may still be in the stream: the message names its
    ///   message id).
    public static func publish(_ operation: WriteOperation, collection: String? = nil, to stream: ShardStream, on connection: NATSConnection,
                               deadlineNanos: UInt64) async throws(SteerError) -> UInt64 {
        try await publish(body: WriteLogMessage.encode(operation, collection: collection), to: stream, on: connection, deadlineNanos: deadlineNanos)
    }

    /// Publishes a collection change (`CollectionChange`) like a write.
    ///
    /// - Throws: `CollectionChange.check`'s errors, then as the write's `publish`.
    public static func publish(change: Request.Operation, to stream: ShardStream, on connection: NATSConnection,
                               deadlineNanos: UInt64) async throws(SteerError) -> UInt64 {
        try await publish(body: try CollectionChange.encode(change), to: stream, on: connection, deadlineNanos: deadlineNanos)
    }

    /// Publishes one message body with a fresh message id and waits for its PubAck.
    static func publish(body: [UInt8], to stream: ShardStream, on connection: NATSConnection,
                                deadlineNanos: UInt64) async throws(SteerError) -> UInt64 {
        let now = DispatchTime.now().uptimeNanoseconds
        guard deadlineNanos > now else { throw SteerError(.unavailable, "no time left before the deadline to append the write") }
        let jetStream = JetStreamContext(connection: connection, timeout: .nanoseconds(Int64(deadlineNanos - now)))
        let messageID = UUID().uuidString
        let ack: PubAck
        do {
            ack = try await jetStream.publish(stream.subject, payload: body, messageID: messageID)
        } catch {
            throw mapped(error, messageID: messageID, stream: stream)
        }
        guard ack.stream == stream.name, ack.seq > 0 else {
            throw SteerError(.unavailable, "NATS acknowledged the write on stream '\(ack.stream)' sequence \(ack.seq), not on \(stream.name)")
        }
        return ack.seq
    }

    /// The Steer error a failed publish answers.
    static func mapped(_ error: NATSError, messageID: String, stream: ShardStream) -> SteerError {
        switch error {
        case .invalidArgument(let why):
            return SteerError(.tooLarge, "the write cannot be published: \(why)")
        case .timeout:
            return SteerError(.unavailable, "NATS did not confirm the write before the deadline; it may still be appended to \(stream.name) (message id \(messageID))")
        case .noResponders:
            return SteerError(.unavailable, "no JetStream stream takes \(stream.subject) (start a replica with --follow first, or NATS lost its quorum)")
        default:
            return SteerError(.unavailable, "NATS refused the write to \(stream.name): \(error)")
        }
    }
}

/// Where a router appends the writes of each shard: the seam `Router` writes through when it routes to a
/// cluster that follows NATS streams (`steer route --follow`), so its logic can be tested without NATS.
public protocol ShardLog: Sendable {
    /// Appends `operation` (for `collection`; nil: the default one) to shard `shard`'s log and waits until
    /// the log persisted it.
    ///
    /// - Returns: the write's sequence in that shard's stream.
    /// - Throws: `.unavailable` when the log did not persist it by `deadlineNanos` (it may still appear),
    ///   `.tooLarge` when it cannot be appended at all.
    func append(_ operation: WriteOperation, collection: String?, shard: Int, deadlineNanos: UInt64) async throws(SteerError) -> UInt64

    /// Appends a collection change (`CollectionChange`: `create_collection` without `checkpoint`,
    /// `drop_collection`, `alias`, `delete_alias`) to shard `shard`'s log and waits until the log persisted it.
    ///
    /// - Returns: the change's sequence in that shard's stream.
    /// - Throws: `CollectionChange.check`'s errors; else as `append`.
    func appendChange(_ change: Request.Operation, shard: Int, deadlineNanos: UInt64) async throws(SteerError) -> UInt64

    /// Closes the log's connections.
    func close() async
}

/// `ShardLog` over NATS JetStream: one connection shared by all shards, to the first of `addresses` that
/// answers; a connection that closed (the node died, the network failed) is replaced by one to the next
/// address at the next append. Streams are not created here: the replicas create them
/// (`steer serve --follow`), so a router cannot create one with the wrong number of copies.
///
/// Thread safety: the connection state sits behind `Locked`; a connection attempt in progress is shared
/// by every caller that needs one (one attempt at a time).
public final class NATSShardLog: ShardLog {
    public let addresses: NATSAddresses
    public let streams: [ShardStream]
    private let options: NATSConnectOptions
    private struct State {
        var connection: NATSConnection?
        var connecting: Task<Result<(NATSConnection, Int), NATSError>, Never>?
        /// The address index the next connection attempt starts at.
        var next = 0
    }
    private let state = Locked(State())
    /// Group commit of item writes per shard (`AppendBatcher`); set once in `init`.
    private let batcher = Locked<AppendBatcher?>(nil)
    /// The connected server's `max_payload` (1 MiB, NATS's default, until connected).
    private let maxPayload = Locked(1 << 20)

    /// How long one connection attempt to one address may take.
    public static let connectTimeout: Duration = .seconds(2)

    /// - Throws: `.invalidRequest` for a bad cluster name or a shard count below 1.
    public init(addresses: NATSAddresses, cluster: String, shardCount: Int) throws(SteerError) {
        guard shardCount >= 1 else { throw SteerError.invalid("shard count must be at least 1, got \(shardCount)") }
        var streams: [ShardStream] = []
        for shard in 0..<shardCount { streams.append(try ShardStream(cluster: cluster, shard: shard)) }
        self.addresses = addresses
        self.streams = streams
        var options = NATSConnectOptions()
        options.name = "steer-route"
        options.connectTimeout = Self.connectTimeout
        self.options = options
        let maxPayload = self.maxPayload
        batcher.withLock {
            $0 = AppendBatcher(shards: shardCount, maxPayloadBytes: { maxPayload.get() }) { [weak self] shard, body, deadline throws(SteerError) in
                guard let self else { throw SteerError(.unavailable, "the router's NATS log is closed") }
                return try await self.publish(body: body, shard: shard, deadlineNanos: deadline)
            }
        }
    }

    /// Connects now (the router does this before it listens, to report a NATS it cannot reach).
    ///
    /// - Throws: `.unavailable` when no address answered.
    public func connect() async throws(SteerError) {
        _ = try await connection()
    }

    /// Item writes (`upsert`/`delete`) go through the shard's group commit (`AppendBatcher`: writes queued
    /// behind publishes in flight share one batch message); events and user deletions are messages of
    /// their own (a replica applies each alone with its own sequence).
    public func append(_ operation: WriteOperation, collection: String?, shard: Int, deadlineNanos: UInt64) async throws(SteerError) -> UInt64 {
        guard streams.indices.contains(shard) else { throw SteerError.internalError("no stream for shard \(shard)") }
        let body = WriteLogMessage.encode(operation, collection: collection)
        switch operation {
        case .upsert, .delete:
            if !WriteLogMessage.containsLineSeparator(body), let batcher = batcher.get() {
                return try await batcher.append(body, shard: shard, deadlineNanos: deadlineNanos)
            }
        case .events, .deleteUser: break
        }
        return try await publish(body: body, shard: shard, deadlineNanos: deadlineNanos)
    }

    /// Publishes one message body to shard `shard`'s stream on the open connection.
    private func publish(body: [UInt8], shard: Int, deadlineNanos: UInt64) async throws(SteerError) -> UInt64 {
        let nats = try await connection()
        maxPayload.withLock { $0 = nats.serverInfo.maxPayload }
        do {
            return try await StreamPublisher.publish(body: body, to: streams[shard], on: nats, deadlineNanos: deadlineNanos)
        } catch {
            if nats.closedError != nil { drop(nats) }
            throw error
        }
    }

    public func appendChange(_ change: Request.Operation, shard: Int, deadlineNanos: UInt64) async throws(SteerError) -> UInt64 {
        guard streams.indices.contains(shard) else { throw SteerError.internalError("no stream for shard \(shard)") }
        try CollectionChange.check(change)
        let nats = try await connection()
        do {
            return try await StreamPublisher.publish(change: change, to: streams[shard], on: nats, deadlineNanos: deadlineNanos)
        } catch {
            if nats.closedError != nil { drop(nats) }
            throw error
        }
    }

    public func close() async {
        let open = state.withLock { state -> NATSConnection? in
            defer { state.connection = nil }
            return state.connection
        }
        await open?.close()
    }

    /// The open connection, or a new one (to the next address after a closed one).
    private func connection() async throws(SteerError) -> NATSConnection {
        let (existing, attempt) = state.withLock { state -> (NATSConnection?, Task<Result<(NATSConnection, Int), NATSError>, Never>?) in
            if let open = state.connection {
                if open.closedError == nil { return (open, nil) }
                state.connection = nil
            }
            if state.connecting == nil {
                let start = state.next
                let addresses = self.addresses
                let options = self.options
                state.connecting = Task {
                    do throws(NATSError) {
                        return .success(try await addresses.connect(startingAt: start, options: options))
                    } catch {
                        return .failure(error)
                    }
                }
            }
            return (nil, state.connecting)
        }
        if let existing { return existing }
        guard let attempt else { throw SteerError.internalError("no NATS connection attempt") }
        let result = await attempt.value
        let connected: NATSConnection? = state.withLock { state in
            if state.connecting == attempt { state.connecting = nil }
            switch result {
            case .success(let (connection, index)):
                if state.connection == nil || state.connection?.closedError != nil {
                    state.connection = connection
                    state.next = index
                }
                return state.connection
            case .failure:
                state.next = (state.next + 1) % max(1, addresses.addresses.count)
                return nil
            }
        }
        switch result {
        case .success: break
        case .failure(let error): throw SteerError(.unavailable, "cannot reach NATS at \(addresses): \(error)")
        }
        guard let connected else { throw SteerError(.unavailable, "the NATS connection closed while it opened") }
        return connected
    }

    /// Forgets a connection that closed; the next connection starts at the next address.
    private func drop(_ connection: NATSConnection) {
        let dropped = state.withLock { state -> Bool in
            guard let current = state.connection, current === connection else { return false }
            state.connection = nil
            state.next = (state.next + 1) % max(1, addresses.addresses.count)
            return true
        }
        if dropped { Task { await connection.close() } }
    }
}
