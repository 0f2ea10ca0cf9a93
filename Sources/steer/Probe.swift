import ArgumentParser
import Foundation
import SteerClient
import SteerCore
import SteerProtocol
import SteerService

/// `steer probe`: a readiness/liveness check for Kubernetes exec probes (deploy/). Exits 0 when the
/// server (or router) at HOST:PORT answers `stats` with `ok: true` within the timeout and, for a
/// router, serves a known generation with at least one shard readable; 1 otherwise, with the reason on
/// stderr.
struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 when a Steer server or router is ready (for Kubernetes probes).")

    @Option(help: "Address (default 127.0.0.1).")
    var host: String = "127.0.0.1"
    @Option(help: "Port (default 7878).")
    var port: Int = 7878
    @Option(name: .customLong("timeout-ms"), help: "Longest wait for the answer (default 2000).")
    var timeoutMillis: Int = 2000
    @Option(name: .customLong("key-file"), help: "File holding a read (or admin) key, sent with `stats` (servers with keys and no public reads). Env: STEER_PROBE_KEY_FILE.")
    var keyFile: String?
    @Flag(help: "Require a router that serves a generation and has every shard readable (default: one shard is enough).")
    var allShards = false

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("port must be in 1...65535, got \(port)") }
        guard (1...600_000).contains(timeoutMillis) else { throw ValidationError("timeout-ms must be in 1...600000, got \(timeoutMillis)") }
    }

    func run() throws {
        do {
            try check()
        } catch {
            FileHandle.standardError.write(Data("not ready: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    private func check() throws(SteerError) {
        let connection = try SteerConnection(host: host, port: port)
        try connection.setReceiveTimeout(milliseconds: timeoutMillis)
        var line = Array(#"{"op":"stats"}"#.utf8)
        if let path = keyFile ?? ProcessInfo.processInfo.environment["STEER_PROBE_KEY_FILE"] {
            var writer = JSONWriter(capacity: 64)
            writer.raw(#"{"op":"stats","token":"#)
            writer.string(try AccessKeys.readSecret(file: path, what: "probe key file"))
            writer.raw("}")
            line = writer.bytes
        }
        let stats = try SteerClient.check(try connection.roundTrip(line))
        guard case .string("router")? = stats["role"] else { return }
        guard case .string? = stats["generation"] else { throw SteerError(.unavailable, "the router knows no generation yet (no replica answered)") }
        guard case .array(let shards)? = stats["shards"] else { throw SteerError(.internal, "router stats without shards") }
        var unavailable = 0
        if case .int(let count)? = stats["unavailable_shards"] { unavailable = Int(count) }
        if unavailable == shards.count || (allShards && unavailable > 0) {
            throw SteerError(.unavailable, "\(unavailable) of \(shards.count) shards have no readable replica")
        }
    }
}
