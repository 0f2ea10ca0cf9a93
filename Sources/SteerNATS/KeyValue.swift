// SteerNATS: a small NATS + JetStream client written by hand over SwiftNIO, because no Swift NATS
// client is among this machine's package copies (/opt/swift-packages); see docs/nats.md.
//
// This file: JetStream key-value buckets. A bucket `b` is the stream `KV_b` on subjects `$KV.b.>`; a
// key's value is the last message on `$KV.b.<key>`, its revision that message's stream sequence, and
// delete/purge are marker messages with a `KV-Operation` header (`DEL`, `PURGE` + `Nats-Rollup: sub`).

import Foundation

/// A bucket's configuration (becomes the `KV_<bucket>` stream's).
public struct KeyValueConfig: Sendable {
    public var bucket: String
    /// Values kept per key (1...64): the stream's `max_msgs_per_subject`.
    public var history: Int = 1
    /// Age after which values expire (nil: never).
    public var ttl: Duration?
    public var replicas: Int = 1
    public var storage: StorageType = .file
    /// Largest value accepted by the server (nil: its `max_payload`).
    public var maxValueBytes: Int32?
    /// Reads use `$JS.API.DIRECT.GET` (any replica answers) when true, `$JS.API.STREAM.MSG.GET`
    /// (the leader answers) when false.
    public var allowDirect: Bool = true

    public init(bucket: String, history: Int = 1, replicas: Int = 1) {
        self.bucket = bucket
        self.history = history
        self.replicas = replicas
    }

    /// Longest history a bucket may keep.
    public static let maxHistory = 64
}

/// What a key's latest message says.
public enum KeyValueOperation: String, Sendable, Equatable {
    case put = "PUT"
    case delete = "DEL"
    case purge = "PURGE"
}

/// One value (or delete/purge marker) of a key.
public struct KeyValueEntry: Sendable, Equatable {
    public var bucket: String
    public var key: String
    public var value: [UInt8]
    /// The stream sequence of the message: increases with every change in the bucket.
    public var revision: UInt64
    public var operation: KeyValueOperation

    public init(bucket: String, key: String, value: [UInt8], revision: UInt64, operation: KeyValueOperation) {
        self.bucket = bucket
        self.key = key
        self.value = value
        self.revision = revision
        self.operation = operation
    }
}

/// One event of a watch: an entry (initial values first, then changes as they are stored), and once,
/// when the initial values have all been delivered, `initialValuesDone`.
public enum KeyValueWatchEvent: Sendable, Equatable {
    case entry(KeyValueEntry)
    case initialValuesDone
}

extension JetStreamContext {
    /// Creates a bucket (idempotent for an identical configuration).
    /// - Throws: `NATSError.invalidArgument` (bucket name, history), and the errors of `createStream`.
    public func createKeyValue(_ config: KeyValueConfig) async throws(NATSError) -> KeyValue {
        try KeyValue.checkBucket(config.bucket)
        guard (1...KeyValueConfig.maxHistory).contains(config.history) else {
            throw .invalidArgument("history \(config.history) outside 1...\(KeyValueConfig.maxHistory)")
        }
        let twoMinutes = Duration.seconds(120)
        var stream = StreamConfig(
            name: "KV_\(config.bucket)", subjects: ["$KV.\(config.bucket).>"], storage: config.storage, replicas: config.replicas,
            duplicateWindow: config.ttl.map { min($0, twoMinutes) } ?? twoMinutes)
        stream.maxMsgsPerSubject = Int64(config.history)
        stream.maxAgeNanos = config.ttl?.nanoseconds ?? 0
        stream.maxMsgSize = config.maxValueBytes
        stream.discard = .new
        stream.allowRollupHdrs = true
        stream.denyDelete = true
        stream.denyPurge = false
        stream.allowDirect = config.allowDirect
        let info = try await createStream(stream)
        return KeyValue(js: self, bucket: config.bucket, allowDirect: info.config.allowDirect ?? false)
    }

    /// Binds an existing bucket.
    /// - Throws: `NATSError.jetStream` (err_code 10059) when it does not exist.
    public func keyValue(_ bucket: String) async throws(NATSError) -> KeyValue {
        try KeyValue.checkBucket(bucket)
        let info = try await streamInfo("KV_\(bucket)")
        return KeyValue(js: self, bucket: bucket, allowDirect: info.config.allowDirect ?? false)
    }

    /// Deletes a bucket and its values.
    /// - Throws: the errors of `deleteStream`.
    public func deleteKeyValue(_ bucket: String) async throws(NATSError) {
        try KeyValue.checkBucket(bucket)
        try await deleteStream("KV_\(bucket)")
    }
}

/// A key-value bucket. Sendable; every call is a JetStream request.
public struct KeyValue: Sendable {
    public let js: JetStreamContext
    public let bucket: String
    /// Whether `get` uses direct get.
    public let allowDirect: Bool

    var streamName: String { "KV_\(bucket)" }

    static func checkBucket(_ bucket: String) throws(NATSError) {
        guard !bucket.isEmpty, bucket.utf8.count <= 200,
            bucket.utf8.allSatisfy({ isAlnum($0) || $0 == 95 || $0 == 45 })
        else { throw .invalidArgument("bucket name '\(bucket.prefix(64))'") }
    }

    /// A key: `[-/_=.a-zA-Z0-9]+`, not starting or ending with `.`, no empty token; with `pattern`,
    /// `*` and `>` tokens are allowed too (watch).
    static func checkKey(_ key: String, pattern: Bool = false) throws(NATSError) {
        let bytes = key.utf8
        let ok = !bytes.isEmpty && bytes.count <= 1024 && bytes.first != 46 && bytes.last != 46 && !key.contains("..")
            && bytes.allSatisfy { isAlnum($0) || $0 == 45 || $0 == 47 || $0 == 95 || $0 == 61 || $0 == 46 || (pattern && ($0 == 42 || $0 == 62)) }
        guard ok else { throw .invalidArgument("key '\(key.prefix(64))'") }
    }

    private static func isAlnum(_ b: UInt8) -> Bool {
        (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122)
    }

    func subject(_ key: String) -> String { "$KV.\(bucket).\(key)" }

    /// Stores a value; returns its revision.
    /// - Throws: `NATSError.invalidArgument` (key), and the errors of `JetStreamContext.publish`.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8]) async throws(NATSError) -> UInt64 {
        try Self.checkKey(key)
        return try await js.publish(subject(key), payload: value).seq
    }

    /// Stores a value only when the key's latest revision is `revision` (optimistic concurrency).
    /// - Throws: `NATSError.jetStream` with `isWrongLastSequence` when another write came first.
    @discardableResult
    public func update(_ key: String, _ value: [UInt8], revision: UInt64) async throws(NATSError) -> UInt64 {
        try Self.checkKey(key)
        return try await js.publish(subject(key), payload: value, expectedLastSubjectSequence: revision).seq
    }

    /// Stores a value only when the key has none (never set, deleted or purged).
    /// - Throws: `NATSError.jetStream` with `isWrongLastSequence` when the key has a value.
    @discardableResult
    public func create(_ key: String, _ value: [UInt8]) async throws(NATSError) -> UInt64 {
        do throws(NATSError) {
            return try await update(key, value, revision: 0)
        } catch where error.isWrongLastSequence {
            // A delete/purge marker is the subject's last message: replace it, expecting exactly it.
            guard let latest = try await entry(key), latest.operation != .put else { throw error }
            return try await update(key, value, revision: latest.revision)
        }
    }

    /// The key's current value, nil when it has none (never set, deleted or purged).
    /// - Throws: the errors of `entry`.
    public func get(_ key: String) async throws(NATSError) -> KeyValueEntry? {
        guard let latest = try await entry(key), latest.operation == .put else { return nil }
        return latest
    }

    /// The key's latest message, delete/purge markers included; nil when it has none.
    /// - Throws: `NATSError.invalidArgument` (key), `.malformedResponse`, and the errors of a request.
    public func entry(_ key: String) async throws(NATSError) -> KeyValueEntry? {
        try Self.checkKey(key)
        struct Request: Encodable { var last_by_subj: String }
        let body = try JetStreamContext.encode(Request(last_by_subj: subject(key)))
        if allowDirect {
            let reply = try await js.connection.request("\(js.apiPrefix).DIRECT.GET.\(streamName)", payload: body, timeout: js.timeout)
            if reply.status == 404 { return nil }
            guard let headers = reply.headers, reply.status == nil else {
                throw .malformedResponse("direct get status \(reply.status.map(String.init) ?? "missing headers")")
            }
            guard let seqText = headers["Nats-Sequence"], let seq = UInt64(seqText), headers["Nats-Subject"] == subject(key) else {
                throw .malformedResponse("direct get without Nats-Sequence/Nats-Subject")
            }
            return KeyValueEntry(bucket: bucket, key: key, value: reply.payload, revision: seq, operation: try Self.operation(headers))
        }
        struct Stored: Decodable {
            var subject: String
            var seq: UInt64
            var hdrs: String?
            var data: String?
        }
        struct Answer: Decodable { var message: Stored }
        let answer: Answer
        do throws(NATSError) {
            answer = try await js.api("STREAM.MSG.GET.\(streamName)", body: body, as: Answer.self)
        } catch {
            if case .jetStream(let e) = error, e.errCode == JetStreamAPIError.noMessageFound { return nil }
            throw error
        }
        let message = answer.message
        guard message.subject == subject(key) else { throw .malformedResponse("message get answered subject '\(message.subject)'") }
        var value: [UInt8] = []
        if let data = message.data {
            guard let decoded = Data(base64Encoded: data) else { throw .malformedResponse("message data is not base64") }
            value = Array(decoded)
        }
        var operation = KeyValueOperation.put
        if let hdrs = message.hdrs {
            guard let decoded = Data(base64Encoded: hdrs) else { throw .malformedResponse("message headers are not base64") }
            let headers: NATSHeaders
            do {
                headers = try NATSHeaders.parse(decoded)
            } catch {
                throw .malformedResponse("stored headers: \(error)")
            }
            operation = try Self.operation(headers)
        }
        return KeyValueEntry(bucket: bucket, key: key, value: value, revision: message.seq, operation: operation)
    }

    static func operation(_ headers: NATSHeaders?) throws(NATSError) -> KeyValueOperation {
        guard let text = headers?["KV-Operation"] else { return .put }
        guard let op = KeyValueOperation(rawValue: text) else { throw .malformedResponse("KV-Operation '\(text.prefix(16))'") }
        return op
    }

    /// Writes a delete marker (the history stays); with `revision`, only if that is the latest.
    /// - Throws: the errors of `JetStreamContext.publish`.
    @discardableResult
    public func delete(_ key: String, revision: UInt64? = nil) async throws(NATSError) -> UInt64 {
        try Self.checkKey(key)
        return try await js.publish(subject(key), payload: [], expectedLastSubjectSequence: revision, headers: NATSHeaders([("KV-Operation", "DEL")])).seq
    }

    /// Writes a purge marker that also removes the key's earlier history (`Nats-Rollup: sub`).
    /// - Throws: the errors of `JetStreamContext.publish`.
    @discardableResult
    public func purge(_ key: String) async throws(NATSError) -> UInt64 {
        try Self.checkKey(key)
        return try await js.publish(subject(key), payload: [], headers: NATSHeaders([("KV-Operation", "PURGE"), ("Nats-Rollup", "sub")])).seq
    }

    /// Watches keys matching `keys` (`*`/`>` wildcards allowed): first each key's latest entry (or its
    /// whole history with `includeHistory`), then `initialValuesDone`, then every change.
    ///
    /// Implemented as an ephemeral push consumer (ack none, flow control, idle heartbeats) delivering to
    /// a new inbox; flow-control requests are answered while iterating. A skipped consumer sequence
    /// ends the watch with `NATSError.sequenceGap` (the caller watches again), so no change is missed
    /// silently.
    /// - Throws: `NATSError.invalidArgument` (pattern), and the errors of `createEphemeralConsumer`.
    public func watch(_ keys: String = ">", includeHistory: Bool = false) async throws(NATSError) -> KeyValueWatcher {
        try Self.checkKey(keys, pattern: true)
        let connection = js.connection
        let inbox = connection.newInbox()
        let subscription = try await connection.subscribe(inbox)
        var config = ConsumerConfig(durableName: nil, deliverPolicy: includeHistory ? .all : .lastPerSubject, ackPolicy: .none, filterSubject: subject(keys))
        config.deliverSubject = inbox
        config.flowControl = true
        config.idleHeartbeatNanos = Duration.seconds(5).nanoseconds
        config.memStorage = true
        config.replayPolicy = .instant
        let info: ConsumerInfo
        do throws(NATSError) {
            info = try await js.createEphemeralConsumer(stream: streamName, config: config)
        } catch {
            await subscription.unsubscribe()
            throw error
        }
        return KeyValueWatcher(kv: self, subscription: subscription, consumer: info.name, initialPending: info.numPending)
    }
}

/// The events of `KeyValue.watch`. Iterate from one task; `stop()` ends it and deletes the consumer.
public struct KeyValueWatcher: AsyncSequence, Sendable {
    public typealias Element = KeyValueWatchEvent
    public typealias Failure = NATSError

    let kv: KeyValue
    let subscription: NATSSubscription
    /// The ephemeral consumer's name.
    public let consumer: String
    let initialPending: UInt64

    /// Unsubscribes and deletes the consumer (best effort: the server removes it after its inactive
    /// threshold anyway).
    public func stop() async {
        await subscription.unsubscribe()
        try? await kv.js.deleteConsumer(stream: kv.streamName, consumer: consumer)
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: subscription.makeAsyncIterator(), kv: kv, initialDone: initialPending == 0)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: NATSSubscription.AsyncIterator
        let kv: KeyValue
        /// All initial values have been delivered (or there were none).
        var initialDone: Bool
        var announced = false
        var expectedConsumerSequence: UInt64 = 1

        public mutating func next() async throws(NATSError) -> KeyValueWatchEvent? {
            try await next(isolation: nil)
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(NATSError) -> KeyValueWatchEvent? {
            if initialDone, !announced {
                announced = true
                return .initialValuesDone
            }
            while let message = try await base.next(isolation: actor) {
                if let status = message.status {
                    guard status == 100 else {
                        throw .jetStream(JetStreamAPIError(code: status, errCode: 0, description: message.headers?.statusDescription ?? ""))
                    }
                    // Flow control request (a reply subject) or a heartbeat saying the consumer stalled.
                    if let reply = message.replyTo {
                        try await kv.js.connection.publish(reply)
                    } else if let stalled = message.headers?["Nats-Consumer-Stalled"] {
                        try await kv.js.connection.publish(stalled)
                    }
                    continue
                }
                guard let reply = message.replyTo, let metadata = JetStreamMetadata(ackSubject: reply) else {
                    throw .malformedResponse("watched message on '\(message.subject)' without an ack subject")
                }
                guard metadata.consumerSequence == expectedConsumerSequence else {
                    throw .sequenceGap(expected: expectedConsumerSequence, got: metadata.consumerSequence)
                }
                expectedConsumerSequence += 1
                let prefix = "$KV.\(kv.bucket)."
                guard message.subject.hasPrefix(prefix) else { throw .malformedResponse("watched subject '\(message.subject)'") }
                let key = String(message.subject.dropFirst(prefix.count))
                let entry = KeyValueEntry(
                    bucket: kv.bucket, key: key, value: message.payload, revision: metadata.streamSequence,
                    operation: try KeyValue.operation(message.headers))
                if !initialDone, metadata.pending == 0 {
                    initialDone = true
                }
                return .entry(entry)
            }
            return nil
        }
    }
}
