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

    /// The stream's information, creating the stream (file storage, `replicas` copies) when it is missing.
    ///
    /// - Returns: the information and whether this call created it.
    /// - Throws: `NATSError` when JetStream cannot be reached or refuses.
    public func ensure(_ jetStream: JetStreamContext, replicas: Int) async throws(NATSError) -> (info: StreamInfo, created: Bool) {
        do {
            return (try await jetStream.streamInfo(name), false)
        } catch {
            guard Self.isJetStreamError(error, JetStreamAPIError.streamNotFound) else { throw error }
        }
        let created = try await jetStream.createStream(StreamConfig(
            name: name, subjects: [subject], storage: .file, replicas: replicas, duplicateWindow: Self.duplicateWindow))
        return (created, true)
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
