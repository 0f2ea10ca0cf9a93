// SteerNATS: a small NATS + JetStream client written by hand over SwiftNIO, because no Swift NATS
// client is among this machine's package copies (/opt/swift-packages); see docs/nats.md.
//
// This file: the JetStream API calls Steer uses (streams, publish with ack, durable pull consumers,
// fetch, ack). The API is request/reply with JSON bodies on `$JS.API.*` subjects (docs/nats.md lists them).

import Foundation

// MARK: - Configuration and answers

public enum StorageType: String, Codable, Sendable { case file, memory }
public enum RetentionPolicy: String, Codable, Sendable { case limits, interest, workqueue }
public enum DiscardPolicy: String, Codable, Sendable { case old, new }
public enum DeliverPolicy: String, Codable, Sendable {
    case all, last, new
    case byStartSequence = "by_start_sequence"
    case byStartTime = "by_start_time"
    case lastPerSubject = "last_per_subject"
}
public enum AckPolicy: String, Codable, Sendable { case none, all, explicit }
public enum ReplayPolicy: String, Codable, Sendable { case instant, original }

/// A stream's configuration (`$JS.API.STREAM.CREATE.<name>`). Durations are nanoseconds (the API's unit);
/// nil fields are left to the server's defaults.
public struct StreamConfig: Codable, Sendable, Equatable {
    public var name: String
    public var subjects: [String]
    public var retention: RetentionPolicy?
    public var maxMsgs: Int64?
    public var maxBytes: Int64?
    public var maxAgeNanos: Int64?
    public var maxMsgsPerSubject: Int64?
    public var maxMsgSize: Int32?
    public var discard: DiscardPolicy?
    public var storage: StorageType
    public var numReplicas: Int
    /// The window in which a repeated `Nats-Msg-Id` is a duplicate (server default 2 minutes).
    public var duplicateWindowNanos: Int64?
    public var allowRollupHdrs: Bool?
    public var denyDelete: Bool?
    public var denyPurge: Bool?
    public var allowDirect: Bool?

    public init(name: String, subjects: [String], storage: StorageType = .file, replicas: Int = 1, duplicateWindow: Duration? = nil) {
        self.name = name
        self.subjects = subjects
        self.storage = storage
        self.numReplicas = replicas
        self.duplicateWindowNanos = duplicateWindow?.nanoseconds
    }

    enum CodingKeys: String, CodingKey {
        case name, subjects, retention, discard, storage
        case maxMsgs = "max_msgs"
        case maxBytes = "max_bytes"
        case maxAgeNanos = "max_age"
        case maxMsgsPerSubject = "max_msgs_per_subject"
        case maxMsgSize = "max_msg_size"
        case numReplicas = "num_replicas"
        case duplicateWindowNanos = "duplicate_window"
        case allowRollupHdrs = "allow_rollup_hdrs"
        case denyDelete = "deny_delete"
        case denyPurge = "deny_purge"
        case allowDirect = "allow_direct"
    }
}

public struct StreamState: Codable, Sendable, Equatable {
    public var messages: UInt64
    public var bytes: UInt64
    public var firstSeq: UInt64
    public var lastSeq: UInt64
    public var consumerCount: Int?

    enum CodingKeys: String, CodingKey {
        case messages, bytes
        case firstSeq = "first_seq"
        case lastSeq = "last_seq"
        case consumerCount = "consumer_count"
    }
}

/// The Raft group of a replicated stream or consumer.
public struct ClusterInfo: Codable, Sendable, Equatable {
    public struct Peer: Codable, Sendable, Equatable {
        public var name: String
        public var current: Bool
        public var offline: Bool?
    }
    public var name: String?
    public var leader: String?
    public var replicas: [Peer]?
}

public struct StreamInfo: Codable, Sendable, Equatable {
    public var config: StreamConfig
    public var state: StreamState
    public var cluster: ClusterInfo?
}

/// A durable pull consumer's (or a push consumer's) configuration.
public struct ConsumerConfig: Codable, Sendable, Equatable {
    public var durableName: String?
    public var deliverPolicy: DeliverPolicy
    /// The first stream sequence delivered, with `deliverPolicy == .byStartSequence`.
    public var optStartSeq: UInt64?
    public var ackPolicy: AckPolicy
    public var ackWaitNanos: Int64?
    public var maxDeliver: Int?
    public var filterSubject: String?
    public var replayPolicy: ReplayPolicy?
    public var maxAckPending: Int?
    public var maxWaiting: Int?
    /// Push consumers only: where the server delivers.
    public var deliverSubject: String?
    public var flowControl: Bool?
    public var idleHeartbeatNanos: Int64?
    public var memStorage: Bool?
    public var numReplicas: Int?
    public var inactiveThresholdNanos: Int64?

    public init(durableName: String?, deliverPolicy: DeliverPolicy = .all, optStartSeq: UInt64? = nil, ackPolicy: AckPolicy = .explicit, filterSubject: String? = nil) {
        self.durableName = durableName
        self.deliverPolicy = deliverPolicy
        self.optStartSeq = optStartSeq
        self.ackPolicy = ackPolicy
        self.filterSubject = filterSubject
    }

    enum CodingKeys: String, CodingKey {
        case durableName = "durable_name"
        case deliverPolicy = "deliver_policy"
        case optStartSeq = "opt_start_seq"
        case ackPolicy = "ack_policy"
        case ackWaitNanos = "ack_wait"
        case maxDeliver = "max_deliver"
        case filterSubject = "filter_subject"
        case replayPolicy = "replay_policy"
        case maxAckPending = "max_ack_pending"
        case maxWaiting = "max_waiting"
        case deliverSubject = "deliver_subject"
        case flowControl = "flow_control"
        case idleHeartbeatNanos = "idle_heartbeat"
        case memStorage = "mem_storage"
        case numReplicas = "num_replicas"
        case inactiveThresholdNanos = "inactive_threshold"
    }
}

public struct SequenceInfo: Codable, Sendable, Equatable {
    public var consumerSeq: UInt64
    public var streamSeq: UInt64
    enum CodingKeys: String, CodingKey {
        case consumerSeq = "consumer_seq"
        case streamSeq = "stream_seq"
    }
}

public struct ConsumerInfo: Codable, Sendable, Equatable {
    public var streamName: String
    public var name: String
    public var config: ConsumerConfig
    public var delivered: SequenceInfo
    public var ackFloor: SequenceInfo
    public var numAckPending: Int
    public var numPending: UInt64
    enum CodingKeys: String, CodingKey {
        case streamName = "stream_name"
        case name, config, delivered
        case ackFloor = "ack_floor"
        case numAckPending = "num_ack_pending"
        case numPending = "num_pending"
    }
}

/// JetStream's answer to a publish: the message is stored (on a quorum of replicas) at `seq`.
public struct PubAck: Codable, Sendable, Equatable {
    public var stream: String
    public var seq: UInt64
    /// True when the `Nats-Msg-Id` was already stored within the duplicate window (`seq` is the original's).
    public var duplicate: Bool?
    public var isDuplicate: Bool { duplicate ?? false }

    public init(stream: String, seq: UInt64, duplicate: Bool? = nil) {
        self.stream = stream
        self.seq = seq
        self.duplicate = duplicate
    }
}

/// Where a JetStream message came from, parsed from its ack subject
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (or the 12-token form with
/// a domain and an account hash before the stream).
public struct JetStreamMetadata: Sendable, Equatable {
    public var stream: String
    public var consumer: String
    /// How many times this message was delivered to the consumer (1 the first time).
    public var delivered: UInt64
    public var streamSequence: UInt64
    public var consumerSequence: UInt64
    /// Stored time, nanoseconds since 1970.
    public var timestampNanos: Int64
    /// Messages still pending for the consumer after this one.
    public var pending: UInt64

    /// Parses an ack subject; nil when it is not one.
    public init?(ackSubject: String) {
        let t = ackSubject.split(separator: ".", omittingEmptySubsequences: false)
        guard t.count >= 9, t[0] == "$JS", t[1] == "ACK" else { return nil }
        let o: Int
        switch t.count {
        case 9: o = 2
        case 11, 12: o = 4
        default: return nil
        }
        guard let delivered = UInt64(t[o + 2]), let sseq = UInt64(t[o + 3]), let cseq = UInt64(t[o + 4]),
            let ts = Int64(t[o + 5]), let pending = UInt64(t[o + 6]), !t[o].isEmpty, !t[o + 1].isEmpty
        else { return nil }
        stream = String(t[o])
        consumer = String(t[o + 1])
        self.delivered = delivered
        streamSequence = sseq
        consumerSequence = cseq
        timestampNanos = ts
        self.pending = pending
    }
}

/// A message fetched from a pull consumer; ack it with `JetStreamContext.ack`.
public struct JetStreamMessage: Sendable {
    public var message: NATSMessage
    public var metadata: JetStreamMetadata
    public var subject: String { message.subject }
    public var payload: [UInt8] { message.payload }
    public var headers: NATSHeaders? { message.headers }
}

/// Acknowledgement kinds for `JetStreamContext.ack`.
public enum AckKind: String, Sendable {
    /// Processed.
    case ack = "+ACK"
    /// Not processed; redeliver.
    case nak = "-NAK"
    /// Never redeliver.
    case term = "+TERM"
    /// Still working; restart the ack timer.
    case inProgress = "+WPI"
}

// MARK: - Context

/// The JetStream API over one connection. Sendable (it holds only the connection and constants).
public struct JetStreamContext: Sendable {
    public let connection: NATSConnection
    /// `$JS.API` unless the account uses a JetStream domain.
    public let apiPrefix: String
    /// Deadline of each API request and of a publish's ack.
    public let timeout: Duration

    public init(connection: NATSConnection, apiPrefix: String = "$JS.API", timeout: Duration? = nil) {
        self.connection = connection
        self.apiPrefix = apiPrefix
        self.timeout = timeout ?? connection.options.requestTimeout
    }

    /// Largest JSON answer decoded: the server's `max_payload` already bounds it; this keeps a bound
    /// when INFO raised that.
    static let maxAnswerBytes = 8 << 20

    /// One API call: JSON request body, JSON answer (an `error` member becomes `NATSError.jetStream`).
    /// - Throws: `NATSError.noResponders` (JetStream not enabled, or no leader), `.timeout`,
    ///   `.jetStream`, `.malformedResponse`, or the connection's closing error.
    func api<Answer: Decodable>(_ subject: String, body: [UInt8], as: Answer.Type) async throws(NATSError) -> Answer {
        let reply = try await connection.request("\(apiPrefix).\(subject)", payload: body, timeout: timeout)
        return try Self.decode(reply.payload, as: Answer.self)
    }

    private struct ErrorOnly: Decodable { var error: JetStreamAPIError? }

    static func decode<Answer: Decodable>(_ payload: [UInt8], as: Answer.Type) throws(NATSError) -> Answer {
        guard payload.count <= maxAnswerBytes else { throw .malformedResponse("answer of \(payload.count) bytes") }
        let data = Data(payload)
        let decoder = JSONDecoder()
        if let e = try? decoder.decode(ErrorOnly.self, from: data), let error = e.error { throw .jetStream(error) }
        do {
            return try decoder.decode(Answer.self, from: data)
        } catch {
            throw .malformedResponse("\(Answer.self): \(error)")
        }
    }

    static func encode<Body: Encodable>(_ body: Body) throws(NATSError) -> [UInt8] {
        do { return Array(try JSONEncoder().encode(body)) } catch { throw .invalidArgument("\(error)") }
    }

    /// A stream, consumer or bucket name the API accepts in a subject token.
    static func checkName(_ name: String, what: String) throws(NATSError) {
        guard !name.isEmpty, name.utf8.count <= 255,
            name.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != 46 && $0 != 42 && $0 != 62 && $0 != 47 && $0 != 92 })
        else { throw .invalidArgument("\(what) name '\(name.prefix(64))'") }
    }

    // MARK: Streams

    /// Creates a stream (`$JS.API.STREAM.CREATE.<name>`); succeeds unchanged when an identical one exists.
    /// - Throws: `NATSError.jetStream` (e.g. a different stream of that name exists, or too few servers
    ///   for the replicas), and the errors of `api`.
    @discardableResult
    public func createStream(_ config: StreamConfig) async throws(NATSError) -> StreamInfo {
        try Self.checkName(config.name, what: "stream")
        return try await api("STREAM.CREATE.\(config.name)", body: Self.encode(config), as: StreamInfo.self)
    }

    /// Updates a stream's configuration (`$JS.API.STREAM.UPDATE.<name>`).
    /// - Throws: the errors of `api`.
    @discardableResult
    public func updateStream(_ config: StreamConfig) async throws(NATSError) -> StreamInfo {
        try Self.checkName(config.name, what: "stream")
        return try await api("STREAM.UPDATE.\(config.name)", body: Self.encode(config), as: StreamInfo.self)
    }

    /// `$JS.API.STREAM.INFO.<name>`.
    /// - Throws: `NATSError.jetStream` with `err_code` 10059 when there is no such stream.
    public func streamInfo(_ name: String) async throws(NATSError) -> StreamInfo {
        try Self.checkName(name, what: "stream")
        return try await api("STREAM.INFO.\(name)", body: [], as: StreamInfo.self)
    }

    /// `$JS.API.STREAM.DELETE.<name>`.
    /// - Throws: the errors of `api`.
    public func deleteStream(_ name: String) async throws(NATSError) {
        try Self.checkName(name, what: "stream")
        struct Answer: Decodable { var success: Bool }
        let answer = try await api("STREAM.DELETE.\(name)", body: [], as: Answer.self)
        guard answer.success else { throw .malformedResponse("stream delete answered success=false") }
    }

    // MARK: Publish

    /// Publishes to a stream's subject and waits for the PubAck (the message is stored).
    ///
    /// - Parameters:
    ///   - messageID: `Nats-Msg-Id`: a repeat within the stream's duplicate window is not stored again
    ///     and answers `duplicate: true` with the original sequence.
    ///   - expectedLastSubjectSequence: `Nats-Expected-Last-Subject-Sequence`: stored only when the
    ///     subject's last message has this sequence (0 = none); otherwise `err_code` 10071.
    /// - Throws: `NATSError.jetStream` (a failed expectation, a full stream), `.noResponders` (no stream
    ///   holds the subject, or it has no leader), `.timeout`, `.invalidArgument`.
    public func publish(
        _ subject: String, payload: [UInt8], messageID: String? = nil, expectedLastSubjectSequence: UInt64? = nil,
        headers: NATSHeaders? = nil
    ) async throws(NATSError) -> PubAck {
        var all = headers ?? NATSHeaders()
        if let messageID { all.set("Nats-Msg-Id", messageID) }
        if let expectedLastSubjectSequence { all.set("Nats-Expected-Last-Subject-Sequence", String(expectedLastSubjectSequence)) }
        let reply = try await connection.request(subject, payload: payload, headers: all.isEmpty ? nil : all, timeout: timeout)
        return try Self.decode(reply.payload, as: PubAck.self)
    }

    // MARK: Consumers

    /// Creates (or finds, when identical) a durable consumer
    /// (`$JS.API.CONSUMER.DURABLE.CREATE.<stream>.<durable>`). A pull consumer has no `deliverSubject`.
    /// - Throws: `NATSError.invalidArgument` without a durable name, and the errors of `api`.
    @discardableResult
    public func createDurableConsumer(stream: String, config: ConsumerConfig) async throws(NATSError) -> ConsumerInfo {
        guard let durable = config.durableName else { throw .invalidArgument("a durable consumer needs a name") }
        try Self.checkName(stream, what: "stream")
        try Self.checkName(durable, what: "consumer")
        struct Request: Encodable {
            var stream_name: String
            var config: ConsumerConfig
        }
        return try await api(
            "CONSUMER.DURABLE.CREATE.\(stream).\(durable)", body: Self.encode(Request(stream_name: stream, config: config)),
            as: ConsumerInfo.self)
    }

    /// Creates an ephemeral consumer (`$JS.API.CONSUMER.CREATE.<stream>`); the server deletes it after
    /// its inactive threshold without interest.
    /// - Throws: the errors of `api`.
    public func createEphemeralConsumer(stream: String, config: ConsumerConfig) async throws(NATSError) -> ConsumerInfo {
        try Self.checkName(stream, what: "stream")
        struct Request: Encodable {
            var stream_name: String
            var config: ConsumerConfig
        }
        return try await api("CONSUMER.CREATE.\(stream)", body: Self.encode(Request(stream_name: stream, config: config)), as: ConsumerInfo.self)
    }

    /// `$JS.API.CONSUMER.INFO.<stream>.<consumer>`.
    /// - Throws: `NATSError.jetStream` with `err_code` 10014 when there is no such consumer.
    public func consumerInfo(stream: String, consumer: String) async throws(NATSError) -> ConsumerInfo {
        try Self.checkName(stream, what: "stream")
        try Self.checkName(consumer, what: "consumer")
        return try await api("CONSUMER.INFO.\(stream).\(consumer)", body: [], as: ConsumerInfo.self)
    }

    /// `$JS.API.CONSUMER.DELETE.<stream>.<consumer>`.
    /// - Throws: the errors of `api`.
    public func deleteConsumer(stream: String, consumer: String) async throws(NATSError) {
        try Self.checkName(stream, what: "stream")
        try Self.checkName(consumer, what: "consumer")
        struct Answer: Decodable { var success: Bool }
        _ = try await api("CONSUMER.DELETE.\(stream).\(consumer)", body: [], as: Answer.self)
    }

    // MARK: Fetch and ack

    /// Largest batch one fetch asks for.
    public static let maxFetchBatch = 10_000

    /// Pulls up to `batch` messages from a pull consumer (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`).
    ///
    /// With `noWait`, the server answers at once with what is there (a `404`/`408` status ends it);
    /// otherwise it waits up to `expires` for messages. The call returns early when `batch` arrived,
    /// and locally gives up 1 s after `expires` (a lost status message cannot hang it).
    /// - Throws: `NATSError.jetStream` for a `409` status (consumer deleted, too many waiting pulls),
    ///   `.malformedResponse` for a message without an ack subject, `.timeout` when the server never
    ///   answered (nats-server 2.9 ignores a pull for a missing consumer), `.invalidArgument`, or the
    ///   connection's closing error.
    public func fetch(stream: String, consumer: String, batch: Int, expires: Duration = .seconds(1), noWait: Bool = false) async throws(NATSError) -> [JetStreamMessage] {
        try Self.checkName(stream, what: "stream")
        try Self.checkName(consumer, what: "consumer")
        guard batch > 0, batch <= Self.maxFetchBatch else { throw .invalidArgument("batch \(batch) outside 1...\(Self.maxFetchBatch)") }
        guard expires > .zero else { throw .invalidArgument("expires must be positive") }
        struct Request: Encodable {
            var batch: Int
            var expires: Int64?
            var no_wait: Bool?
        }
        let body = try Self.encode(Request(batch: batch, expires: noWait ? nil : expires.nanoseconds, no_wait: noWait ? true : nil))
        let inbox = connection.newInbox()
        let subscription = try await connection.subscribe(inbox)
        let deadline = connection.endSubscription(subscription, after: expires + .seconds(1))
        defer { deadline.cancel() }
        var out: [JetStreamMessage] = []
        /// Set when the server ended the pull (a status) or the batch is full, not the local deadline.
        var answered = false
        do throws(NATSError) {
            try await connection.publish("\(apiPrefix).CONSUMER.MSG.NEXT.\(stream).\(consumer)", payload: body, replyTo: inbox)
            receive: for try await message in subscription {
                if let status = message.status {
                    switch status {
                    case 100: continue receive
                    case 404, 408:
                        answered = true
                        break receive
                    default:
                        let text = message.headers?.statusDescription ?? ""
                        throw NATSError.jetStream(JetStreamAPIError(code: status, errCode: 0, description: text))
                    }
                }
                guard let reply = message.replyTo, let metadata = JetStreamMetadata(ackSubject: reply) else {
                    throw NATSError.malformedResponse("fetched message on '\(message.subject)' without an ack subject")
                }
                out.append(JetStreamMessage(message: message, metadata: metadata))
                if out.count == batch {
                    answered = true
                    break receive
                }
            }
        } catch {
            await subscription.unsubscribe()
            throw error
        }
        await subscription.unsubscribe()
        if !answered, out.isEmpty {
            // The server answers every pull it accepts (messages, or 404/408); silence means it
            // dropped the request, e.g. for a consumer that does not exist.
            throw .timeout("no answer to a pull from \(stream).\(consumer) (does the consumer exist?)")
        }
        return out
    }

    /// Acknowledges a fetched message. With `wait`, asks the server to confirm (its empty reply) so the
    /// ack is known to be recorded; otherwise it is only written.
    /// - Throws: `NATSError.invalidArgument` for a message without a reply subject, `.timeout` (with
    ///   `wait`), or the connection's closing error.
    public func ack(_ message: JetStreamMessage, _ kind: AckKind = .ack, wait: Bool = false) async throws(NATSError) {
        guard let reply = message.message.replyTo else { throw .invalidArgument("message has no reply subject") }
        if wait {
            _ = try await connection.request(reply, payload: Array(kind.rawValue.utf8), timeout: timeout)
        } else {
            try await connection.publish(reply, payload: Array(kind.rawValue.utf8))
        }
    }
}
