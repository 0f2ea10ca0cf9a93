import Foundation
import SteerClient
import SteerCore
import Testing

private let token = "history-token"

/// Sends a JSON object and returns the answer as a dictionary.
private func call(_ connection: SteerConnection, _ request: [String: Any]) throws -> [String: Any] {
    let line = try JSONSerialization.data(withJSONObject: request)
    let response = try connection.roundTrip([UInt8](line))
    guard let object = try JSONSerialization.jsonObject(with: Data(response)) as? [String: Any] else {
        throw SteerError(.internal, "response is not an object: \(String(decoding: response, as: UTF8.self))")
    }
    return object
}

private func ids(_ list: Any?) -> [Int] { ((list as? [Any]) ?? []).compactMap { ($0 as? NSNumber)?.intValue } }

private func hitIDs(_ response: [String: Any]) -> [Int] {
    ((response["hits"] as? [[String: Any]]) ?? []).compactMap { ($0["id"] as? NSNumber)?.intValue }
}

/// (item, ts) of the events of a `get_user` answer, in the answer's order.
private func events(_ response: [String: Any]) -> [[Int]] {
    ((response["events"] as? [[String: Any]]) ?? []).map { [($0["item"] as? NSNumber)?.intValue ?? -1, ($0["ts"] as? NSNumber)?.intValue ?? -1] }
}

/// Twenty 4-d items with ids 0…19 (vectors from a seed).
private func upsertCatalog(_ connection: SteerConnection) throws {
    var generator = SeededGenerator(seed: 20)
    let items: [[String: Any]] = (0..<20).map { index in
        ["id": index, "vector": (0..<4).map { _ in Double(Float.random(in: -1...1, using: &generator)) }, "tags": ["t\(index % 3)"]]
    }
    let answer = try call(connection, ["op": "upsert", "token": token, "items": items])
    guard answer["ok"] as? Bool == true else { throw SteerError(.internal, "upsert failed: \(answer)") }
}

@Suite(.serialized) struct HistoryEndToEndTests {
    @Test func acknowledgedEventsSurviveSIGKILL() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", token, "--history-cap", "100000"])
        defer { server.removeData() }
        // Two writers: single events and batches, each remembering what was acknowledged, while the
        // server is killed under them.
        let acknowledged = Locked<[String: [[Int]]]>([:])
        let stop = Locked(false)
        let group = DispatchGroup()
        let port = server.port
        for writer in 0..<2 {
            DispatchQueue.global().async(group: group) {
                guard let connection = try? SteerConnection(host: "127.0.0.1", port: port) else { return }
                let user = "writer-\(writer)"
                var sent = 0
                while !stop.get() {
                    let batch = writer == 1
                    let count = batch ? 8 : 1
                    let entries: [[String: Any]] = (0..<count).map { offset in
                        ["user": user, "item": (sent + offset) % 50, "ts": 1_000 + (sent + offset) / 3]
                    }
                    let request: [String: Any] = batch ? ["op": "event", "token": token, "events": entries]
                        : ["op": "event", "token": token, "user": user, "item": sent % 50, "ts": 1_000 + sent / 3]
                    guard let answer = try? call(connection, request), answer["ok"] as? Bool == true else { break }
                    acknowledged.withLock { table in
                        for offset in 0..<count { table[user, default: []].append([(sent + offset) % 50, 1_000 + (sent + offset) / 3]) }
                    }
                    sent += count
                }
            }
        }
        let started = Date()
        while acknowledged.get().values.map(\.count).reduce(0, +) < 300, Date().timeIntervalSince(started) < 60 {
            usleep(5_000)
        }
        server.kill()
        stop.withLock { $0 = true }
        group.wait()
        let acked = acknowledged.get()
        #expect(acked.values.map(\.count).reduce(0, +) >= 300)

        let restarted = try ServerProcess(directory: server.directory, arguments: ["--admin-token", token, "--history-cap", "100000"])
        defer { restarted.terminate() }
        let connection = try restarted.connection()
        for (user, expected) in acked {
            let answer = try call(connection, ["op": "get_user", "token": token, "user": user])
            let stored = events(answer)
            // Every acknowledged event is there, in order (timestamps rise, ties in arrival order); one
            // more may follow (written but killed before its answer went out).
            #expect(stored.count >= expected.count, "\(user): \(stored.count) stored, \(expected.count) acknowledged")
            #expect(Array(stored.prefix(expected.count)) == expected, "\(user)")
        }
    }

    @Test func eventsGetUserDeleteUserAndRecommendByUser() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", token, "--public-reads", "true", "--history-cap", "5"])
        defer {
            server.terminate()
            server.removeData()
        }
        let connection = try server.connection()
        try upsertCatalog(connection)

        // Events need the admin key, also with public reads.
        let refused = try call(connection, ["op": "event", "user": "u1", "item": 3])
        #expect((refused["error"] as? [String: Any])?["code"] as? String == "unauthorized")
        let getRefused = try call(connection, ["op": "get_user", "user": "u1"])
        #expect((getRefused["error"] as? [String: Any])?["code"] as? String == "unauthorized")

        // One event, then a batch with an unknown item: recorded and reported.
        let single = try call(connection, ["op": "event", "token": token, "user": "u1", "item": 3, "kind": "click", "ts": 10])
        #expect(single["recorded"] as? Int == 1 && ids(single["unknown_items"]).isEmpty, "\(single)")
        let batch = try call(connection, ["op": "event", "token": token, "events": [
            ["user": "u1", "item": 5, "ts": 20], ["user": "u1", "item": 999, "ts": 30], ["user": "u2", "item": 7, "ts": 5],
        ]])
        #expect(batch["recorded"] as? Int == 3 && ids(batch["unknown_items"]) == [999], "\(batch)")
        let u1 = try call(connection, ["op": "get_user", "token": token, "user": "u1"])
        #expect(events(u1) == [[3, 10], [5, 20], [999, 30]])
        #expect(((u1["events"] as? [[String: Any]])?.first?["kind"] as? String) == "click")
        // Without ts the server's clock orders the event last.
        _ = try call(connection, ["op": "event", "token": token, "user": "u1", "item": 4])
        #expect(events(try call(connection, ["op": "get_user", "token": token, "user": "u1"])).last?.first == 4)

        // recommend by user = recommend with the stored history (the mean encoder), and the stored
        // items are left out of the hits.
        let byUser = try call(connection, ["op": "recommend", "user": "u1", "k": 5])
        let byHistory = try call(connection, ["op": "recommend", "history": [3, 5, 999, 4], "k": 5])
        #expect(byUser["ok"] as? Bool == true, "\(byUser)")
        #expect(hitIDs(byUser) == hitIDs(byHistory))
        #expect(Set(hitIDs(byUser)).isDisjoint(with: [3, 4, 5]))
        #expect(ids(byUser["unknown_history"]) == [999])
        // max_history reads only the most recent stored items; exclusion still covers all of them.
        let recent = try call(connection, ["op": "recommend", "user": "u1", "max_history": 1, "k": 5])
        let lastOnly = try call(connection, ["op": "recommend", "history": [4], "k": 8])
        #expect(hitIDs(recent) == Array(hitIDs(lastOnly).filter { ![3, 5].contains($0) }.prefix(5)))
        // user besides history: the explicit items follow the stored ones.
        let both = try call(connection, ["op": "encode", "user": "u2", "history": [3]])
        let explicit = try call(connection, ["op": "encode", "history": [7, 3]])
        #expect((both["vector"] as? [NSNumber])?.map(\.floatValue) == (explicit["vector"] as? [NSNumber])?.map(\.floatValue))

        // The cap (5): the oldest go.
        for item in 10..<14 { _ = try call(connection, ["op": "event", "token": token, "user": "u1", "item": item, "ts": 9_000_000_000_000 + item]) }
        let capped = events(try call(connection, ["op": "get_user", "token": token, "user": "u1"]))
        #expect(capped.map { $0[0] } == [4, 10, 11, 12, 13])

        // delete_user: gone for good, the other user untouched.
        let deleted = try call(connection, ["op": "delete_user", "token": token, "user": "u1"])
        #expect(deleted["deleted"] as? Int == 5, "\(deleted)")
        #expect(events(try call(connection, ["op": "get_user", "token": token, "user": "u1"])).isEmpty)
        #expect(events(try call(connection, ["op": "get_user", "token": token, "user": "u2"])) == [[7, 5]])
        // An unknown user has an empty history: the mean encoder then needs explicit items.
        let empty = try call(connection, ["op": "recommend", "user": "u1", "k": 5])
        #expect((empty["error"] as? [String: Any])?["code"] as? String == "invalid_request", "\(empty)")
    }

    @Test func malformedHistoryRequestsAreRefusedByName() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", token, "--max-batch", "4"])
        defer {
            server.terminate()
            server.removeData()
        }
        let connection = try server.connection()
        let cases: [(String, String)] = [
            (#"{"op":"event","token":"\#(token)","item":1}"#, "invalid_request"),
            (#"{"op":"event","token":"\#(token)","user":"u"}"#, "invalid_request"),
            (#"{"op":"event","token":"\#(token)","user":"","item":1}"#, "invalid_request"),
            (#"{"op":"event","token":"\#(token)","user":"u","item":1,"ts":1.5}"#, "invalid_request"),
            (#"{"op":"event","token":"\#(token)","user":"u","item":1,"kind":""}"#, "invalid_request"),
            (#"{"op":"event","token":"\#(token)","user":"u","item":1,"kind":"\#(String(repeating: "k", count: 65))"}"#, "too_large"),
            (#"{"op":"event","token":"\#(token)","user":"\#(String(repeating: "u", count: 513))","item":1}"#, "too_large"),
            (#"{"op":"event","token":"\#(token)","events":[]}"#, "invalid_request"),
            (#"{"op":"event","token":"\#(token)","events":[{"user":"u","item":1},{"user":"u","item":1},{"user":"u","item":1},{"user":"u","item":1},{"user":"u","item":1}]}"#, "too_large"),
            (#"{"op":"event","token":"\#(token)","events":[{"user":"u","item":1,"extra":2}]}"#, "invalid_request"),
            (#"{"op":"event","token":"\#(token)","events":[{"user":"u","item":1}],"user":"u"}"#, "invalid_request"),
            (#"{"op":"get_user","token":"\#(token)"}"#, "invalid_request"),
            (#"{"op":"get_user","token":"\#(token)","user":"u","limit":0}"#, "invalid_request"),
            (#"{"op":"delete_user","token":"\#(token)","user":[1]}"#, "invalid_request"),
            (#"{"op":"recommend","token":"\#(token)","k":3}"#, "invalid_request"),
            (#"{"op":"recommend","token":"\#(token)","history":[1],"max_history":3}"#, "invalid_request"),
            (#"{"op":"recommend","token":"\#(token)","user":"u","max_history":0}"#, "invalid_request"),
        ]
        for (line, code) in cases {
            let response = try connection.roundTrip(Array(line.utf8))
            let object = try JSONSerialization.jsonObject(with: Data(response)) as? [String: Any]
            #expect((object?["error"] as? [String: Any])?["code"] as? String == code, "\(line) → \(String(decoding: response, as: UTF8.self))")
        }
        // The store is untouched by the refused events.
        let answer = try call(connection, ["op": "get_user", "token": token, "user": "u"])
        #expect(events(answer).isEmpty)
    }
}

/// User histories through `steer route`: events land on every replica of the user's shard and nowhere
/// else; `recommend` by user through the router answers as one server does with the same history.
@Suite(.serialized) struct RouteHistoryEndToEndTests {
    @Test func eventsAreRoutedByUserAndRecommendReadsTheHistoryThere() throws {
        let shardCount = 2
        let sharding = try Sharding(shardCount: shardCount)
        var generator = SeededGenerator(seed: 33)
        let items: [[String: Any]] = (0..<120).map { index in
            ["id": index, "vector": (0..<4).map { _ in Double(Float.random(in: -1...1, using: &generator)) }]
        }
        let arguments = ["--dimension", "4", "--sync-writes", "false"]
        let reference = try ServerProcess(arguments: arguments)
        defer {
            reference.terminate()
            reference.removeData()
        }
        // Shard 0 has two replicas, shard 1 one.
        let servers = try (0..<3).map { _ in try ServerProcess(arguments: arguments) }
        defer {
            for server in servers {
                server.terminate()
                server.removeData()
            }
        }
        let owners = [[servers[0], servers[1]], [servers[2]]]
        _ = try call(try reference.connection(), ["op": "upsert", "items": items])
        for (shard, replicas) in owners.enumerated() {
            let mine = items.filter { sharding.shard(of: .int(Int64($0["id"] as! Int))) == shard }
            for server in replicas { _ = try call(try server.connection(), ["op": "upsert", "items": mine]) }
        }
        let shardFlags = owners.flatMap { replicas in ["--shard", replicas.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")] }
        let router = try ServerProcess(arguments: shardFlags + ["--health-interval-ms", "100"], route: true)
        defer { router.terminate() }
        let connection = try router.connection()
        let referenceConnection = try reference.connection()

        // Users of both shards; one batch with events of several users.
        let users = (0..<6).map { "user-\($0)" }
        #expect(Set(users.map { sharding.shard(of: .string($0)) }).count == shardCount)
        var expected: [String: [[Int]]] = [:]
        var entries: [[String: Any]] = []
        for (number, user) in users.enumerated() {
            for step in 0..<4 {
                let item = (number * 17 + step * 5) % 120
                entries.append(["user": user, "item": item, "ts": 100 + step])
                expected[user, default: []].append([item, 100 + step])
            }
        }
        let recorded = try call(connection, ["op": "event", "events": entries])
        #expect(recorded["recorded"] as? Int == entries.count, "\(recorded)")
        let single = try call(connection, ["op": "event", "user": "user-0", "item": 7, "ts": 200])
        #expect(single["recorded"] as? Int == 1, "\(single)")
        expected["user-0", default: []].append([7, 200])

        for user in users {
            let shard = sharding.shard(of: .string(user))
            #expect(events(try call(connection, ["op": "get_user", "user": user])) == expected[user], "\(user) through the router")
            // On every replica of its shard, on no other server.
            for (owner, replicas) in owners.enumerated() {
                for server in replicas {
                    let stored = events(try call(try server.connection(), ["op": "get_user", "user": user]))
                    #expect(stored == (owner == shard ? expected[user]! : []), "\(user) on shard \(owner)")
                }
            }
            // recommend by user through the router = one server with the same explicit history.
            let history = expected[user]!.map { $0[0] }
            let mine = try call(connection, ["op": "recommend", "user": user, "k": 6])
            let theirs = try call(referenceConnection, ["op": "recommend", "history": history, "k": 6])
            #expect(mine["ok"] as? Bool == true, "\(mine)")
            #expect(hitIDs(mine) == hitIDs(theirs), "\(user)")
            #expect(Set(hitIDs(mine)).isDisjoint(with: history))
            let encoded = try call(connection, ["op": "encode", "user": user, "max_history": 2, "history": [1]])
            let explicit = try call(referenceConnection, ["op": "encode", "history": Array(history.suffix(2)) + [1]])
            #expect((encoded["vector"] as? [NSNumber])?.map(\.floatValue) == (explicit["vector"] as? [NSNumber])?.map(\.floatValue))
        }

        // delete_user through the router empties every replica of the shard.
        let deleted = try call(connection, ["op": "delete_user", "user": "user-0"])
        #expect(deleted["deleted"] as? Int == expected["user-0"]!.count, "\(deleted)")
        for server in servers { #expect(events(try call(try server.connection(), ["op": "get_user", "user": "user-0"])).isEmpty) }
    }
}
