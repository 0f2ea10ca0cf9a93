import Dispatch
import Foundation
import Logging
import SteerBuilder
import SteerCore
import SteerEngine
import SteerNATS
import SteerProtocol
import SteerService
import SteerWriteLog

/// `steer serve --follow`: this server is one replica of a shard whose writes live in a NATS JetStream
/// stream (docs/scaling.md, "Following a stream").
///
/// - **Stream**: `ShardStream` (subject `steer.<cluster>.shard.<i>`, stream `steer-<cluster>-shard-<i>`),
///   file storage, `--stream-replicas` copies, 2-minute duplicate window. Created when missing; an
///   existing one is used as it is. `--follow` may list several NATS nodes; each new session connects to
///   the next one that answers, starting after the one it lost.
/// - **Applying**: a durable pull consumer named `replica-<id>` (one per data directory: the store id, or
///   the `replica_id` a snapshot restore wrote). Each
///   (re)connection deletes it and creates it again with `deliver_policy` `by_start_sequence` from
///   `RetrievalEngine.appliedSequence` + 1, so the store, not the server's consumer state, says where a
///   replica resumes. The next pull (up to `fetchBatch` messages, about `fetchBytes`) runs while the
///   current one is applied. Each fetched run of consecutive messages (up to `applyBatch` messages and
///   `applyBatchBytes`) is applied in stream order in one engine call (`RetrievalEngine.apply(parts:)`,
///   which stores the items and the last sequence in one RocksDB batch and skips redelivered ones), on
///   `applyQueue`, then acknowledged at once (the consumer's `ack_policy` is `all`: one ack of the
///   batch's last message). A batch message's lines (`WriteLogMessage.decodeParts`) are the parts of
///   its sequence, each applied like a message of its own.
/// - **Writing**: `append` (a `WriteLog`, called on a worker thread) publishes the write with
///   `StreamPublisher` (a fresh `Nats-Msg-Id`, the PubAck), then waits for this replica to apply that
///   sequence, and answers with the apply's outcome.
/// - **Message body**: `WriteLogMessage` (the protocol's own request line: items, deletions, events,
///   a user's deletion, and the collection), decoded with the server's `RequestDecoder`: the stream's
///   bytes are as hostile as a client's. A message refused alike everywhere (undecodable, a wrong
///   dimension, a collection this server does not have) is recorded as applied with no change and
///   counted (`refusedMessages`).
/// - **Collections**: the messages of a batch that name a collection are applied first, to that
///   collection's engine (its store keeps its own last sequence in the same RocksDB batch, so a
///   redelivery is skipped there too), and only those above the default engine's sequence; then the
///   default engine applies the whole batch, recording the others as applied with no change. So the
///   default engine's sequence, where a replica resumes and what `min_sequence` waits for, passes a
///   message only once it is applied wherever it belongs.
/// - **Failures**: a lost connection or a failed apply ends the session; the loop connects again after
///   `retryDelay` and resumes from the stored sequence. While disconnected, writes answer `unavailable`
///   and reads go on.
///
/// Thread safety: the connection and the outcomes table sit behind `Locked` (with `recorded`, an
/// `NSCondition`, to wait on the table); `run` is one task; engine calls run on `applyQueue`.
final class StreamFollower: WriteLog, Sendable {
    struct Settings: Sendable {
        var addresses: NATSAddresses
        var cluster: String
        var shard: Int
        var streamReplicas: Int = 1
        /// Limits set on the stream (`--stream-max-age`, `--stream-max-messages`); none: left as they are.
        var retention = ShardStream.Retention()
    }

    /// Most messages per pull.
    static let fetchBatch = 2_048
    /// Payload bytes a pull aims at (below the client's 64 MiB subscription buffer): the batch is cut to
    /// `fetchBytes` / the largest payload of the previous pull.
    static let fetchBytes = 16 << 20
    /// The payload size assumed before a pull saw any message.
    static let fetchAssumedMessageBytes = 64 << 10
    /// Unacknowledged messages the consumer may hold out (`max_ack_pending`): a pull and the prefetched
    /// one stay below it.
    static let maxAckPending = 4 * fetchBatch
    /// Most messages applied in one engine call and RocksDB write batch.
    static let applyBatch = 2_048
    /// Most payload bytes applied in one engine call and RocksDB write batch (a single larger message,
    /// up to NATS's `max_payload`, is applied alone).
    static let applyBatchBytes = 8 << 20
    /// How long one pull waits on the server for messages.
    static let fetchExpiry: Duration = .seconds(1)
    /// Pause before connecting again after a failed session.
    static let retryDelay: Duration = .seconds(1)
    /// Apply outcomes kept for writers waiting on their sequence (oldest dropped past this many).
    static let maxOutcomes = 65_536

    let settings: Settings
    let engine: RetrievalEngine
    let collections: CollectionSet
    let decoder: RequestDecoder
    let logger: Logger
    let stream: ShardStream
    var subject: String { stream.subject }
    var streamName: String { stream.name }
    let durable: String
    private let connection = Locked<NATSConnection?>(nil)
    /// The `settings.addresses` index the next session tries first.
    private let nextAddress = Locked(0)
    /// Apply outcomes by sequence, and the sequence through which outcomes are recorded (`recorded`,
    /// broadcast on each record), for writers waiting in `append`.
    private let outcomes = Locked<(bySequence: [UInt64: ApplyOutcome], through: UInt64)>(([:], 0))
    private let recorded = NSCondition()
    private let applyQueue = DispatchQueue(label: "steer.follow.apply")
    /// Messages applied as refused (see `refusedMessages`).
    private let refused = Locked(0)
    /// The alias targets before the `alias`/`delete_alias` changes applied by this process, by sequence,
    /// for the writers waiting in `appendChange` (oldest dropped past `maxOutcomes`).
    private let changePrevious = Locked<[UInt64: String]>([:])

    /// - Throws: `ValidationError`-style `SteerError.invalidRequest` for a bad cluster name.
    init(settings: Settings, engine: RetrievalEngine, collections: CollectionSet, limits: ProtocolLimits, logger: Logger) throws(SteerError) {
        stream = try ShardStream(cluster: settings.cluster, shard: settings.shard)
        guard let storeID = engine.store.storeID else { throw SteerError(.corrupt, "the store has no store id") }
        // A directory restored from a snapshot shares its store id with its source: its `replica_id` keeps
        // the two replicas' consumers apart.
        let replicaID = try Snapshot.replicaID(data: engine.configuration.dataDirectory) ?? storeID
        self.settings = settings
        self.engine = engine
        self.collections = collections
        self.decoder = RequestDecoder(limits: limits)
        self.logger = logger
        durable = "replica-\(replicaID)"
        let applied = engine.appliedSequence
        outcomes.withLock { $0.through = applied }
    }

    /// The stream no longer holds the next message this replica needs: its retention
    /// (`--stream-max-age`, `--stream-max-messages`) removed it before the replica applied it. The replica
    /// cannot catch up from the stream; at start it exits with `exitCode`, while running it stops applying
    /// (writes through it are `unavailable`, reads serve what it applied) and logs this each retry.
    struct FellBehind: Error, CustomStringConvertible {
        var stream: String
        /// The stream's first sequence (or the first one delivered after the gap).
        var first: UInt64
        var needed: UInt64
        /// `steer serve --follow` exits with this code when it starts behind its stream.
        static let exitCode: Int32 = 3

        var description: String {
            "this replica fell behind its stream: \(stream) holds sequences from \(first) on but the replica needs \(needed) (its retention removed the messages in between); it cannot catch up from the stream: start a new replica from a snapshot of a peer (steer snapshot, then steer serve --restore SNAP --data NEW_DIR, docs/operations.md \"Backup and restore\")"
        }
    }

    /// Whether a session follows the stream now (connected, consumer created); false while reconnecting.
    var isFollowing: Bool { connection.get() != nil }

    // MARK: Following

    /// Connects, makes sure the stream exists and creates the consumer at the stored sequence.
    ///
    /// - Throws: `NATSError` when NATS cannot be reached or refuses; `SteerError.unavailable` when the
    ///   stream no longer holds the next sequence this replica needs (it needs a snapshot).
    func connect() async throws -> NATSConnection {
        let (nats, reached) = try await settings.addresses.connect(startingAt: nextAddress.get())
        // A session that ends moves to the next node (this one may be the one that failed).
        nextAddress.withLock { $0 = (reached + 1) % settings.addresses.addresses.count }
        do {
            let jetStream = JetStreamContext(connection: nats)
            let info = try await ensureStream(jetStream)
            let next = engine.appliedSequence + 1
            if info.state.firstSeq > next && info.state.lastSeq >= next {
                throw FellBehind(stream: streamName, first: info.state.firstSeq, needed: next)
            }
            try await deleteConsumerIfPresent(jetStream)
            // `ack_policy: all`: acknowledging a batch's last message acknowledges the batch (one write
            // instead of one per message; messages are applied strictly in order by this one reader).
            var config = ConsumerConfig(durableName: durable, deliverPolicy: .byStartSequence, optStartSeq: next, ackPolicy: .all)
            config.ackWaitNanos = 30_000_000_000
            config.maxAckPending = Self.maxAckPending
            try await jetStream.createDurableConsumer(stream: streamName, config: config)
            connection.withLock { $0 = nats }
            logger.info("following", metadata: ["steer.stream": "\(streamName)", "steer.from": "\(next)", "steer.consumer": "\(durable)",
                                                "steer.nats": "\(settings.addresses.addresses[reached].host):\(settings.addresses.addresses[reached].port)"])
            return nats
        } catch {
            await nats.close()
            throw error
        }
    }

    /// The shard's stream, created when missing.
    private func ensureStream(_ jetStream: JetStreamContext) async throws(NATSError) -> StreamInfo {
        let (info, ensured) = try await stream.ensure(jetStream, replicas: settings.streamReplicas, retention: settings.retention)
        let limits: Logger.Metadata = [
            "steer.stream": "\(streamName)", "steer.max_age_s": "\(info.config.maxAgeNanos.map { $0 / 1_000_000_000 } ?? 0)",
            "steer.max_messages": "\(info.config.maxMsgs ?? -1)",
        ]
        switch ensured {
        case .created: logger.info("created the shard's stream", metadata: limits.merging(["steer.replicas": "\(settings.streamReplicas)"]) { $1 })
        case .retentionUpdated: logger.notice("set the shard stream's retention", metadata: limits)
        case .existed: break
        }
        return info
    }

    /// Deletes this replica's consumer; one that does not exist is fine.
    private func deleteConsumerIfPresent(_ jetStream: JetStreamContext) async throws(NATSError) {
        do {
            try await jetStream.deleteConsumer(stream: streamName, consumer: durable)
        } catch {
            guard ShardStream.isJetStreamError(error, JetStreamAPIError.consumerNotFound) else { throw error }
        }
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
            } catch let behind as FellBehind {
                if Task.isCancelled { break }
                logger.critical("\(behind)")
            } catch {
                if Task.isCancelled { break }
                logger.warning("following the stream stopped; reconnecting", metadata: ["steer.error": "\(error)"])
            }
            try? await Task.sleep(for: Self.retryDelay)
        }
    }

    private func follow(_ nats: NATSConnection) async throws {
        let jetStream = JetStreamContext(connection: nats)
        // The next pull runs while the current batch is applied (NATS delivers while the store writes).
        var expected = engine.appliedSequence + 1
        var largest = Self.fetchAssumedMessageBytes
        var next: Task<[JetStreamMessage], any Error>? = prefetch(jetStream, largest: largest)
        defer { next?.cancel() }
        while !Task.isCancelled {
            guard let pending = next else { break }
            let messages = try await pending.value
            largest = messages.reduce(0) { max($0, $1.payload.count) }
            if messages.isEmpty { largest = Self.fetchAssumedMessageBytes }
            next = prefetch(jetStream, largest: largest)
            // A gap: the stream's retention removed messages this replica had not applied yet (JetStream
            // sequences of one stream have no other gaps; redeliveries come at or below one already fetched).
            for message in messages {
                let sequence = message.metadata.streamSequence
                if sequence > expected { throw FellBehind(stream: streamName, first: sequence, needed: expected) }
                expected = max(expected, sequence + 1)
            }
            // Consecutive messages in batches of at most `applyBatch` messages and `applyBatchBytes` bytes
            // (one message is never split): one engine call and RocksDB batch each, then one ack for all.
            var start = 0
            while start < messages.count {
                var end = start
                var bytes = 0
                while end < messages.count && end - start < Self.applyBatch
                    && (end == start || bytes + messages[end].payload.count <= Self.applyBatchBytes) {
                    bytes += messages[end].payload.count
                    end += 1
                }
                let chunk = messages[start..<end]
                let outcomes = try await apply(chunk.map { ($0.metadata.streamSequence, $0.payload) })
                for (message, outcome) in zip(chunk, outcomes) {
                    record(outcome, for: message.metadata.streamSequence)
                }
                if let last = chunk.last { try await jetStream.ack(last) }
                start = end
            }
        }
    }

    /// Starts the next pull: what is there now, up to `fetchBatch` messages and about `fetchBytes` (judged
    /// by `largest`, the largest payload of the previous pull); when nothing is, waits for the next one
    /// message (a pull asking for a whole batch would wait out its expiry unless the batch filled up).
    private func prefetch(_ jetStream: JetStreamContext, largest: Int) -> Task<[JetStreamMessage], any Error> {
        let stream = streamName
        let consumer = durable
        let batch = max(1, min(Self.fetchBatch, Self.fetchBytes / max(largest, 1024)))
        return Task {
            let messages = try await jetStream.fetch(stream: stream, consumer: consumer, batch: batch, noWait: true)
            if !messages.isEmpty { return messages }
            return try await jetStream.fetch(stream: stream, consumer: consumer, batch: 1, expires: Self.fetchExpiry)
        }
    }

    /// Decodes and applies consecutive messages as one batch on `applyQueue` (engine calls block).
    private func apply(_ messages: [(sequence: UInt64, payload: [UInt8])]) async throws -> [ApplyOutcome] {
        try await withCheckedThrowingContinuation { continuation in
            applyQueue.async {
                do throws(SteerError) {
                    continuation.resume(returning: try self.applyNow(messages))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// Decodes and applies consecutive messages (see the type's "Collections"): each run of writes in one
    /// engine call per collection, each collection change alone between them; on `applyQueue`.
    ///
    /// - Throws: a store failure of any engine (nothing of the default engine's batch was recorded: the
    ///   messages are applied again after reconnecting, and collections skip what they stored).
    private func applyNow(_ messages: [(sequence: UInt64, payload: [UInt8])]) throws(SteerError) -> [ApplyOutcome] {
        // Each message's parts (one for a single write; the lines of a batch message, `WriteLogMessage`).
        var sequences: [UInt64] = []
        var decoded: [Result<WriteLogMessage.Message, SteerError>] = []
        var owner: [Int] = []
        for (index, message) in messages.enumerated() {
            for part in WriteLogMessage.decodeParts(message.payload, decoder: decoder) {
                sequences.append(message.sequence)
                decoded.append(part)
                owner.append(index)
            }
        }
        var outcomes: [ApplyOutcome] = []
        var start = 0
        while start < decoded.count {
            if case .success(.collectionChange(let change)) = decoded[start] {
                outcomes.append(try applyChange(change, sequence: sequences[start]))
                start += 1
                continue
            }
            var end = start
            while end < decoded.count {
                if case .success(.collectionChange) = decoded[end] { break }
                end += 1
            }
            outcomes += try applyWrites(Array(sequences[start..<end]), decoded: Array(decoded[start..<end]))
            start = end
        }
        var rejected = 0
        for (position, outcome) in outcomes.enumerated() {
            if case .rejected(let error) = outcome {
                rejected += 1
                logger.warning("refused a stream message", metadata: ["steer.sequence": "\(sequences[position])", "steer.error": "\(error)"])
            }
        }
        if rejected > 0 { refused.withLock { $0 += rejected } }
        // One outcome per message: its only part's, or for a batch message (written by routers, which do
        // not wait for outcomes) the items applied by its parts.
        var perMessage = [ApplyOutcome?](repeating: nil, count: messages.count)
        var partCount = [Int](repeating: 0, count: messages.count)
        var appliedCount = [Int](repeating: 0, count: messages.count)
        var anyApplied = [Bool](repeating: false, count: messages.count)
        for (position, outcome) in outcomes.enumerated() {
            let index = owner[position]
            partCount[index] += 1
            perMessage[index] = outcome
            switch outcome {
            case .applied(let count):
                appliedCount[index] += count
                anyApplied[index] = true
            case .recorded, .rejected:
                anyApplied[index] = true
            case .alreadyApplied: break
            }
        }
        return (0..<messages.count).map { index in
            if partCount[index] == 1, let only = perMessage[index] { return only }
            return anyApplied[index] ? .applied(count: appliedCount[index]) : .alreadyApplied
        }
    }

    /// Applies a run of decoded write parts (no collection change among them), by sequence (the parts of
    /// one batch message share its sequence).
    private func applyWrites(_ sequences: [UInt64],
                             decoded: [Result<WriteLogMessage.Message, SteerError>]) throws(SteerError) -> [ApplyOutcome] {
        var base: [(sequence: UInt64, operation: Result<WriteOperation, SteerError>)] = []
        // Named collections by their own name (aliases resolved, so that two names of one collection
        // apply as one run in stream order), with the lease that keeps each open until the batch is done.
        var named: [(lease: CollectionSet.Lease, positions: [Int])] = []
        var resolved: [String: Result<Int, SteerError>] = [:]
        defer { for group in named { group.lease.release() } }
        var namedOperations: [Int: WriteOperation] = [:]
        var elsewhere: [Int: ApplyOutcome] = [:]
        let appliedBefore = engine.appliedSequence
        for (position, sequence) in sequences.enumerated() {
            do throws(SteerError) {
                guard case .write(let entry) = try decoded[position].get() else {
                    throw SteerError.internalError("a collection change among the writes of a run")
                }
                guard let collection = entry.collection, collection != CollectionName.defaultName else {
                    base.append((sequence, .success(entry.operation)))
                    continue
                }
                if resolved[collection] == nil {
                    do {
                        let lease = try collections.lease(collection)
                        if lease.name == CollectionName.defaultName {
                            lease.release()
                            resolved[collection] = .success(-1)
                        } else if let slot = named.firstIndex(where: { $0.lease.name == lease.name }) {
                            lease.release()
                            resolved[collection] = .success(slot)
                        } else {
                            named.append((lease, []))
                            resolved[collection] = .success(named.count - 1)
                        }
                    } catch {
                        resolved[collection] = .failure(error)
                    }
                }
                switch resolved[collection] {
                case .success(let slot)? where slot >= 0:
                    // Only what the default engine has not passed: a collection made after a message was
                    // applied (dropped and created again) must not take it again when it is redelivered.
                    if sequence > appliedBefore {
                        named[slot].positions.append(position)
                        namedOperations[position] = entry.operation
                    }
                    // Applied to its collection below; recorded here with no change.
                    base.append((sequence, .failure(SteerError.invalid("applied to collection '\(named[slot].lease.name)'"))))
                case .failure(let error)?:
                    elsewhere[position] = .rejected(error)
                    base.append((sequence, .failure(error)))
                default:
                    // An alias of the default collection.
                    base.append((sequence, .success(entry.operation)))
                }
            } catch {
                // Every replica refuses the same bytes alike: move past them once (logged by `applyNow`).
                base.append((sequence, .failure(error)))
            }
        }
        for group in named where !group.positions.isEmpty {
            let batch = group.positions.compactMap { position in
                namedOperations[position].map { (sequence: sequences[position], operation: Result<WriteOperation, SteerError>.success($0)) }
            }
            let outcomes = try group.lease.engine.apply(parts: batch)
            for (position, outcome) in zip(group.positions, outcomes) { elsewhere[position] = outcome }
        }
        var outcomes = try engine.apply(parts: base)
        for (position, outcome) in elsewhere {
            if case .alreadyApplied = outcomes[position] { continue }
            outcomes[position] = outcome
        }
        return outcomes
    }

    /// Applies one collection change (docs/scaling.md, "Collections in the stream") and records its
    /// sequence in the default store. The change (the catalog file, the collection's directory) and the
    /// sequence (RocksDB) are two writes, not one: a crash between them applies the change again after
    /// the restart, which is a no-op (`performChange`), so the replica ends as if it applied it once.
    ///
    /// - Returns: `.applied(count: 0)`, `.rejected` when this replica refuses it (every replica with the
    ///   same collections refuses it alike), `.alreadyApplied` at or below the stored sequence.
    /// - Throws: a storage failure (`io_error`, `corrupt`, `internal`, `unavailable`): nothing recorded, the
    ///   session ends and the change is applied again after reconnecting.
    private func applyChange(_ change: Request.Operation, sequence: UInt64) throws(SteerError) -> ApplyOutcome {
        if sequence <= engine.appliedSequence { return .alreadyApplied }
        var refusal: SteerError?
        var previous: String?
        do {
            previous = try performChange(change)
        } catch {
            guard ![.io, .corrupt, .internal, .unavailable].contains(error.code) else { throw error }
            refusal = error
        }
        let recorded = try engine.refuse(sequence: sequence, refusal ?? SteerError.invalid("collection change applied to the catalog"))
        if case .alreadyApplied = recorded { return .alreadyApplied }
        if let refusal { return .rejected(refusal) }
        logger.info("applied a collection change", metadata: ["steer.sequence": "\(sequence)", "steer.op": "\(change.name)"])
        if let previous {
            changePrevious.withLock { table in
                table[sequence] = previous
                if table.count > Self.maxOutcomes {
                    let keep = sequence &- UInt64(Self.maxOutcomes / 2)
                    table = table.filter { $0.key > keep }
                }
            }
        }
        return .applied(count: 0)
    }

    /// Makes a collection change take effect, idempotently: a create of a collection that exists with
    /// every setting the message gives, a drop of a missing collection, an alias to its current target
    /// and the deletion of a missing alias change nothing and succeed.
    ///
    /// - Returns: for `alias`/`delete_alias`, the alias's target before the change.
    /// - Throws: `CollectionSet`'s errors (a create of a name that holds another collection or an alias:
    ///   `already_exists`; an alias to a missing collection: `not_found`; a drop of an aliased one: `in_use`);
    ///   `.io` for a create whose directory exists but is not in the catalog (a collection of that name
    ///   dropped just before whose directory is not deleted yet, or one left by a crash inside an earlier
    ///   create): the session ends and retries each second until the directory is gone.
    private func performChange(_ change: Request.Operation) throws(SteerError) -> String? {
        switch change {
        case .createCollection(let settings):
            if collections.aliases[settings.name] == nil, let existing = try? collections.describe(settings.name),
               existing.name == settings.name, Self.matches(settings, existing.stats) {
                return nil
            }
            do {
                try collections.create(settings)
            } catch where error.code == .alreadyExists && collections.aliases[settings.name] == nil && (try? collections.describe(settings.name)) == nil {
                // Neither a collection nor an alias: a directory the catalog does not list (a collection of
                // that name dropped just before, still being deleted once its requests end; or a crash inside
                // an earlier create). Not moved past: this replica would lack the collection.
                throw SteerError(.io, "collection change: \(error.message); this replica applies its stream again in a second (a collection of that name dropped just before is deleted by then) and stops here while the directory is there")
            }
            return nil
        case .dropCollection(let name):
            do {
                try collections.drop(name)
            } catch where error.code == .notFound {
                return nil
            }
            return nil
        case .alias(let alias, let collection):
            return try collections.setAlias(alias, to: collection)
        case .deleteAlias(let alias):
            do {
                return try collections.deleteAlias(alias)
            } catch where error.code == .notFound {
                return nil
            }
        default:
            throw SteerError.invalid("'\(change.name)' is not a collection change")
        }
    }

    /// Whether an existing collection has every setting a create gives (those it leaves out match any).
    static func matches(_ settings: CollectionSettings, _ stats: EngineStats) -> Bool {
        if let dimension = settings.dimension, stats.dimension != dimension { return false }
        if let metric = settings.metric, stats.metric != metric { return false }
        if let spec = settings.indexSpec, stats.indexSpec != spec { return false }
        if let version = settings.embeddingVersion, stats.embeddingVersion != version { return false }
        return settings.checkpoint == nil
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

    // MARK: WriteLog

    var refusedMessages: Int { refused.get() }

    func appendChange(_ change: Request.Operation, deadlineNanos: UInt64) throws(SteerError) -> LoggedChange {
        try CollectionChange.check(change)
        let stream = self.stream
        let (sequence, outcome) = try publishAndWait(deadlineNanos: deadlineNanos) { nats throws(SteerError) in
            try await StreamPublisher.publish(change: change, to: stream, on: nats, deadlineNanos: deadlineNanos)
        }
        switch outcome {
        case .rejected(let error)?: throw error
        default: return LoggedChange(sequence: sequence, previous: changePrevious.withLock { $0.removeValue(forKey: sequence) })
        }
    }

    func append(_ operation: WriteOperation, collection: String?, deadlineNanos: UInt64) throws(SteerError) -> LoggedWrite {
        let stream = self.stream
        let (sequence, outcome) = try publishAndWait(deadlineNanos: deadlineNanos) { nats throws(SteerError) in
            try await StreamPublisher.publish(operation, collection: collection, to: stream, on: nats, deadlineNanos: deadlineNanos)
        }
        switch outcome {
        case .applied(let count)?: return LoggedWrite(sequence: sequence, count: count)
        case .recorded(let events)?: return LoggedWrite(sequence: sequence, count: events.recorded, events: events)
        case .rejected(let error)?: throw error
        // A duplicate message id (the same write appended before): its first outcome went to that writer.
        case .alreadyApplied?, nil: return LoggedWrite(sequence: sequence, count: operation.count)
        }
    }

    /// Publishes with `publish` on the session's connection (blocking this worker thread), then waits until
    /// this replica applied the message's sequence.
    ///
    /// - Returns: the sequence and its apply outcome (nil when unknown here).
    /// - Throws: `.unavailable` when not connected, NATS did not confirm in time, or the message was not
    ///   applied here by the deadline; `publish`'s errors.
    private func publishAndWait(deadlineNanos: UInt64, _ publish: @escaping @Sendable (NATSConnection) async throws(SteerError) -> UInt64)
        throws(SteerError) -> (UInt64, ApplyOutcome?) {
        guard let nats = connection.get() else {
            throw SteerError(.unavailable, "not connected to NATS: writes are refused until this replica follows \(streamName) again")
        }
        let now = DispatchTime.now().uptimeNanoseconds
        guard deadlineNanos > now else { throw SteerError(.unavailable, "no time left before the deadline to append the write") }
        let result = Locked<Result<UInt64, SteerError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do throws(SteerError) {
                let sequence = try await publish(nats)
                result.withLock { $0 = .success(sequence) }
            } catch {
                result.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        guard done.wait(timeout: DispatchTime(uptimeNanoseconds: deadlineNanos)) == .success, let published = result.get() else {
            throw SteerError(.unavailable, "NATS did not confirm the write before the deadline; it may still be appended to \(streamName)")
        }
        let sequence = try published.get()
        guard let outcome = awaitOutcome(sequence, deadlineNanos: deadlineNanos) else {
            throw SteerError(.unavailable, "the write is stored as sequence \(sequence) of \(streamName) but this replica had not applied it by the deadline (applied through \(engine.appliedSequence))")
        }
        return (sequence, outcome)
    }
}
