import Foundation
import SteerClient
import SteerCore
import SteerNATS
import SteerProtocol
import Testing

/// Stream retention (docs/scaling.md, "Retention"): `--stream-max-messages`/`--stream-max-age` set the
/// shard stream's limits, and a replica whose next message the stream no longer holds refuses to start
/// (exit code 3, telling the operator to restore from a snapshot) or, while running, stops applying
/// rather than skipping the gap; a real `nats-server`.

private let token = "tok"

private func arguments(_ nats: NATSNode, cluster: String, extra: [String] = []) -> [String] {
    ["--dimension", "2", "--admin-token", token, "--follow", nats.url, "--cluster", cluster, "--shard", "0"] + extra
}

private func upsert(_ connection: SteerConnection, _ id: Int) throws -> JSONObject {
    try ok(connection, #"{"op":"upsert","token":"tok","items":[{"id":\#(id),"vector":[1,\#(id)]}]}"#)
}

private func streamConfig(_ nats: NATSNode, cluster: String) async throws -> StreamInfo {
    let client = try await NATSConnection.connect(host: "127.0.0.1", port: nats.port)
    defer { Task { await client.close() } }
    return try await JetStreamContext(connection: client).streamInfo("steer-\(cluster)-shard-0")
}

/// Runs `steer serve ARGUMENTS` (port 0) until it exits.
///
/// - Returns: its exit status and what it wrote to stderr.
private func serveUntilExit(arguments: [String]) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try steerBinary())
    process.arguments = ["serve", "--port", "0", "--log-level", "warning"] + arguments
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, stderr)
}

@Suite(.serialized) struct FollowRetentionEndToEndTests {
    @Test func aReplicaBehindTheStreamsRetention_refusesToStart_withExitCode3() async throws {
        let nats = try NATSNode()
        let cluster = "rt" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let a = try ServerProcess(arguments: arguments(nats, cluster: cluster, extra: ["--stream-max-messages", "5", "--stream-max-age", "3600"]))
        let b = try ServerProcess(arguments: arguments(nats, cluster: cluster))
        let bDirectory = b.directory
        defer { a.terminate(); b.terminate(); a.removeData(); b.removeData() }
        var info = try await streamConfig(nats, cluster: cluster)
        #expect(info.config.maxMsgs == 5)
        #expect(info.config.maxAgeNanos == 3_600_000_000_000)
        #expect(info.config.discard == .old)

        let toA = try a.connection()
        for id in 0..<3 { _ = try upsert(toA, id) }
        _ = try ok(try b.connection(), #"{"op":"get","token":"tok","ids":[2],"min_sequence":3,"timeout_ms":20000}"#)
        #expect(b.terminate() == 0)
        // B is stopped through sequence 3; the stream keeps only the newest 5 of 13 messages.
        for id in 3..<13 { _ = try upsert(toA, id) }
        info = try await streamConfig(nats, cluster: cluster)
        #expect(info.state.firstSeq == 9 && info.state.lastSeq == 13)

        let (status, stderr) = try serveUntilExit(arguments: ["--data", bDirectory] + arguments(nats, cluster: cluster))
        #expect(status == 3, "\(stderr)")
        #expect(stderr.contains("holds sequences from 9 on but the replica needs 4"), "\(stderr)")
        #expect(stderr.contains("steer serve --restore"), "\(stderr)")
        // A new replica on an empty directory needs sequence 1: the same.
        let fresh = NSTemporaryDirectory() + "steer-e2e-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: fresh) }
        let (freshStatus, freshErrors) = try serveUntilExit(arguments: ["--data", fresh] + arguments(nats, cluster: cluster))
        #expect(freshStatus == 3 && freshErrors.contains("needs 1"), "\(freshErrors)")

        // A replica started without the flags leaves the limits as they are; with another, it sets that one.
        let aDirectory = a.directory
        #expect(a.terminate() == 0)
        var restarted = try ServerProcess(directory: aDirectory, arguments: arguments(nats, cluster: cluster))
        #expect(try await streamConfig(nats, cluster: cluster).config.maxMsgs == 5)
        #expect(restarted.terminate() == 0)
        restarted = try ServerProcess(directory: aDirectory, arguments: arguments(nats, cluster: cluster, extra: ["--stream-max-messages", "1000"]))
        defer { restarted.terminate() }
        info = try await streamConfig(nats, cluster: cluster)
        #expect(info.config.maxMsgs == 1000)
        #expect(info.config.maxAgeNanos == 3_600_000_000_000, "a limit not given is left as it is")
        _ = try ok(try restarted.connection(), #"{"op":"get","token":"tok","ids":[12]}"#)
    }

    @Test func aRunningReplicaThatFallsBehind_stopsApplying_insteadOfSkippingTheGap() async throws {
        let nats = try NATSNode()
        let cluster = "rg" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let a = try ServerProcess(arguments: arguments(nats, cluster: cluster, extra: ["--stream-max-messages", "5"]))
        let b = try ServerProcess(arguments: arguments(nats, cluster: cluster))
        defer { a.terminate(); b.terminate(); a.removeData(); b.removeData() }
        let toA = try a.connection()
        let toB = try b.connection()
        for id in 0..<3 { _ = try upsert(toA, id) }
        _ = try ok(toB, #"{"op":"get","token":"tok","ids":[2],"min_sequence":3,"timeout_ms":20000}"#)
        // B is paused while the stream takes 10 more writes and keeps only the newest 5.
        kill(b.process.processIdentifier, SIGSTOP)
        for id in 3..<13 { _ = try upsert(toA, id) }
        kill(b.process.processIdentifier, SIGCONT)
        try await Task.sleep(for: .seconds(2))
        let stats = try ok(toB, #"{"op":"stats","token":"tok"}"#)
        guard case .int(let applied)? = stats["applied_sequence"] else { Issue.record("no applied_sequence: \(stats)"); return }
        #expect(applied >= 3 && applied < 8, "B applied nothing past the gap: \(stats)")
        let write = try toB.roundTrip(Array(#"{"op":"upsert","token":"tok","items":[{"id":99,"vector":[1,1]}],"timeout_ms":2000}"#.utf8))
        #expect(String(decoding: write, as: UTF8.self).contains("unavailable"), "writes through a replica that fell behind are refused")
    }
}
