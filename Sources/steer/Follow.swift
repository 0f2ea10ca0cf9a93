import Dispatch
import Foundation
import Logging
import SteerCore
import SteerEngine
import SteerNATS
import SteerProtocol
import SteerService

/// `steer serve --follow`: this server is one replica of a shard whose writes live in a NATS JetStream
/// stream (docs/scaling.md, "Following a stream").
///
/// - **Stream**: subject `steer.<cluster>.shard.<i>`, stream name `steer-<cluster>-shard-<i>` (stream
///   names may not contain dots), file storage, `--stream-replicas` copies, 2-minute duplicate window.
///   Created when missing; an existing one is used as it is.
/// - **Applying**: a durable pull consumer named `replica-<store id>` (one per data directory). Each
///   (re)connection deletes it and creates it again with `deliver_policy` `by_start_sequence` from
///   `RetrievalEngine.appliedSequence` + 1, so the store, not the server's consumer state, says where a
///   replica resumes. Messages are applied one at a time in stream order (`RetrievalEngine.apply`, which
///   stores the sequence in the items' RocksDB batch and skips a redelivered one), on `applyQueue`, then
///   acknowledged.
/// - **Writing**: `append` (a `WriteLog`, called on a worker thread) publishes the write with a fresh
///   `Nats-Msg-Id`, waits for the PubAck, then for this replica to apply that sequence, and answers with
///   the apply's outcome.
/// - **Message body**: the protocol's own request line, `{"op":"upsert","items":[…]}` (vectors as
///   `vector_b64`, exact bits) or `{"op":"delete","ids":[…]}`, decoded with the server's `RequestDecoder`:
///   the stream's bytes are as hostile as a client's.
/// - **Failures**: a lost connection or a failed apply ends the session; the loop connects again after
///   `retryDelay` and resumes from the stored sequence. While disconnected, writes answer `unavailable`
///   and reads go on.
///
/// Thread safety: the connection and the outcomes table sit behind `Locked` (with `recorded`, an
/// `NSCondition`, to wait on the table); `run` is one task; engine calls run on `applyQueue`.
final class StreamFollower: WriteLog, Sendable {
    struct Settings: Sendable {
        var host: String
        var port: Int
        var cluster: String
        var shard: Int
        var streamReplicas: Int = 1
    }

    /// Messages per pull (well below the client's 64 MiB subscription buffer at 1 MiB `max_payload`).
    static let fetchBatch = 256
    /// How long one pull waits on the server for messages.
    static let fetchExpiry: Duration = .seconds(1)
    /// Pause before connecting again after a failed session.
    static let retryDelay: Duration = .seconds(1)
    /// The stream's de-duplication window for `Nats-Msg-Id`.
    static let duplicateWindow: Duration = .seconds(120)
    /// Apply outcomes kept for writers waiting on their sequence (oldest dropped past this many).
    static let maxOutcomes = 65_536

    let settings: Settings
    let engine: RetrievalEngine
    let decoder: RequestDecoder
    let logger: Logger
    let subject: String
    let streamName: String
    let durable: String
    private let connection = Locked<NATSConnection?>(nil)
    /// Apply outcomes by sequence, and the sequence through which outcomes are recorded (`recorded`,
    /// broadcast on each record), for writers waiting in `append`.
    private let outcomes = Locked<(bySequence: [UInt64: ApplyOutcome], through: UInt64)>(([:], 0))
    private let recorded = NSCondition()
    private let applyQueue = DispatchQueue(label: "steer.follow.apply")

    /// - Throws: `ValidationError`-style `SteerError.invalidRequest` for a bad cluster name.
    init(settings: Settings, engine: RetrievalEngine, limits: ProtocolLimits, logger: Logger) throws(SteerError) {
        let cluster = settings.cluster
        guard (1...64).contains(cluster.utf8.count),
              cluster.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F })
        else {
            throw SteerError.invalid("cluster name must be 1-64 letters, digits or '_', got '\(cluster)'")
        }
        guard let storeID = engine.store.storeID else { throw SteerError(.corrupt, "the store has no store id") }
        self.settings = settings
        self.engine = engine
        self.decoder = RequestDecoder(limits: limits)
        self.logger = logger
        subject = "steer.\(cluster).shard.\(settings.shard)"
        streamName = "steer-\(cluster)-shard-\(settings.shard)"
        durable = "replica-\(storeID)"
        let applied = engine.appliedSequence
        outcomes.withLock { $0.through = applied }
    }

    /// `nats://host:port`, `host:port` or `host` (port 4222).
    static func parseURL(_ text: String) -> (host: String, port: Int)? {
        var rest = Substring(text)
        if rest.hasPrefix("nats://") { rest = rest.dropFirst(7) }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty, !rest.contains("/"), !rest.contains("@") else { return nil }
        guard let colon = rest.lastIndex(of: ":") else { return (String(rest), 4222) }
        let host = rest[..<colon]
        guard !host.isEmpty, let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        return (String(host), port)
    }

    // MARK: Following

    /// Connects, makes sure the stream exists and creates the consumer at the stored sequence.
    ///
    /// - Throws: `NATSError` when NATS cannot be reached or refuses; `SteerError.unavailable` when the
    ///   stream no longer holds the next sequence this replica needs (it needs a snapshot).
    func connect() async throws -> NATSConnection {
        let nats = try await NATSConnection.connect(host: settings.host, port: settings.port)
        do {
            let jetStream = JetStreamContext(connection: nats)
            let info = try await ensureStream(jetStream)
            let next = engine.appliedSequence + 1
            if info.state.firstSeq > next && info.state.lastSeq >= next {
                throw SteerError(.unavailable, "stream \(streamName) starts at sequence \(info.state.firstSeq) but this replica needs \(next): it needs a snapshot (not implemented)")
            }
            try await deleteConsumerIfPresent(jetStream)
            var config = ConsumerConfig(durableName: durable, deliverPolicy: .byStartSequence, optStartSeq: next, ackPolicy: .explicit)
            config.ackWaitNanos = 30_000_000_000
            try await jetStream.createDurableConsumer(stream: streamName, config: config)
            connection.withLock { $0 = nats }
            logger.info("following", metadata: ["steer.stream": "\(streamName)", "steer.from": "\(next)", "steer.consumer": "\(durable)"])
            return nats
        } catch {
            await nats.close()
            throw error
        }
    }

    /// The shard's stream, created when missing.
    private func ensureStream(_ jetStream: JetStreamContext) async throws(NATSError) -> StreamInfo {
        let found: StreamInfo?
        do {
            found = try await jetStream.streamInfo(streamName)
        } catch {
            guard Self.isJetStreamError(error, JetStreamAPIError.streamNotFound) else { throw error }
            found = nil
        }
        if let found { return found }
        let created = try await jetStream.createStream(StreamConfig(
            name: streamName, subjects: [subject], storage: .file, replicas: settings.streamReplicas,
            duplicateWindow: Self.duplicateWindow))
        logger.info("created the shard's stream", metadata: ["steer.stream": "\(streamName)", "steer.replicas": "\(settings.streamReplicas)"])
        return created
    }

    /// Deletes this replica's consumer; one that does not exist is fine.
    private func deleteConsumerIfPresent(_ jetStream: JetStreamContext) async throws(NATSError) {
        do {
            try await jetStream.deleteConsumer(stream: streamName, consumer: durable)
        } catch {
            guard Self.isJetStreamError(error, JetStreamAPIError.consumerNotFound) else { throw error }
        }
    }

    static func isJetStreamError(_ error: any Error, _ code: Int) -> Bool {
        if case .jetStream(let api)? = error as? NATSError { return api.errCode == code }
        return false
    }

    /// Applies the stream until cancelled: one session per connection, a new one after a failure.
    /// `first` is a connection `connect()` already made (the server connects once before it listens).
    func run(first: NATSConnection?) async {
        var pending = first
        while !Task.isCancelled {
            do {
                let nats: NATSConnection
                if let pending { nats = pending } else { nats = try await connect() }
                pending = nil
                defer { connection.withLock { $0 = nil } }
                do {
                    try await follow(nats)
                } catch {
                    await nats.close()
                    throw error
                }
                await nats.close()
            } catch {
                if Task.isCancelled { break }
                logger.warning("following the stream stopped; reconnecting", metadata: ["steer.error": "\(error)"])
            }
            try? await Task.sleep(for: Self.retryDelay)
        }
    }

    private func follow(_ nats: NATSConnection) async throws {
        let jetStream = JetStreamContext(connection: nats)
        while !Task.isCancelled {
            // What is there now, up to a batch; when nothing is, wait for the next one message (a pull
            // asking for a whole batch would wait out its expiry unless the batch filled up).
            var messages = try await jetStream.fetch(stream: streamName, consumer: durable, batch: Self.fetchBatch, noWait: true)
            if messages.isEmpty {
                messages = try await jetStream.fetch(stream: streamName, consumer: durable, batch: 1, expires: Self.fetchExpiry)
            }
            for message in messages {
                let sequence = message.metadata.streamSequence
                let outcome = try await apply(sequence: sequence, payload: message.payload)
                record(outcome, for: sequence)
                try await jetStream.ack(message)
            }
        }
    }

    /// Decodes and applies one message on `applyQueue` (engine calls block).
    private func apply(sequence: UInt64, payload: [UInt8]) async throws -> ApplyOutcome {
        let engine = self.engine
        let decoder = self.decoder
        let logger = self.logger
        return try await withCheckedThrowingContinuation { continuation in
            applyQueue.async {
                do throws(SteerError) {
                    let operation: WriteOperation
                    do throws(SteerError) {
                        operation = try Self.decode(payload, decoder: decoder)
                    } catch {
                        // Every replica refuses the same bytes alike: move past them once.
                        logger.error("refused a stream message", metadata: ["steer.sequence": "\(sequence)", "steer.error": "\(error)"])
                        continuation.resume(returning: try engine.refuse(sequence: sequence, error))
                        return
                    }
                    let outcome = try engine.apply(sequence: sequence, operation)
                    if case .rejected(let error) = outcome {
                        logger.warning("refused a stream write", metadata: ["steer.sequence": "\(sequence)", "steer.error": "\(error)"])
                    }
                    continuation.resume(returning: outcome)
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    private func record(_ outcome: ApplyOutcome, for sequence: UInt64) {
        outcomes.withLock { table in
            table.bySequence[sequence] = outcome
            table.through = max(table.through, sequence)
            if table.bySequence.count > Self.maxOutcomes {
                let keep = sequence &- UInt64(Self.maxOutcomes / 2)
                table.bySequence = table.bySequence.filter { $0.key > keep }
            }
        }
        recorded.lock()
        recorded.broadcast()
        recorded.unlock()
    }

    /// Waits until the outcome of `sequence` is recorded or `deadlineNanos` passes; removes and returns it
    /// (nil when it was dropped or applied before this process started).
    ///
    /// - Returns: nil when the deadline passed first, else the outcome (itself nil when unknown).
    private func awaitOutcome(_ sequence: UInt64, deadlineNanos: UInt64) -> ApplyOutcome?? {
        recorded.lock()
        defer { recorded.unlock() }
        while true {
            let found: ApplyOutcome?? = outcomes.withLock { table in
                table.through >= sequence ? .some(table.bySequence.removeValue(forKey: sequence)) : .none
            }
            if let found { return found }
            let now = DispatchTime.now().uptimeNanoseconds
            if now >= deadlineNanos { return nil }
            _ = recorded.wait(until: Date(timeIntervalSinceNow: Double(deadlineNanos - now) / 1e9))
        }
    }

    // MARK: Message bodies

    /// The body of a write: a request line the protocol's decoder reads back.
    static func encode(_ operation: WriteOperation) -> [UInt8] {
        switch operation {
        case .upsert(let items): return RequestEncoder.encode(Request(operation: .upsert(items)))
        case .delete(let ids): return RequestEncoder.encode(Request(operation: .delete(ids)))
        }
    }

    /// Reads a message body back; anything but an `upsert` or `delete` line is refused.
    ///
    /// - Throws: the decoder's errors; `.invalidRequest` for another op.
    static func decode(_ payload: [UInt8], decoder: RequestDecoder) throws(SteerError) -> WriteOperation {
        let request = try decoder.decode(try JSONParser.parse(payload))
        switch request.operation {
        case .upsert(let items): return .upsert(items)
        case .delete(let ids): return .delete(ids)
        default: throw SteerError.invalid("stream message is a '\(request.operation.name)', not an upsert or delete")
        }
    }

    // MARK: WriteLog

    func append(_ operation: WriteOperation, deadlineNanos: UInt64) throws(SteerError) -> (sequence: UInt64, count: Int) {
        guard let nats = connection.get() else {
            throw SteerError(.unavailable, "not connected to NATS: writes are refused until this replica follows \(streamName) again")
        }
        let now = DispatchTime.now().uptimeNanoseconds
        guard deadlineNanos > now else { throw SteerError(.unavailable, "no time left before the deadline to append the write") }
        let payload = Self.encode(operation)
        let jetStream = JetStreamContext(connection: nats, timeout: .nanoseconds(Int64(deadlineNanos - now)))
        let subject = self.subject
        let messageID = UUID().uuidString
        let result = Locked<Result<PubAck, NATSError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do throws(NATSError) {
                let ack = try await jetStream.publish(subject, payload: payload, messageID: messageID)
                result.withLock { $0 = .success(ack) }
            } catch {
                result.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        guard done.wait(timeout: DispatchTime(uptimeNanoseconds: deadlineNanos)) == .success, let outcome = result.get() else {
            throw SteerError(.unavailable, "NATS did not confirm the write before the deadline; it may still be appended (message id \(messageID))")
        }
        let ack: PubAck
        switch outcome {
        case .success(let value):
            ack = value
        case .failure(.invalidArgument(let why)):
            throw SteerError(.tooLarge, "the write cannot be published: \(why)")
        case .failure(let error):
            throw SteerError(.unavailable, "NATS refused the write: \(error)")
        }
        guard let outcome = awaitOutcome(ack.seq, deadlineNanos: deadlineNanos) else {
            throw SteerError(.unavailable, "the write is stored as sequence \(ack.seq) of \(streamName) but this replica had not applied it by the deadline (applied through \(engine.appliedSequence))")
        }
        let given: Int
        switch operation {
        case .upsert(let items): given = items.count
        case .delete(let ids): given = ids.count
        }
        switch outcome {
        case .applied(let count)?: return (ack.seq, count)
        case .rejected(let error)?: throw error
        // A duplicate message id (the same write appended before): its first outcome went to that writer.
        case .alreadyApplied?, nil: return (ack.seq, given)
        }
    }
}
