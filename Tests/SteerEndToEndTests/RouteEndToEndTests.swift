import Foundation
import SteerClient
import SteerCore
import Testing

/// `steer route` over three `steer serve` shards (shard 0 with two replicas) against one server holding
/// every item: same answers, failover when a replica dies, flagged partial results when a shard dies,
/// writes landing on the owning shard.
@Suite(.serialized) struct RouteEndToEndTests {
    static let dimension = 8
    static let shardCount = 3

    private func call(_ connection: SteerConnection, _ request: [String: Any]) throws -> [String: Any] {
        let line = try JSONSerialization.data(withJSONObject: request)
        let response = try connection.roundTrip(Array(line))
        guard let object = try JSONSerialization.jsonObject(with: Data(response)) as? [String: Any] else {
            throw SteerError(.internal, "response is not an object: \(String(decoding: response, as: UTF8.self))")
        }
        return object
    }

    private func ok(_ connection: SteerConnection, _ request: [String: Any]) throws -> [String: Any] {
        let response = try call(connection, request)
        guard response["ok"] as? Bool == true else {
            throw SteerError(.internal, "\(request["op"] ?? "?") failed: \(response)")
        }
        return response
    }

    /// (id, score) pairs of a hit list; ids as their JSON text so ints and strings compare.
    private func hits(_ value: Any?) -> [(String, Double)] {
        ((value as? [[String: Any]]) ?? []).map { hit in
            let id = hit["id"].map { "\($0)" } ?? "?"
            return (id, (hit["score"] as? NSNumber)?.doubleValue ?? .nan)
        }
    }

    private func same(_ a: [(String, Double)], _ b: [(String, Double)]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && abs($0.1 - $1.1) < 1e-5 }
    }

    private func itemJSON(_ id: ItemID, _ vector: [Float]) -> [String: Any] {
        var object: [String: Any] = ["vector": vector.map { Double($0) }, "title": "item \(id)"]
        switch id {
        case .int(let value):
            object["id"] = Int(value)
            object["tags"] = [value % 2 == 0 ? "even" : "odd"]
            object["attributes"] = ["rank": Int(value), "specs": ["band": Int(value) % 10]]
        case .string(let value):
            object["id"] = value
            object["tags"] = ["named"]
        }
        return object
    }

    private func shard(of object: [String: Any]) throws -> Int {
        let sharding = try Sharding(shardCount: Self.shardCount)
        if let number = object["id"] as? Int { return sharding.shard(of: .int(Int64(number))) }
        return sharding.shard(of: .string(object["id"] as? String ?? ""))
    }

    private func shard(ofID text: String) throws -> Int {
        let sharding = try Sharding(shardCount: Self.shardCount)
        if let number = Int64(text) { return sharding.shard(of: .int(number)) }
        return sharding.shard(of: .string(text))
    }

    @Test func routerMatchesOneServerFailsOverAndFlagsPartialResults() throws {
        var generator = SeededGenerator(seed: 91)
        func vector() -> [Float] { (0..<Self.dimension).map { _ in Float.random(in: -1...1, using: &generator) } }
        let ids: [ItemID] = (0..<600).map { .int(Int64($0)) } + (0..<30).map { .string("s\($0)") }
        let items = ids.map { itemJSON($0, vector()) }

        let arguments = ["--dimension", String(Self.dimension), "--sync-writes", "false"]
        let reference = try ServerProcess(arguments: arguments)
        defer { reference.removeData() }
        // Shard 0 has two replicas; shards 1 and 2 one each.
        let servers = try (0..<4).map { _ in try ServerProcess(arguments: arguments) }
        defer { for server in servers { server.removeData() } }
        let owners = [[servers[0], servers[1]], [servers[2]], [servers[3]]]

        let referenceConnection = try reference.connection()
        for start in stride(from: 0, to: items.count, by: 200) {
            _ = try ok(referenceConnection, ["op": "upsert", "items": Array(items[start..<min(items.count, start + 200)])])
        }
        for (shard, replicas) in owners.enumerated() {
            let mine = try items.filter { try self.shard(of: $0) == shard }
            #expect(mine.count > 100, "shard \(shard) holds \(mine.count) of \(items.count) items")
            for server in replicas { _ = try ok(try server.connection(), ["op": "upsert", "items": mine]) }
        }

        let shardFlags = owners.flatMap { replicas in ["--shard", replicas.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")] }
        let router = try ServerProcess(arguments: shardFlags + ["--health-interval-ms", "100", "--shard-timeout-ms", "5000"], route: true)
        let connection = try router.connection()

        // Same top k as one server: single, batch, filtered, recommend, get.
        var queries: [[Float]] = []
        for _ in 0..<15 { queries.append(vector()) }
        for query in queries {
            let mine = try ok(connection, ["op": "search", "vector": query.map { Double($0) }, "k": 10])
            let theirs = try ok(referenceConnection, ["op": "search", "vector": query.map { Double($0) }, "k": 10])
            #expect(same(hits(mine["hits"]), hits(theirs["hits"])), "router \(hits(mine["hits"])) vs one server \(hits(theirs["hits"]))")
            #expect(mine["partial"] == nil)
            #expect(mine["generation"] as? String == "g1")
        }
        let batch: [String: Any] = ["op": "search", "vectors": queries.prefix(4).map { $0.map { Double($0) } }, "k": 7,
                                    "filter": ["tags_any": ["even", "named"], "tags_none": ["odd"]]]
        let batchMine = try ok(connection, batch)
        let batchTheirs = try ok(referenceConnection, batch)
        let mineResults = (batchMine["results"] as? [Any]) ?? []
        let theirResults = (batchTheirs["results"] as? [Any]) ?? []
        #expect(mineResults.count == 4)
        for (mine, theirs) in zip(mineResults, theirResults) { #expect(same(hits(mine), hits(theirs))) }

        // A filter expression reaches the shards: the router's answer is one server's.
        let expression: [String: Any] = ["tags_none": ["named"], "and": [
            ["attr": "rank", "gte": 100, "lt": 400], ["or": [["tag": "odd"], ["attr": "specs.band", "in": [2, 4]]]],
        ]]
        for query in queries.prefix(3) {
            let request: [String: Any] = ["op": "search", "vector": query.map { Double($0) }, "k": 10, "filter": expression]
            let mine = try ok(connection, request)
            let theirs = try ok(referenceConnection, request)
            #expect(hits(mine["hits"]).count == 10)
            #expect(same(hits(mine["hits"]), hits(theirs["hits"])), "router \(hits(mine["hits"])) vs one server \(hits(theirs["hits"]))")
            #expect(hits(mine["hits"]).allSatisfy { (Int($0.0) ?? -1) >= 100 && (Int($0.0) ?? -1) < 400 })
        }
        // declare_index through the router reaches every replica (shard 0's two included); the filter
        // then runs on the payload index and still answers as one server; declaring again writes nothing.
        let declared = try ok(connection, ["op": "declare_index", "attr": "rank", "kind": "numeric"])
        let shardZeroInts = try items.filter { try $0["id"] is Int && self.shard(of: $0) == 0 }.count
        #expect(declared["replicas"] as? Int == 4 && declared["entries"] as? Int == 600 + shardZeroInts, "\(declared)")
        for query in queries.prefix(2) {
            let request: [String: Any] = ["op": "search", "vector": query.map { Double($0) }, "k": 10, "filter": expression]
            #expect(same(hits(try ok(connection, request)["hits"]), hits(try ok(referenceConnection, request)["hits"])))
        }
        #expect(try ok(connection, ["op": "declare_index", "attr": "rank", "kind": "numeric"])["entries"] as? Int == 0)
        let badDeclare = try call(connection, ["op": "declare_index", "attr": "", "kind": "numeric"])
        #expect(badDeclare["ok"] as? Bool == false && (badDeclare["error"] as? [String: Any])?["code"] as? String == "invalid_request", "\(badDeclare)")
        let filteredRecommend: [String: Any] = ["op": "recommend", "history": [3, 40], "k": 8, "filter": ["attr": "rank", "lt": 50]]
        let filteredMine = try ok(connection, filteredRecommend)
        #expect(same(hits(filteredMine["hits"]), hits(try ok(referenceConnection, filteredRecommend)["hits"])))
        #expect(hits(filteredMine["hits"]).allSatisfy { (Int($0.0) ?? -1) < 50 })

        let recommend: [String: Any] = ["op": "recommend", "history": [3, 40, "s7", 599, 12345], "k": 12]
        let recommendMine = try ok(connection, recommend)
        let recommendTheirs = try ok(referenceConnection, recommend)
        #expect(same(hits(recommendMine["hits"]), hits(recommendTheirs["hits"])))
        #expect((recommendMine["unknown_history"] as? [Int]) == [12345])
        #expect(!hits(recommendMine["hits"]).contains { ["3", "40", "s7", "599"].contains($0.0) })
        let encodeMine = try ok(connection, ["op": "encode", "history": [3, 40, "s7"]])
        let encodeTheirs = try ok(referenceConnection, ["op": "encode", "history": [3, 40, "s7"]])
        #expect((encodeMine["vector"] as? [Double]) == (encodeTheirs["vector"] as? [Double]))

        let getRequest: [String: Any] = ["op": "get", "ids": [5, "s3", 99_999, 17, 5]]
        let getMine = try ok(connection, getRequest)
        let getTheirs = try ok(referenceConnection, getRequest)
        #expect(((getMine["items"] as? [[String: Any]]) ?? []).map { "\($0["id"]!)" } == ((getTheirs["items"] as? [[String: Any]]) ?? []).map { "\($0["id"]!)" })
        #expect((getMine["missing"] as? [Int]) == [99_999])

        // A request error of the shards is the router's answer too.
        let wrong = try call(connection, ["op": "search", "vector": [1, 2], "k": 3])
        #expect(((wrong["error"] as? [String: Any])?["code"] as? String) == "dimension_mismatch")

        // Writes through the router land on the owning shard (every replica of it) and nowhere else.
        let fresh = (1000..<1040).map { itemJSON(.int(Int64($0)), vector()) }
        #expect(try ok(connection, ["op": "upsert", "items": fresh])["upserted"] as? Int == fresh.count)
        _ = try ok(referenceConnection, ["op": "upsert", "items": fresh])
        for item in fresh {
            let owner = try shard(of: item)
            for (shard, replicas) in owners.enumerated() {
                for server in replicas {
                    let answer = try ok(try server.connection(), ["op": "get", "ids": [item["id"]!]])
                    let found = !((answer["items"] as? [Any]) ?? []).isEmpty
                    #expect(found == (shard == owner), "item \(item["id"]!) on shard \(shard): \(found), owner \(owner)")
                }
            }
        }
        #expect(try ok(connection, ["op": "delete", "ids": [1000, 1001, 77_777]])["deleted"] as? Int == 2)
        // A shard refusing its part (a wrong dimension) fails the request; the message says which shards
        // applied theirs.
        let good = itemJSON(.int(2000), vector())
        let badID = try (2001..<2100).first { try shard(ofID: String($0)) != shard(of: good) }!
        let mixed = try call(connection, ["op": "upsert", "items": [good, itemJSON(.int(Int64(badID)), [1, 2, 3])]])
        #expect(((mixed["error"] as? [String: Any])?["code"] as? String) == "dimension_mismatch")
        let mixedMessage = (mixed["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(mixedMessage.contains("not atomic"), "\(mixed)")
        #expect(((try ok(connection, ["op": "get", "ids": [2000, badID]])["missing"] as? [Int]) ?? []) == [badID])
        #expect(try ok(connection, ["op": "delete", "ids": [2000]])["deleted"] as? Int == 1)
        _ = try ok(referenceConnection, ["op": "delete", "ids": [1000, 1001]])
        for query in queries.prefix(5) {
            let mine = try ok(connection, ["op": "search", "vector": query.map { Double($0) }, "k": 20])
            let theirs = try ok(referenceConnection, ["op": "search", "vector": query.map { Double($0) }, "k": 20])
            #expect(same(hits(mine["hits"]), hits(theirs["hits"])))
        }

        // Killing a replica of shard 0 fails no request. (SIGKILL: a server stopped with SIGTERM drains for
        // its shutdown timeout while the router keeps its connections busy.)
        servers[1].kill()
        for query in queries {
            let mine = try call(connection, ["op": "search", "vector": query.map { Double($0) }, "k": 10])
            let theirs = try ok(referenceConnection, ["op": "search", "vector": query.map { Double($0) }, "k": 10])
            #expect(mine["ok"] as? Bool == true, "\(mine)")
            #expect(mine["partial"] == nil)
            #expect(same(hits(mine["hits"]), hits(theirs["hits"])))
        }

        // A write while that replica is down makes it diverged: it serves nothing more (until re-seeded
        // and the router restarts).
        let late = try (3000..<3100).map { itemJSON(.int(Int64($0)), vector()) }.first { try shard(of: $0) == 0 }!
        _ = try ok(connection, ["op": "upsert", "items": [late]])
        _ = try ok(referenceConnection, ["op": "upsert", "items": [late]])
        let afterWrite = try ok(connection, ["op": "stats"])
        let shard0 = ((afterWrite["shards"] as? [[String: Any]])?.first?["replicas"] as? [[String: Any]]) ?? []
        #expect(shard0.map { $0["diverged"] as? Bool } == [false, true], "\(shard0)")

        // Killing all of shard 2 gives flagged partial results: the best of the other shards.
        servers[3].kill()
        for query in queries.prefix(8) {
            let mine = try call(connection, ["op": "search", "vector": query.map { Double($0) }, "k": 10])
            #expect(mine["ok"] as? Bool == true, "\(mine)")
            #expect(mine["partial"] as? Bool == true)
            #expect((mine["missing_shards"] as? [Int]) == [2])
            let theirs = try ok(referenceConnection, ["op": "search", "vector": query.map { Double($0) }, "k": 60])
            let expected = Array(try hits(theirs["hits"]).filter { try shard(ofID: $0.0) != 2 }.prefix(10))
            #expect(same(hits(mine["hits"]), expected), "router \(hits(mine["hits"])) vs \(expected)")
        }
        // Writes to the dead shard fail with a clear error; reads of it too.
        let lost = try items.first { try shard(of: $0) == 2 }!
        let refused = try call(connection, ["op": "get", "ids": [lost["id"]!]])
        #expect(((refused["error"] as? [String: Any])?["code"] as? String) == "unavailable")

        let stats = try ok(connection, ["op": "stats"])
        #expect(stats["role"] as? String == "router")
        let shards = (stats["shards"] as? [[String: Any]]) ?? []
        #expect(shards.map { $0["readable_replicas"] as? Int ?? -1 } == [1, 1, 0])
        #expect(stats["unavailable_shards"] as? Int == 1)
        #expect(((stats["counters"] as? [String: Any])?["partial_responses"] as? Int ?? 0) >= 8)

        // `steer probe` (the Kubernetes readiness check): ready with one shard down, not with --all-shards.
        #expect(try probe(["--port", String(router.port)]) == 0)
        #expect(try probe(["--port", String(router.port), "--all-shards"]) == 1)
        #expect(try probe(["--port", String(servers[0].port)]) == 0)
        #expect(try probe(["--port", String(servers[3].port)]) == 1)
        #expect(router.terminate() == 0)
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
}

/// The built `steer-index` binary, beside `steer`.
private func steerIndexPath() throws -> String {
    let path = URL(fileURLWithPath: try steerBinary()).deletingLastPathComponent().appendingPathComponent("steer-index").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw SteerError(.notFound, "the built steer-index binary is not at '\(path)'; build with --build-tests")
    }
    return path
}

/// `steer-index build` of a serving data directory into `DIR/generations/<id>`.
private func buildGeneration(data: String, id: String) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try steerIndexPath())
    process.arguments = ["build", "--data", data, "--version", "v1", "--spec", "Flat", "--shards", "1",
                         "--out", data + "/generations/" + id, "--generation-id", id, "--quiet"]
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = Pipe()
    try process.run()
    let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw SteerError(.internal, "steer-index build exited \(process.terminationStatus): \(stderr)") }
}

@Suite(.serialized) struct RouteSwapEndToEndTests {
    private func call(_ connection: SteerConnection, _ request: [String: Any]) throws -> [String: Any] {
        let response = try connection.roundTrip(Array(try JSONSerialization.data(withJSONObject: request)))
        return try #require(try JSONSerialization.jsonObject(with: Data(response)) as? [String: Any])
    }

    @Test func swapMovesEveryShardOrNone() throws {
        // Public reads: this router has no shard key, so its health checks carry no token.
        let servers = try (0..<3).map { _ in
            try ServerProcess(arguments: ["--dimension", "4", "--sync-writes", "false", "--admin-token", "tok", "--public-reads", "true"])
        }
        defer { for server in servers { server.removeData() } }
        let sharding = try Sharding(shardCount: 3)
        var generator = SeededGenerator(seed: 12)
        for index in 0..<150 {
            let vector = (0..<4).map { _ in Double(Float.random(in: -1...1, using: &generator)) }
            let server = servers[sharding.shard(of: .int(Int64(index)))]
            _ = try call(try server.connection(), ["op": "upsert", "token": "tok", "items": [["id": index, "vector": vector]]])
        }
        for server in servers { try buildGeneration(data: server.directory, id: "gA") }
        // gB exists on shards 0 and 1 only: a swap to it must not move the router.
        for server in servers.prefix(2) { try buildGeneration(data: server.directory, id: "gB") }

        let shardFlags = servers.flatMap { ["--shard", "127.0.0.1:\($0.port)"] }
        let router = try ServerProcess(arguments: shardFlags + ["--health-interval-ms", "100"], route: true)
        let connection = try router.connection()
        let probe: [String: Any] = ["op": "search", "vector": [0.5, -0.1, 0.3, 0.9], "k": 5]
        let before = try call(connection, probe)
        #expect(before["generation"] as? String == "g1")
        // A collection the shards do not hold is their `not_found`, never the default collection's answer.
        var named = probe
        named["collection"] = "other"
        let unknown = try call(connection, named)
        #expect((unknown["error"] as? [String: Any])?["code"] as? String == "not_found", "\(unknown)")
        #expect(try call(connection, ["op": "list_collections"])["consistent"] as? Bool == true)

        let unauthorized = try call(connection, ["op": "swap", "generation": "gA"])
        #expect(unauthorized["ok"] as? Bool == false)
        #expect(try call(connection, probe)["generation"] as? String == "g1")

        let swapped = try call(connection, ["op": "swap", "generation": "gA", "token": "tok"])
        #expect(swapped["ok"] as? Bool == true, "\(swapped)")
        #expect(swapped["generation"] as? String == "gA")
        #expect(swapped["previous"] as? String == "g1")
        let after = try call(connection, probe)
        #expect(after["generation"] as? String == "gA")
        #expect(after["partial"] == nil)
        #expect((after["hits"] as? [[String: Any]])?.map { "\($0["id"]!)" } == (before["hits"] as? [[String: Any]])?.map { "\($0["id"]!)" })

        let refused = try call(connection, ["op": "swap", "generation": "gB", "token": "tok"])
        #expect(refused["ok"] as? Bool == false)
        let message = (refused["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(message.contains("rolled back"), "\(refused)")
        for _ in 0..<5 {
            let answer = try call(connection, probe)
            #expect(answer["ok"] as? Bool == true)
            #expect(answer["generation"] as? String == "gA")
            #expect(answer["partial"] == nil, "\(answer)")
        }
        let stats = try call(connection, ["op": "stats"])
        #expect(stats["generation"] as? String == "gA")
        #expect(((stats["counters"] as? [String: Any])?["swaps"] as? Int) == 1)
    }
}

/// `steer route --checkpoint`: the DPR query is encoded once at the router; recommendations (soft and
/// hybrid) and encoded vectors equal those of one `steer serve --checkpoint` holding the whole catalog.
@Suite(.serialized) struct RouteRecommendEndToEndTests {
    private func call(_ connection: SteerConnection, _ request: [String: Any]) throws -> [String: Any] {
        let response = try connection.roundTrip(Array(try JSONSerialization.data(withJSONObject: request)))
        return try #require(try JSONSerialization.jsonObject(with: Data(response)) as? [String: Any])
    }

    private func ids(_ response: [String: Any]) -> [String] {
        ((response["hits"] as? [[String: Any]]) ?? []).map { "\($0["id"]!)" }
    }

    @Test func dprRecommendThroughTheRouterMatchesOneServer() throws {
        let checkpoint = RecommendEndToEndTests.fixtures + "/demo-sasrec"
        let minilm = RecommendEndToEndTests.minilm
        let reference = try ServerProcess(arguments: ["--checkpoint", checkpoint, "--minilm", minilm, "--sync-writes", "false"])
        defer { reference.removeData() }
        let referenceConnection = try reference.connection()
        let catalog = try String(contentsOfFile: checkpoint + "/items.jsonl", encoding: .utf8).split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])["id"] as? Int
        }.compactMap { $0 }
        #expect(catalog.count == 400)
        let got = try call(referenceConnection, ["op": "get", "ids": catalog])
        let items = try #require(got["items"] as? [[String: Any]])
        #expect(items.count == catalog.count)
        let dimension = try #require((items.first?["vector"] as? [Any])?.count)

        let sharding = try Sharding(shardCount: 3)
        let shards = try (0..<3).map { _ in try ServerProcess(arguments: ["--dimension", String(dimension), "--sync-writes", "false"]) }
        defer { for shard in shards { shard.removeData() } }
        for (index, shard) in shards.enumerated() {
            let mine = items.filter { sharding.shard(of: .int(Int64($0["id"] as? Int ?? -1))) == index }
            #expect(try call(try shard.connection(), ["op": "upsert", "items": mine])["upserted"] as? Int == mine.count)
        }
        let router = try ServerProcess(arguments: shards.flatMap { ["--shard", "127.0.0.1:\($0.port)"] }
                                                  + ["--checkpoint", checkpoint, "--minilm", minilm], route: true)
        let connection = try router.connection()

        let golden = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: checkpoint + "/golden.json"))) as? [String: Any])
        let cases = try #require(golden["cases"] as? [[String: Any]])
        for (number, entry) in cases.enumerated() {
            let history = (entry["history"] as? [Any]) ?? []
            var request: [String: Any] = ["op": "recommend", "history": history, "k": 10]
            if let prompt = entry["prompt"] as? String { request["prompt"] = prompt }
            for constraints in ["soft", "hybrid", "hard"] {
                request["constraints"] = constraints
                let mine = try call(connection, request)
                let theirs = try call(referenceConnection, request)
                #expect(mine["ok"] as? Bool == theirs["ok"] as? Bool, "case \(number) \(constraints): \(mine) vs \(theirs)")
                #expect(ids(mine) == ids(theirs), "case \(number) \(constraints): \(ids(mine)) vs \(ids(theirs))")
                #expect(theirs["ok"] as? Bool == false || !ids(theirs).isEmpty)
                #expect((mine["clauses"] as? [[String: Any]])?.count == (theirs["clauses"] as? [[String: Any]])?.count)
            }
            request["op"] = "encode"
            let mine = try call(connection, request)
            let theirs = try call(referenceConnection, request)
            #expect((mine["vector"] as? [Double]) == (theirs["vector"] as? [Double]), "case \(number)")
        }
    }
}
