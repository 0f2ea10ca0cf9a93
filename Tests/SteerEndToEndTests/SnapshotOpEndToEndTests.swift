import Foundation
import SteerClient
import SteerCore
import SteerProtocol
import Testing

/// The admin op `snapshot` of a running server (`steer serve --snapshot-dir`; docs/operations.md,
/// "Backup and restore"): a snapshot taken while writes flow restores (`steer serve --restore`) to a
/// replica that follows the stream from the snapshot's sequence and converges with its peers; hostile
/// names write nothing.

private let token = "tok"

private func errorCode(_ answer: JSONObject) -> JSONValue? {
    guard case .object(let error)? = answer["error"] else { return nil }
    return error["code"]
}

private func vector(_ id: Int, round: Int) -> String {
    var generator = SeededGenerator(seed: UInt64(id * 7919 + round * 104_729 + 5))
    return "[" + (0..<4).map { _ in String(Float.random(in: -1...1, using: &generator)) }.joined(separator: ",") + "]"
}

private func upsertLine(_ ids: Range<Int>, round: Int) -> String {
    let items = ids.map { id in #"{"id":\#(id),"vector":\#(vector(id, round: round)),"title":"t\#(id)-r\#(round)"}"# }
    return #"{"op":"upsert","token":"tok","items":[\#(items.joined(separator: ","))]}"#
}

/// `get` of ids 0..<40, a user's history, a few searches and `applied_sequence`, once `minSequence` is applied.
private func view(_ server: ServerProcess, minSequence: UInt64) throws -> [JSONValue?] {
    let connection = try server.connection()
    let ids = (0..<40).map(String.init).joined(separator: ",")
    let got = try ok(connection, #"{"op":"get","token":"tok","ids":[\#(ids)],"min_sequence":\#(minSequence),"timeout_ms":20000}"#)
    var parts = [got["items"], got["missing"]]
    parts.append(try ok(connection, #"{"op":"get_user","token":"tok","user":"w"}"#)["events"])
    for query in 0..<4 {
        parts.append(try ok(connection, #"{"op":"search","token":"tok","vector":\#(vector(query, round: 99)),"k":8}"#)["hits"])
    }
    let stats = try ok(connection, #"{"op":"stats","token":"tok"}"#)
    parts.append(stats["applied_sequence"])
    parts.append(stats["items"])
    parts.append(stats["indexed"])
    return parts
}

@Suite(.serialized) struct SnapshotOpEndToEndTests {
    @Test func aSnapshotTakenUnderWriteLoad_restoresToAReplicaThatConverges() throws {
        let nats = try NATSNode()
        let cluster = "so" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let scratch = NSTemporaryDirectory() + "steer-snapshot-op-" + UUID().uuidString
        let snapshots = scratch + "/snapshots"
        let follow = ["--dimension", "4", "--admin-token", token, "--follow", nats.url, "--cluster", cluster, "--shard", "0"]
        let a = try ServerProcess(arguments: follow + ["--snapshot-dir", snapshots])
        let b = try ServerProcess(arguments: follow)
        defer {
            a.terminate(); b.terminate(); a.removeData(); b.removeData()
            try? FileManager.default.removeItem(atPath: scratch)
        }
        let toA = try a.connection()
        _ = try ok(toA, upsertLine(0..<20, round: 0))

        // Writes through B (items and events) while A takes the snapshot.
        let port = b.port
        let done = Locked(0)
        let stop = Locked(false)
        let writer = Thread {
            guard let connection = try? SteerConnection(host: "127.0.0.1", port: port) else { return }
            var round = 1
            while !stop.get() {
                _ = try? connection.roundTrip(Array(upsertLine((round % 4) * 10..<(round % 4) * 10 + 10, round: round).utf8))
                _ = try? connection.roundTrip(Array(#"{"op":"event","token":"tok","user":"w","item":\#(round),"ts":\#(round)}"#.utf8))
                _ = try? connection.roundTrip(Array(#"{"op":"delete","token":"tok","ids":[\#(round % 40)]}"#.utf8))
                done.withLock { $0 += 1 }
                round += 1
            }
        }
        writer.start()
        while done.get() < 10 { usleep(2_000) }
        let taken = try ok(toA, #"{"op":"snapshot","token":"tok","name":"under-load.1"}"#)
        let during = done.get()
        while done.get() < during + 10 { usleep(2_000) }
        stop.withLock { $0 = true }
        while !writer.isFinished { usleep(20_000) }

        let path = (snapshots as NSString).standardizingPath + "/under-load.1"
        #expect(taken["path"] == .string(path))
        guard case .int(let applied)? = taken["applied_sequence"], case .string(let checksum)? = taken["checksum"] else {
            Issue.record("snapshot answer lacks applied_sequence or checksum: \(taken)")
            return
        }
        #expect(applied > 0)
        #expect(checksum.hasPrefix("fnv1a64:") && checksum.count == 24, "FNV-1a-64 of snapshot.json: \(checksum)")
        #expect(FileManager.default.fileExists(atPath: path + "/snapshot.json"))

        // Hostile names and a repeated one write nothing; the op needs the admin key.
        for name in ["../escape", "a/b", "..", ".hidden", "", String(repeating: "n", count: 65), "x\\u0000y", "/tmp/abs"] {
            let answer = try call(toA, #"{"op":"snapshot","token":"tok","name":"\#(name)"}"#)
            #expect(errorCode(answer) == .string("invalid_request"), "name '\(name)': \(answer)")
        }
        #expect(errorCode(try call(toA, #"{"op":"snapshot","token":"tok","name":"under-load.1"}"#)) == .string("already_exists"))
        #expect(errorCode(try call(toA, #"{"op":"snapshot","name":"nokey"}"#)) == .string("unauthorized"))
        #expect(errorCode(try call(try b.connection(), #"{"op":"snapshot","token":"tok","name":"b"}"#)) == .string("invalid_request"),
                "a server without --snapshot-dir refuses")
        #expect(try FileManager.default.contentsOfDirectory(atPath: snapshots) == ["under-load.1"])
        #expect(!FileManager.default.fileExists(atPath: scratch + "/escape"))

        // C restored from it follows from the snapshot's sequence and ends identical to A and B.
        let c = try ServerProcess(arguments: follow + ["--restore", path])
        defer { c.terminate(); c.removeData() }
        let last = try sequence(of: try ok(toA, upsertLine(35..<40, round: 1000)))
        #expect(last > UInt64(applied))
        let expected = try view(a, minSequence: last)
        #expect(try view(b, minSequence: last) == expected)
        #expect(try view(c, minSequence: last) == expected, "the replica restored from a snapshot taken under load matches its peers")
        #expect(expected[expected.count - 3] == .int(Int64(last)))
    }

    /// A snapshot holds the named collections and their catalog too: taken while a named collection and
    /// the default one are written, it restores to a replica that has the collection and the alias and
    /// ends identical to its peers in both collections.
    @Test func aSnapshotWithNamedCollections_restoresThemAndTheReplicaConverges() throws {
        let nats = try NATSNode()
        let cluster = "sc" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let scratch = NSTemporaryDirectory() + "steer-snapshot-op-" + UUID().uuidString
        let snapshots = scratch + "/snapshots"
        let follow = ["--dimension", "4", "--admin-token", token, "--follow", nats.url, "--cluster", cluster, "--shard", "0"]
        let a = try ServerProcess(arguments: follow + ["--snapshot-dir", snapshots])
        let b = try ServerProcess(arguments: follow)
        defer {
            a.terminate(); b.terminate(); a.removeData(); b.removeData()
            try? FileManager.default.removeItem(atPath: scratch)
        }
        let toA = try a.connection()
        _ = try ok(toA, #"{"op":"create_collection","token":"tok","name":"books","dimension":4}"#)
        _ = try ok(toA, #"{"op":"alias","token":"tok","alias":"shelf","collection":"books"}"#)
        @Sendable func named(_ line: String) -> String { line.replacingOccurrences(of: #""op":"upsert","#, with: #""op":"upsert","collection":"shelf","#) }
        _ = try ok(toA, named(upsertLine(0..<20, round: 0)))

        let port = b.port
        let done = Locked(0)
        let stop = Locked(false)
        let writer = Thread {
            guard let connection = try? SteerConnection(host: "127.0.0.1", port: port) else { return }
            var round = 1
            while !stop.get() {
                _ = try? connection.roundTrip(Array(named(upsertLine((round % 4) * 10..<(round % 4) * 10 + 10, round: round)).utf8))
                _ = try? connection.roundTrip(Array(upsertLine((round % 4) * 10..<(round % 4) * 10 + 5, round: round).utf8))
                _ = try? connection.roundTrip(Array(#"{"op":"delete","token":"tok","collection":"books","ids":[\#(round % 40)]}"#.utf8))
                done.withLock { $0 += 1 }
                round += 1
            }
        }
        writer.start()
        while done.get() < 10 { usleep(2_000) }
        let taken = try ok(toA, #"{"op":"snapshot","token":"tok","name":"with-books"}"#)
        let during = done.get()
        while done.get() < during + 10 { usleep(2_000) }
        stop.withLock { $0 = true }
        while !writer.isFinished { usleep(20_000) }
        #expect(errorCode(try call(toA, #"{"op":"snapshot","token":"tok","name":"one","collection":"books"}"#)) == .string("invalid_request"))
        guard case .string(let path)? = taken["path"] else { Issue.record("no path: \(taken)"); return }
        let manifest = try String(contentsOfFile: path + "/snapshot.json", encoding: .utf8)
        #expect(manifest.contains("\"collections\""))
        #expect(FileManager.default.fileExists(atPath: path + "/collections.json"))
        #expect(FileManager.default.fileExists(atPath: path + "/collections/books/store/CURRENT"))

        let c = try ServerProcess(arguments: follow + ["--restore", path])
        defer { c.terminate(); c.removeData() }
        let last = try sequence(of: try ok(toA, named(upsertLine(35..<40, round: 1000))))
        func books(_ server: ServerProcess) throws -> [JSONValue?] {
            let connection = try server.connection()
            let ids = (0..<40).map(String.init).joined(separator: ",")
            let got = try ok(connection, #"{"op":"get","token":"tok","collection":"shelf","ids":[\#(ids)],"min_sequence":\#(last),"timeout_ms":20000}"#)
            let described = try ok(connection, #"{"op":"describe_collection","token":"tok","name":"books"}"#)
            let search = try ok(connection, #"{"op":"search","token":"tok","collection":"books","vector":\#(vector(1, round: 99)),"k":8}"#)
            return [got["items"], got["missing"], got["collection"], described["items"], described["aliases"], search["hits"]]
        }
        let expected = try books(a)
        #expect(expected[0] != nil && expected[3] != .int(0))
        #expect(try books(b) == expected)
        #expect(try books(c) == expected, "the replica restored from a snapshot with a named collection matches its peers there")
        #expect(try view(c, minSequence: last) == (try view(a, minSequence: last)))
    }
}
