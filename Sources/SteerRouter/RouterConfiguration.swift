import Foundation
import SteerCore
import SteerProtocol
import SteerService

/// One shard server's address.
public struct ShardEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (`[v6]:port` for IPv6 literals).
    ///
    /// - Throws: `.invalidRequest` naming the text.
    public init(parsing text: String) throws(SteerError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let colon = trimmed.lastIndex(of: ":") else {
            throw SteerError.invalid("shard address '\(text)' must be host:port")
        }
        var host = String(trimmed[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw SteerError.invalid("shard address '\(text)' has no host") }
        guard let port = Int(trimmed[trimmed.index(after: colon)...]), (1...65535).contains(port) else {
            throw SteerError.invalid("shard address '\(text)' has no valid port (1 to 65535)")
        }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Settings of `steer route`. Every limit is documented in docs/scaling.md.
public struct RouterConfiguration: Sendable {
    /// The shard sets: `shards[i]` are the replicas of shard `i` (the sharding function's shard `i`).
    public var shards: [[ShardEndpoint]]
    /// The health check's timeout, in milliseconds: a replica that does not answer `stats` within it is
    /// marked down.
    public var shardTimeoutMillis: Int
    /// The deadline of a request that carries no `timeout_ms`, in milliseconds from its arrival (the
    /// shards get what is left of it as their `timeout_ms`): the same `request_timeout_ms` as a server's.
    /// A request whose deadline passes fails alone with `deadline_exceeded`; the replica is not marked down.
    public var defaultRequestTimeoutMillis: Int = 10_000
    /// Largest deadline a request's `timeout_ms` may ask for, in milliseconds (larger values are cut).
    public var maxRequestTimeoutMillis: Int = 60_000
    /// Period of the health check (`stats` to every replica).
    public var healthIntervalMillis: Int
    /// Connections the router keeps to each replica (requests are pipelined on each).
    public var connectionsPerReplica: Int
    /// Longest wait for every replica to answer a `swap`.
    public var swapTimeoutSeconds: Int
    /// Longest response line accepted from a shard, in bytes; a longer answer fails its request alone
    /// with `too_large` (the connection stays in use).
    public var maxShardResponseBytes: Int
    /// Limits on the router's own clients (the same ones `steer serve` enforces).
    public var limits: ProtocolLimits
    /// When set, the router speaks TLS to the shards and trusts the certificates (PEM) in this file;
    /// a shard's certificate must name the host (or IP address) the shard list gives.
    public var shardTLSCertificateAuthority: String?
    /// The keys the router's clients must present (checked by the router before any action, as
    /// `steer serve` checks them); nil → every op is open at the router.
    public var accessKeys: AccessKeys?
    /// The key the router presents to the shards in `token` on every request, health checks included
    /// (`--shard-key-file`; an admin key of the shards when writes or swaps go through the router). Nil →
    /// the caller's own `token` is forwarded and health checks carry none.
    public var shardKey: String?

    public init(shards: [[ShardEndpoint]], shardTimeoutMillis: Int = 1000, healthIntervalMillis: Int = 1000,
                connectionsPerReplica: Int = 2, swapTimeoutSeconds: Int = 300, maxShardResponseBytes: Int = 64 << 20,
                limits: ProtocolLimits = ProtocolLimits()) {
        self.shards = shards
        self.shardTimeoutMillis = shardTimeoutMillis
        self.healthIntervalMillis = healthIntervalMillis
        self.connectionsPerReplica = connectionsPerReplica
        self.swapTimeoutSeconds = swapTimeoutSeconds
        self.maxShardResponseBytes = maxShardResponseBytes
        self.limits = limits
    }

    /// Parses `--shard` values, one per shard, each a comma-separated list of replica addresses.
    ///
    /// - Throws: `.invalidRequest` for no shards, an empty shard, a bad address, an address listed twice,
    ///   or more than `Sharding.maxShardCount` shards.
    public static func parseShards(_ specs: [String]) throws(SteerError) -> [[ShardEndpoint]] {
        var shards: [[ShardEndpoint]] = []
        for (index, spec) in specs.enumerated() {
            let parts = spec.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            var replicas: [ShardEndpoint] = []
            for part in parts {
                guard !part.trimmingCharacters(in: .whitespaces).isEmpty else {
                    throw SteerError.invalid("shard \(index) ('\(spec)') has an empty replica address")
                }
                replicas.append(try ShardEndpoint(parsing: part))
            }
            shards.append(replicas)
        }
        try validate(shards)
        return shards
    }

    /// Checks a shard list: 1 to `Sharding.maxShardCount` shards, each with replicas, no address twice.
    public static func validate(_ shards: [[ShardEndpoint]]) throws(SteerError) {
        guard !shards.isEmpty else { throw SteerError.invalid("give at least one shard (--shard host:port[,host:port...])") }
        guard shards.count <= Sharding.maxShardCount else {
            throw SteerError.invalid("\(shards.count) shards; at most \(Sharding.maxShardCount)")
        }
        var seen: [ShardEndpoint: Int] = [:]
        for (index, replicas) in shards.enumerated() {
            guard !replicas.isEmpty else { throw SteerError.invalid("shard \(index) has no replicas") }
            for endpoint in replicas {
                if let first = seen.updateValue(index, forKey: endpoint) {
                    throw SteerError.invalid("replica \(endpoint) is listed twice (shard \(first) and shard \(index))")
                }
            }
        }
    }

    /// Reads the shard list from a JSON file: `{"shards": [["host:port", "host:port"], ["host:port"]]}`.
    ///
    /// - Throws: `.io` when unreadable, `.invalidRequest` naming the file and the field otherwise.
    public static func shards(fromFile path: String) throws(SteerError) -> [[ShardEndpoint]] {
        guard let data = FileManager.default.contents(atPath: path) else { throw SteerError(.io, "shard file '\(path)' cannot be read") }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw SteerError.invalid("shard file '\(path)' is not a JSON object")
        }
        guard let list = object["shards"] as? [Any] else {
            throw SteerError.invalid("shard file '\(path)': 'shards' must be an array of arrays of \"host:port\" strings")
        }
        var shards: [[ShardEndpoint]] = []
        for (index, entry) in list.enumerated() {
            guard let replicas = entry as? [Any] else { throw SteerError.invalid("shard file '\(path)': shards[\(index)] must be an array") }
            var endpoints: [ShardEndpoint] = []
            for (position, replica) in replicas.enumerated() {
                guard let text = replica as? String else {
                    throw SteerError.invalid("shard file '\(path)': shards[\(index)][\(position)] must be a \"host:port\" string")
                }
                endpoints.append(try ShardEndpoint(parsing: text))
            }
            shards.append(endpoints)
        }
        do {
            try validate(shards)
        } catch {
            throw SteerError(error.code, "shard file '\(path)': \(error.message)")
        }
        return shards
    }
}
