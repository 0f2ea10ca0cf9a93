import Foundation
import SteerClient
import SteerCore
import Testing

/// A file in a fresh temporary directory (keys files, key files), removed by the caller.
private func secretFile(_ text: String) throws -> String {
    let path = NSTemporaryDirectory() + "steer-e2e-key-" + UUID().uuidString
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    return path
}

private func call(_ connection: SteerConnection, _ request: [String: Any]) throws -> [String: Any] {
    let response = try connection.roundTrip(Array(try JSONSerialization.data(withJSONObject: request)))
    return try #require(try JSONSerialization.jsonObject(with: Data(response)) as? [String: Any])
}

private func code(_ response: [String: Any]) -> String {
    if response["ok"] as? Bool == true { return "ok" }
    return ((response["error"] as? [String: Any])?["code"] as? String) ?? "?"
}

private func probe(_ arguments: [String]) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try steerBinary())
    process.arguments = ["probe"] + arguments
    process.standardError = Pipe()
    process.standardOutput = Pipe()
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
}

/// `steer route` checks keys itself, before any action, and talks to the shards with its own key
/// (`--shard-key-file`): a swap with a bad key loads nothing, holds no read and reaches no shard; a read
/// key searches but cannot write or swap; the shards refuse anyone without a key.
@Suite(.serialized) struct RouteAuthEndToEndTests {
    @Test func theRouterChecksKeysBeforeActingAndUsesItsOwnKeyWithTheShards() throws {
        let shardAdmin = "router-to-shards-0123456789"
        let reader = "client-read-key-0123456789"
        let admin = "client-admin-key-0123456789"
        let shardKeys = try secretFile(#"{"keys":[{"name":"router","scope":"admin","key":"\#(shardAdmin)"}]}"#)
        let routerKeys = try secretFile(#"{"keys":[{"name":"app","scope":"read","key":"\#(reader)"},{"name":"ops","scope":"admin","key":"\#(admin)"}]}"#)
        let shardKeyFile = try secretFile(shardAdmin + "\n")
        defer { for path in [shardKeys, routerKeys, shardKeyFile] { try? FileManager.default.removeItem(atPath: path) } }

        let servers = try (0..<2).map { _ in try ServerProcess(arguments: ["--dimension", "2", "--sync-writes", "false", "--keys-file", shardKeys]) }
        defer { for server in servers { server.removeData() } }
        let router = try ServerProcess(arguments: servers.flatMap { ["--shard", "127.0.0.1:\($0.port)"] }
                                           + ["--keys-file", routerKeys, "--shard-key-file", shardKeyFile, "--health-interval-ms", "100"], route: true)
        let connection = try router.connection()

        // The shards refuse callers without a key; the router's health checks (with its key) found them.
        #expect(code(try call(try servers[0].connection(), ["op": "stats"])) == "unauthorized")
        let items = (0..<20).map { ["id": $0, "vector": [Double($0) / 20, 1 - Double($0) / 20]] as [String: Any] }
        #expect(code(try call(connection, ["op": "upsert", "items": items])) == "unauthorized")
        #expect(code(try call(connection, ["op": "upsert", "items": items, "token": reader])) == "unauthorized")
        #expect(try call(connection, ["op": "upsert", "items": items, "token": admin])["upserted"] as? Int == 20)

        let search: [String: Any] = ["op": "search", "vector": [1, 0], "k": 3]
        #expect(code(try call(connection, search)) == "unauthorized")
        #expect(code(try call(connection, search.merging(["token": shardAdmin]) { $1 })) == "unauthorized")
        let found = try call(connection, search.merging(["token": reader]) { $1 })
        #expect(code(found) == "ok", "\(found)")
        #expect((found["hits"] as? [[String: Any]])?.map { $0["id"] as? Int } == [19, 18, 17])
        #expect(code(try call(connection, ["op": "get", "ids": [3], "token": reader])) == "ok")
        #expect(code(try call(connection, ["op": "stats", "token": reader])) == "ok")
        #expect(code(try call(connection, ["op": "ping"])) == "ok")
        #expect(code(try call(connection, ["op": "delete", "ids": [3], "token": reader])) == "unauthorized")

        // A swap with a bad or read-only key: refused at once, before the checkpoint is loaded (it does
        // not exist: loading it would answer not_found or io_error) and before any shard sees it.
        for token in [nil, "wrong-key-0123456789", reader] as [String?] {
            var swap: [String: Any] = ["op": "swap", "generation": "g2", "checkpoint": "/nonexistent/checkpoint"]
            if let token { swap["token"] = token }
            let refused = try call(connection, swap)
            #expect(code(refused) == "unauthorized", "\(refused)")
            var plain: [String: Any] = ["op": "swap", "generation": "g2"]
            if let token { plain["token"] = token }
            #expect(code(try call(connection, plain)) == "unauthorized")
        }
        let stats = try call(connection, ["op": "stats", "token": admin])
        let counters = (stats["counters"] as? [String: Any]) ?? [:]
        #expect(counters["held_by_swap"] as? Int == 0)
        #expect(counters["swaps"] as? Int == 0)
        #expect(stats["generation"] as? String == "g1")
        for server in servers {
            let shardStats = try call(try server.connection(), ["op": "stats", "token": shardAdmin])
            #expect(shardStats["generation"] as? String == "g1")
            #expect((shardStats["ops"] as? [String: Any])?["swap"] == nil, "a shard saw a swap: \(shardStats["ops"] ?? "")")
        }
        // Reads are not held: a search right after the refused swaps is answered.
        #expect(code(try call(connection, search.merging(["token": admin]) { $1 })) == "ok")
        // The probe needs a key here too.
        #expect(try probe(["--port", String(router.port)]) == 1)
        let probeKey = try secretFile(reader)
        defer { try? FileManager.default.removeItem(atPath: probeKey) }
        #expect(try probe(["--port", String(router.port), "--key-file", probeKey]) == 0)
        #expect(router.terminate() == 0)
    }

    /// SIGHUP reloads the keys file of `steer serve` and of `steer route`; a file that fails validation
    /// keeps the keys in force.
    @Test func sighupReloadsKeysAndABadFileKeepsTheOldOnes() throws {
        let first = "first-key-0123456789abcdef", second = "second-key-0123456789abcdef"
        func keys(_ key: String) -> String { #"{"keys":[{"name":"ops","scope":"admin","key":"\#(key)"}]}"# }
        let serverKeys = try secretFile(keys(first))
        let routerKeys = try secretFile(keys(first))
        defer { for path in [serverKeys, routerKeys] { try? FileManager.default.removeItem(atPath: path) } }
        let server = try ServerProcess(arguments: ["--dimension", "2", "--sync-writes", "false", "--keys-file", serverKeys])
        defer { server.removeData() }
        let router = try ServerProcess(arguments: ["--shard", "127.0.0.1:\(server.port)", "--keys-file", routerKeys], route: true)
        for (process, path) in [(server, serverKeys), (router, routerKeys)] {
            let connection = try process.connection()
            let stats: (String) throws -> String = { token in code(try call(connection, ["op": "stats", "token": token])) }
            #expect(try stats(first) == "ok")
            #expect(try stats(second) == "unauthorized")
            try Data(keys(second).utf8).write(to: URL(fileURLWithPath: path))
            kill(process.process.processIdentifier, SIGHUP)
            var reloaded = false
            for _ in 0..<100 where !reloaded {
                reloaded = try stats(second) == "ok"
                if !reloaded { Thread.sleep(forTimeInterval: 0.05) }
            }
            #expect(reloaded, "SIGHUP did not reload the keys file")
            #expect(try stats(first) == "unauthorized")
            try Data(#"{"keys":[{"name":"ops","scope":"admin","key":"short"}]}"#.utf8).write(to: URL(fileURLWithPath: path))
            kill(process.process.processIdentifier, SIGHUP)
            Thread.sleep(forTimeInterval: 0.5)
            #expect(try stats(second) == "ok", "a refused reload must keep the keys in force")
            #expect(process.process.isRunning)
        }
        #expect(router.terminate() == 0)
    }

    @Test func emptyTokensAndUnsafeKeyFilesStopTheStart() throws {
        let empty = try secretFile("\n")
        let shortKeys = try secretFile(#"{"keys":[{"name":"app","scope":"read","key":"short"}]}"#)
        defer { for path in [empty, shortKeys] { try? FileManager.default.removeItem(atPath: path) } }
        for (arguments, environment) in [(["--dimension", "2", "--admin-token", ""], [:]),
                                         (["--dimension", "2"], ["STEER_ADMIN_TOKEN": ""]),
                                         (["--dimension", "2", "--admin-token-file", empty], [:]),
                                         (["--dimension", "2", "--keys-file", shortKeys], [:])] as [([String], [String: String])] {
            do {
                let server = try ServerProcess(arguments: arguments, environment: environment)
                server.removeData()
                Issue.record("steer serve started with \(arguments) \(environment)")
            } catch {
                #expect("\(error)".contains("exited before listening"), "\(error)")
            }
        }
        for arguments in [["--shard", "127.0.0.1:1", "--admin-token", ""],
                          ["--shard", "127.0.0.1:1", "--shard-key-file", empty, "--admin-token", "x"],
                          ["--shard", "127.0.0.1:1", "--shard-key-file", shortKeys]] {
            #expect(throws: SteerError.self, "\(arguments)") { _ = try ServerProcess(arguments: arguments, route: true) }
        }
    }
}

/// One heavy query must not take the routed cluster down: it fails alone (`deadline_exceeded` or
/// `too_large`); every replica stays up, readiness holds, and the next search is answered.
@Suite(.serialized) struct RouteHeavyQueryEndToEndTests {
    @Test func aHeavyQueryFailsAloneAndEveryReplicaStaysUp() throws {
        let dimension = 8
        var generator = SeededGenerator(seed: 33)
        func vector() -> [Double] { (0..<dimension).map { _ in Double(Float.random(in: -1...1, using: &generator)) } }
        let sharding = try Sharding(shardCount: 2)
        let arguments = ["--dimension", String(dimension), "--sync-writes", "false"]
        // Shard 0 has two replicas: the old router retried a slow query on each and marked both down.
        let servers = try (0..<3).map { _ in try ServerProcess(arguments: arguments) }
        defer { for server in servers { server.removeData() } }
        let owners = [[servers[0], servers[1]], [servers[2]]]
        let items = (0..<4000).map { ["id": $0, "vector": vector()] as [String: Any] }
        for (shard, replicas) in owners.enumerated() {
            let mine = items.filter { sharding.shard(of: .int(Int64($0["id"] as? Int ?? 0))) == shard }
            for server in replicas {
                let connection = try server.connection()
                for start in stride(from: 0, to: mine.count, by: 500) {
                    #expect(code(try call(connection, ["op": "upsert", "items": Array(mine[start..<min(mine.count, start + 500)])])) == "ok")
                }
            }
        }
        let shardFlags = owners.flatMap { replicas in ["--shard", replicas.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")] }
        // One health check at start only: whatever marks a replica down later stays visible. Both
        // routers start before the shards get busy (a router's start waits for its first health check).
        let router = try ServerProcess(arguments: shardFlags + ["--health-interval-ms", "3600000", "--request-timeout-ms", "300"], route: true)
        let small = try ServerProcess(arguments: shardFlags + ["--health-interval-ms", "3600000", "--request-timeout-ms", "30000",
                                                              "--max-shard-response-bytes", "100000", "--connections-per-replica", "1"], route: true)
        let connection = try router.connection()
        // The shards go on computing the heavy answers (seconds in a debug build) on one of their worker
        // threads; the normal search may wait for a free one, so it gets a generous deadline.
        let normal: [String: Any] = ["op": "search", "vector": vector(), "k": 10, "timeout_ms": 60_000]
        #expect(code(try call(connection, normal)) == "ok")

        func expectEveryReplicaUp(_ label: String) throws {
            let stats = try call(connection, ["op": "stats"])
            #expect(stats["unavailable_shards"] as? Int == 0, "\(label): \(stats)")
            for shard in (stats["shards"] as? [[String: Any]]) ?? [] {
                for replica in (shard["replicas"] as? [[String: Any]]) ?? [] {
                    #expect(replica["up"] as? Bool == true, "\(label): \(replica)")
                    #expect(replica["failures"] as? Int == 0, "\(label): \(replica)")
                }
            }
            #expect((stats["counters"] as? [String: Any])?["replica_retries"] as? Int == 0, "\(label)")
            #expect(try probe(["--port", String(router.port), "--all-shards"]) == 0, "\(label)")
            let answer = try call(connection, normal)
            #expect(code(answer) == "ok" && answer["partial"] == nil, "\(label): \(answer)")
        }

        // 1,024 vectors, k 1,000, a huge ef_search: over the cost limits, refused before any shard is asked.
        let huge: [String: Any] = ["op": "search", "vectors": (0..<1024).map { _ in vector() }, "k": 1000, "ef_search": 1 << 20]
        #expect(code(try call(connection, huge)) == "too_large")
        try expectEveryReplicaUp("after a query over the cost limit")
        // 256 vectors, k 1,000: within the cost limit, about 10 MB of answer per shard, far past 300 ms.
        let heavy: [String: Any] = ["op": "search", "vectors": (0..<256).map { _ in vector() }, "k": 1000]
        let started = Date()
        let slow = try call(connection, heavy)
        #expect(code(slow) == "deadline_exceeded", "\(String(describing: slow["error"]))")
        #expect(Date().timeIntervalSince(started) < 5)
        try expectEveryReplicaUp("after a slow query")

        // A request's own timeout_ms is its deadline (the default is 300 ms here; 20 ms asked for a query
        // of 64 vectors with k 1,000).
        let hurried: [String: Any] = ["op": "search", "vectors": (0..<64).map { _ in vector() }, "k": 1000, "timeout_ms": 20]
        #expect(code(try call(connection, hurried)) == "deadline_exceeded")
        try expectEveryReplicaUp("after timeout_ms")
        #expect(router.terminate() == 0)

        // An answer over the router's limit fails that request alone; the connection stays in step.
        let limited = try small.connection()
        let wide: [String: Any] = ["op": "search", "vectors": (0..<8).map { _ in vector() }, "k": 1000]
        for _ in 0..<3 {
            #expect(code(try call(limited, wide)) == "too_large")
            #expect(code(try call(limited, normal)) == "ok")
            #expect(code(try call(limited, ["op": "get", "ids": [1, 2, 3], "timeout_ms": 60_000])) == "ok")
        }
        let stats = try call(limited, ["op": "stats"])
        #expect(stats["unavailable_shards"] as? Int == 0)
        for shard in (stats["shards"] as? [[String: Any]]) ?? [] {
            for replica in (shard["replicas"] as? [[String: Any]]) ?? [] { #expect(replica["failures"] as? Int == 0, "\(replica)") }
        }
        #expect(small.terminate() == 0)
    }
}
