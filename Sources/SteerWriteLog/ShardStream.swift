import SteerCore
import SteerNATS

/// The NATS JetStream stream that holds one shard's writes (docs/scaling.md, "Following a stream"): the
/// names every replica (`steer serve --follow`) and every router (`steer route --follow`) of a cluster
/// derive from the cluster name and the shard number, so they agree without configuration.
///
/// - Subject `steer.<cluster>.shard.<i>`; stream `steer-<cluster>-shard-<i>` (stream names may not
///   contain dots).
/// - File storage, `replicas` copies, a `duplicateWindow` for `Nats-Msg-Id` de-duplication.
public struct ShardStream: Sendable, Equatable {
    public let cluster: String
    public let shard: Int
    public let subject: String
    public let name: String

    /// The stream's de-duplication window for `Nats-Msg-Id`.
    public static let duplicateWindow: Duration = .seconds(120)
    /// Longest cluster name, in bytes.
    public static let maxClusterBytes = 64

    /// - Throws: `.invalidRequest` for a cluster name that is not 1-64 letters, digits or '_', or a
    ///   negative shard.
    public init(cluster: String, shard: Int) throws(SteerError) {
        try Self.validate(cluster: cluster)
        guard shard >= 0 else { throw SteerError.invalid("shard must be at least 0, got \(shard)") }
        self.cluster = cluster
        self.shard = shard
        subject = "steer.\(cluster).shard.\(shard)"
        name = "steer-\(cluster)-shard-\(shard)"
    }

    /// - Throws: `.invalidRequest` unless `cluster` is 1-64 ASCII letters, digits or '_'.
    public static func validate(cluster: String) throws(SteerError) {
        guard (1...maxClusterBytes).contains(cluster.utf8.count),
              cluster.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F })
        else {
            throw SteerError.invalid("cluster name must be 1-\(maxClusterBytes) letters, digits or '_', got '\(cluster)'")
        }
    }

    /// How long a shard stream keeps its messages and how many it keeps (`steer serve --stream-max-age`,
    /// `--stream-max-messages`): JetStream removes the oldest messages past either limit (`discard: old`).
    /// nil: no limit of that kind.
    public struct Retention: Sendable, Equatable {
        /// Seconds a message is kept.
        public var maxAgeSeconds: Int64?
        /// Messages kept (the newest).
        public var maxMessages: Int64?

        public init(maxAgeSeconds: Int64? = nil, maxMessages: Int64? = nil) {
            self.maxAgeSeconds = maxAgeSeconds
            self.maxMessages = maxMessages
        }

        /// Whether either limit is given.
        public var isLimited: Bool { maxAgeSeconds != nil || maxMessages != nil }

        private var maxAgeNanos: Int64? { maxAgeSeconds.map { $0 * 1_000_000_000 } }

        /// Whether `config` has these limits (a limit not given here is not compared).
        func holds(in config: StreamConfig) -> Bool {
            if let maxAgeNanos, config.maxAgeNanos != maxAgeNanos { return false }
            if let maxMessages, config.maxMsgs != maxMessages { return false }
            return true
        }

        /// `config` with these limits (those not given are left as they are).
        func applied(to config: StreamConfig) -> StreamConfig {
            var config = config
            if let maxAgeNanos { config.maxAgeNanos = maxAgeNanos }
            if let maxMessages { config.maxMsgs = maxMessages }
            config.discard = .old
            return config
        }
    }

    /// What `ensure` did to the stream.
    public enum Ensured: Sendable, Equatable {
        case existed, created, retentionUpdated
    }

    /// The stream's information, creating the stream (file storage, `replicas` copies, `retention`) when it
    /// is missing, and setting `retention`'s limits on an existing stream that has others (limits not given
    /// are left as the stream has them).
    ///
    /// - Returns: the information and what this call did.
    /// - Throws: `NATSError` when JetStream cannot be reached or refuses.
    public func ensure(_ jetStream: JetStreamContext, replicas: Int, retention: Retention = Retention()) async throws(NATSError)
        -> (info: StreamInfo, ensured: Ensured) {
        do {
            let info = try await jetStream.streamInfo(name)
            guard !retention.holds(in: info.config) else { return (info, .existed) }
            return (try await jetStream.updateStream(retention.applied(to: info.config)), .retentionUpdated)
        } catch {
            guard Self.isJetStreamError(error, JetStreamAPIError.streamNotFound) else { throw error }
        }
        var config = StreamConfig(name: name, subjects: [subject], storage: .file, replicas: replicas, duplicateWindow: Self.duplicateWindow)
        if retention.isLimited { config = retention.applied(to: config) }
        return (try await jetStream.createStream(config), .created)
    }

    /// Whether `error` is the JetStream API error `code` (`JetStreamAPIError.streamNotFound`, ...).
    public static func isJetStreamError(_ error: any Error, _ code: Int) -> Bool {
        if case .jetStream(let api)? = error as? NATSError { return api.errCode == code }
        return false
    }
}

/// The NATS servers given to `--follow`: `nats://host:port`, `host:port` or `host` (port 4222), several
/// separated by commas (nodes of one NATS cluster; a lost connection moves to the next).
public struct NATSAddresses: Sendable, Equatable, CustomStringConvertible {
    public struct Address: Sendable, Equatable {
        public var host: String
        public var port: Int
    }

    public let addresses: [Address]
    /// Most addresses accepted in one list.
    public static let maxAddresses = 16

    /// - Returns: nil for an empty or malformed list (user info, paths, bad ports, more than
    ///   `maxAddresses`).
    public init?(_ text: String) {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        guard !parts.isEmpty, parts.count <= Self.maxAddresses else { return nil }
        var found: [Address] = []
        for part in parts {
            guard let address = Self.parse(part.trimmingSpaces) else { return nil }
            found.append(address)
        }
        addresses = found
    }

    private static func parse(_ text: Substring) -> Address? {
        var rest = text
        if rest.hasPrefix("nats://") { rest = rest.dropFirst(7) }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty, !rest.contains("/"), !rest.contains("@"), !rest.contains(" ") else { return nil }
        guard let colon = rest.lastIndex(of: ":") else { return Address(host: String(rest), port: 4222) }
        let host = rest[..<colon]
        guard !host.isEmpty, let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        return Address(host: String(host), port: port)
    }

    public var description: String { addresses.map { "nats://\($0.host):\($0.port)" }.joined(separator: ",") }

    /// Connects to the first address that answers, starting at `start` (mod count) and going round once.
    ///
    /// - Returns: the connection and the index of the address it reached.
    /// - Throws: the last address's `NATSError` when none answered.
    public func connect(startingAt start: Int, options: NATSConnectOptions = .init()) async throws(NATSError) -> (NATSConnection, Int) {
        var last = NATSError.connectFailed("no NATS address")
        for step in 0..<addresses.count {
            let index = (start + step) % addresses.count
            let address = addresses[index]
            do {
                return (try await NATSConnection.connect(host: address.host, port: address.port, options: options), index)
            } catch {
                last = error
            }
        }
        throw last
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var text = self
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return text
    }
}
