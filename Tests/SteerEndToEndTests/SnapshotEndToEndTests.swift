import Foundation
import SteerClient
import SteerCore
import SteerNATS
import SteerProtocol
import Testing

/// `steer snapshot` and `steer serve --restore` (docs/operations.md, "Backup and restore"; docs/scaling.md):
/// a replica made from a snapshot follows the stream from the snapshot's sequence and ends identical to
/// its peers; a damaged snapshot stops the server with a specific error.

private let token = "tok"

private func vector(_ id: Int, round: Int) -> String {
    var generator = SeededGenerator(seed: UInt64(id * 7919 + round * 104_729 + 1))
    return "[" + (0..<4).map { _ in String(Float.random(in: -1...1, using: &generator)) }.joined(separator: ",") + "]"
}

private func upsertLine(_ ids: Range<Int>, round: Int) -> String {
    let items = ids.map { id in #"{"id":\#(id),"vector":\#(vector(id, round: round)),"title":"t\#(id)-r\#(round)","tags":["r\#(round % 3)"]}"# }
    return #"{"op":"upsert","token":"tok","items":[\#(items.joined(separator: ","))]}"#
}

/// `get` of ids 0..<60 and `search` hits for a few queries, once `minSequence` is applied.
private func view(_ server: ServerProcess, minSequence: UInt64) throws -> [JSONValue?] {
    let connection = try server.connection()
    let ids = (0..<60).map(String.init).joined(separator: ",")
    let got = try ok(connection, #"{"op":"get","token":"tok","ids":[\#(ids)],"min_sequence":\#(minSequence),"timeout_ms":20000}"#)
    var parts = [got["items"], got["missing"]]
    for query in 0..<4 {
        parts.append(try ok(connection, #"{"op":"search","token":"tok","vector":\#(vector(query, round: 99)),"k":8}"#)["hits"])
    }
    parts.append(try ok(connection, #"{"op":"stats","token":"tok"}"#)["applied_sequence"])
    return parts
}

/// Runs `steer ARGUMENTS`; returns the exit status and standard output + error.
private func runSteer(_ arguments: [String]) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try steerBinary())
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, output)
}

@Suite(.serialized) struct SnapshotEndToEndTests {
    @Test func aReplicaRestoredFromASnapshotFollowsAndMatchesItsPeers() async throws {
        let nats = try NATSNode()
        let cluster = "sn" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let follow = ["--dimension", "4", "--admin-token", token, "--follow", nats.url, "--cluster", cluster, "--shard", "0"]
        let a = try ServerProcess(arguments: follow)
        var b = try ServerProcess(arguments: follow)
        let scratch = NSTemporaryDirectory() + "steer-snapshot-e2e-" + UUID().uuidString
        defer {
            a.terminate(); b.terminate(); a.removeData(); b.removeData()
            try? FileManager.default.removeItem(atPath: scratch)
        }
        let toA = try a.connection()
        var last: UInt64 = 0
        for start in stride(from: 0, to: 40, by: 10) { last = try sequence(of: try ok(toA, upsertLine(start..<start + 10, round: 1))) }
        last = try sequence(of: try ok(toA, #"{"op":"delete","token":"tok","ids":[2,3]}"#))
        _ = try view(b, minSequence: last)

        // Snapshot B while it is stopped; a running server's store is locked and the command refuses.
        let snapshot = scratch + "/snap"
        let refused = try runSteer(["snapshot", "--data", a.directory, "--out", scratch + "/not-written"])
        #expect(refused.0 != 0 && refused.1.contains("steer snapshot:"), "a running server's directory: \(refused.1)")
        #expect(!FileManager.default.fileExists(atPath: scratch + "/not-written"))
        #expect(b.terminate() == 0)
        let written = try runSteer(["snapshot", "--data", b.directory, "--out", snapshot])
        #expect(written.0 == 0, "\(written.1)")
        #expect(written.1.contains("applied_sequence \(last)"), "\(written.1)")
        b = try ServerProcess(directory: b.directory, arguments: follow)

        // More writes after the snapshot: overwrites and deletes of the same ids, and new ones.
        for start in stride(from: 20, to: 60, by: 10) { last = try sequence(of: try ok(toA, upsertLine(start..<start + 10, round: 2))) }
        last = try sequence(of: try ok(toA, #"{"op":"delete","token":"tok","ids":[5,25,55]}"#))

        // C starts from the snapshot and follows from its sequence; B (the snapshot's source, same store
        // id) keeps following too: each has its own consumer, so both get every write.
        let c = try ServerProcess(arguments: follow + ["--restore", snapshot])
        defer { c.terminate(); c.removeData() }
        last = try sequence(of: try ok(toA, upsertLine(0..<5, round: 3)))
        let expected = try view(a, minSequence: last)
        #expect(try view(c, minSequence: last) == expected, "the restored replica matches its peers")
        #expect(try view(b, minSequence: last) == expected, "the snapshot's source still gets every write")
        #expect(expected.last == .int(Int64(last)))
        // C consumes under its own replica id: two replicas sharing one consumer would split the messages.
        let replicaID = String(decoding: try Data(contentsOf: URL(fileURLWithPath: c.directory + "/replica_id")), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let natsConnection = try await NATSConnection.connect(host: "127.0.0.1", port: nats.port)
        let info = try await JetStreamContext(connection: natsConnection).consumerInfo(stream: "steer-\(cluster)-shard-0", consumer: "replica-\(replicaID)")
        await natsConnection.close()
        #expect(info.delivered.streamSeq == last, "C's own consumer delivered through the last write")

        // A damaged snapshot: the server refuses to start, names the file, and leaves no data directory.
        let damaged = scratch + "/damaged"
        try FileManager.default.copyItem(atPath: snapshot, toPath: damaged)
        try Data("{}".utf8).write(to: URL(fileURLWithPath: damaged + "/steer.json"))
        let target = scratch + "/target"
        do {
            let started = try ServerProcess(directory: target, arguments: follow + ["--restore", damaged])
            started.terminate()
            Issue.record("a damaged snapshot was restored")
        } catch {
            #expect("\(error)".contains("steer.json"), "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: target + "/store"))
    }
}
