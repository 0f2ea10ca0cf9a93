import SteerCore
import SteerNATS
import SteerProtocol

/// A cluster's metadata in JetStream key-value buckets (docs/scaling.md, "Cluster metadata"), read and
/// written by `steer serve --follow` and `steer route --follow` alike:
///
/// - bucket `steer_<cluster>` (history 1, no expiry, `replicas` copies), key `shards`:
///   `{"shards":N}`, the shard count, written once (create-if-absent) by a replica started with
///   `--shard-count N`; a replica with another count refuses to start.
/// - bucket `steer_<cluster>_replicas` (history 1, values expire after `heartbeatTTL`: the bucket's
///   `max_age`; nats-server 2.9 has no per-key TTL), key `shard.<i>.<replica id>`:
///   `{"address":"host:port","shard":i}`, put by every following replica each `heartbeatInterval`. A
///   replica that stops putting disappears from the bucket after `heartbeatTTL`; that is what "down"
///   means to a router that discovers replicas here.
///
/// Values are hostile input: at most `maxValueBytes`, parsed with the protocol's JSON parser, every
/// field checked.
public enum ClusterDirectory {
    /// How often a replica puts its heartbeat.
    public static let heartbeatInterval: Duration = .seconds(1)
    /// How long a heartbeat lives (the replicas bucket's `max_age`).
    public static let heartbeatTTL: Duration = .seconds(5)
    /// The shard map's key in the metadata bucket.
    public static let shardsKey = "shards"
    /// Longest value read from either bucket, in bytes.
    public static let maxValueBytes = 1024
    /// Longest advertised host, in bytes.
    public static let maxHostBytes = 253

    /// A replica's address as it advertises it.
    public struct Address: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

        /// Parses `HOST:PORT` (`[v6]:PORT` too).
        ///
        /// - Throws: `.invalidRequest` for anything else, or a host of other characters than letters,
        ///   digits, '.', '-', ':' (longer than `maxHostBytes`).
        public init(parsing text: String) throws(SteerError) {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
                throw SteerError.invalid("address must be HOST:PORT with a port in 1...65535, got '\(text.prefix(100))'")
            }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard (1...maxHostBytes).contains(host.utf8.count),
                  host.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x3A) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2E || $0 == 0x2D })
            else {
                throw SteerError.invalid("address host must be 1-\(maxHostBytes) letters, digits, '.', '-' or ':', got '\(host.prefix(100))'")
            }
            self.host = host
            self.port = port
        }
    }

    public static func metadataBucket(cluster: String) -> String { "steer_\(cluster)" }
    public static func replicasBucket(cluster: String) -> String { "steer_\(cluster)_replicas" }

    /// The heartbeat key of a replica: `shard.<i>.<id>`, the id cut to key characters.
    public static func replicaKey(shard: Int, replicaID: String) -> String {
        let id = String(replicaID.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }.prefix(64))
        return "shard.\(shard).\(id.isEmpty ? "unnamed" : id)"
    }

    /// Creates (or binds) the metadata bucket.
    ///
    /// - Throws: `NATSError` from JetStream.
    public static func metadata(_ jetStream: JetStreamContext, cluster: String, replicas: Int) async throws(NATSError) -> KeyValue {
        try await jetStream.createKeyValue(KeyValueConfig(bucket: metadataBucket(cluster: cluster), history: 1, replicas: replicas))
    }

    /// Creates (or binds) the replicas bucket, whose values expire after `heartbeatTTL`.
    ///
    /// - Throws: `NATSError` from JetStream.
    public static func replicas(_ jetStream: JetStreamContext, cluster: String, replicas: Int) async throws(NATSError) -> KeyValue {
        var config = KeyValueConfig(bucket: replicasBucket(cluster: cluster), history: 1, replicas: replicas)
        config.ttl = heartbeatTTL
        return try await jetStream.createKeyValue(config)
    }

    // MARK: Values

    public static func encodeShardCount(_ count: Int) -> [UInt8] { Array(#"{"shards":\#(count)}"#.utf8) }

    /// - Throws: `.corrupt` for a value that is not `{"shards":N}` with N in 1...`Sharding.maxShardCount`.
    public static func decodeShardCount(_ value: [UInt8]) throws(SteerError) -> Int {
        let object = try object(value, what: "the shard map")
        guard case .int(let count)? = object["shards"], count >= 1, count <= Int64(Sharding.maxShardCount) else {
            throw SteerError(.corrupt, "the shard map must be {\"shards\": 1...\(Sharding.maxShardCount)}")
        }
        return Int(count)
    }

    public static func encodeHeartbeat(address: Address, shard: Int) -> [UInt8] {
        var writer = JSONWriter(capacity: 96)
        writer.raw("{\"address\":")
        writer.string(address.description)
        writer.raw(",\"shard\":")
        writer.int(shard)
        writer.raw("}")
        return writer.bytes
    }

    /// - Throws: `.corrupt` for a value that is not `{"address":"HOST:PORT","shard":i}`.
    public static func decodeHeartbeat(_ value: [UInt8]) throws(SteerError) -> (address: Address, shard: Int) {
        let object = try object(value, what: "a heartbeat")
        guard case .string(let text)? = object["address"], case .int(let shard)? = object["shard"], shard >= 0,
              shard < Int64(Sharding.maxShardCount)
        else {
            throw SteerError(.corrupt, "a heartbeat must be {\"address\": \"HOST:PORT\", \"shard\": i}")
        }
        do {
            return (try Address(parsing: text), Int(shard))
        } catch {
            throw SteerError(.corrupt, "a heartbeat's \(error.message)")
        }
    }

    private static func object(_ value: [UInt8], what: String) throws(SteerError) -> JSONObject {
        guard value.count <= maxValueBytes else { throw SteerError(.corrupt, "\(what) is \(value.count) bytes, limit is \(maxValueBytes)") }
        let root: JSONValue
        do {
            root = try JSONParser.parse(value)
        } catch {
            throw SteerError(.corrupt, "\(what) is not JSON: \(error.message)")
        }
        guard case .object(let object) = root else { throw SteerError(.corrupt, "\(what) is not a JSON object") }
        return object
    }

    // MARK: Reading

    /// The shard count, nil when none is recorded.
    ///
    /// - Throws: `NATSError` from JetStream; `SteerError.corrupt` for a bad value.
    public static func shardCount(_ metadata: KeyValue) async throws -> Int? {
        guard let entry = try await metadata.get(shardsKey) else { return nil }
        return try decodeShardCount(entry.value)
    }

    /// Records `count` as the shard count when none is, else checks it is the recorded one.
    ///
    /// - Throws: `SteerError.invalidRequest` when another count is recorded; `NATSError` from JetStream.
    public static func registerShardCount(_ count: Int, _ metadata: KeyValue) async throws {
        do {
            _ = try await metadata.create(shardsKey, encodeShardCount(count))
            return
        } catch {
            guard error.isWrongLastSequence else { throw error }
        }
        guard let recorded = try await shardCount(metadata), recorded == count else {
            throw SteerError.invalid("the cluster's shard map records another shard count than --shard-count \(count)")
        }
    }

    /// The live replicas per shard (`shardCount` entries), each list sorted; heartbeats that do not
    /// decode, or name a shard outside the count, are skipped.
    ///
    /// - Throws: `NATSError` from JetStream.
    public static func liveReplicas(_ replicas: KeyValue, shardCount: Int) async throws -> [[Address]] {
        var found = [Set<Address>](repeating: [], count: shardCount)
        let watcher = try await replicas.watch("shard.>")
        defer { Task { await watcher.stop() } }
        for try await event in watcher {
            switch event {
            case .entry(let entry):
                guard entry.operation == .put, let (address, shard) = try? decodeHeartbeat(entry.value), shard < shardCount else { continue }
                found[shard].insert(address)
            case .initialValuesDone:
                return found.map { $0.sorted { ($0.host, $0.port) < ($1.host, $1.port) } }
            }
        }
        return found.map { $0.sorted { ($0.host, $0.port) < ($1.host, $1.port) } }
    }
}
