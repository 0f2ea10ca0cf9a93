import Foundation
import SteerClient
import SteerCore
import SteerNATS
import SteerProtocol
import Testing

/// The cluster-wide swap through the metadata bucket (docs/scaling.md "Cluster-wide swap"): a real
/// `nats-server`, two shards of two `steer serve --follow` replicas, and `steer route --follow` routers
/// whose `swap` prepares the generation on every live replica, flips the cluster's `generation` key and
/// activates it; a replica that cannot load it aborts the swap for all; reads during a swap are never
/// answered from two generations; of two routers swapping at once exactly one commits.

private let token = "tok"
private let itemCount = 600

private func vector(_ seed: Int) -> String {
    var generator = SeededGenerator(seed: UInt64(seed) &* 2_654_435_761 &+ 7)
    return "[" + (0..<4).map { _ in String(Float.random(in: -1...1, using: &generator)) }.joined(separator: ",") + "]"
}

/// Runs `steer-index build` of an `IVF4,Flat` generation on a replica's data directory while it serves.
private func buildGeneration(data: String, id: String) throws {
    let binary = URL(fileURLWithPath: try steerBinary()).deletingLastPathComponent().appendingPathComponent("steer-index").path
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = ["build", "--data", data, "--version", "v1", "--spec", "IVF4,Flat", "--shards", "1",
                         "--out", data + "/generations/" + id, "--generation-id", id, "--quiet"]
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = Pipe()
    try process.run()
    let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw SteerError(.internal, "steer-index build exited \(process.terminationStatus): \(stderr)") }
}

/// A replica's `stats` generation and staged generation.
private func served(_ replica: ServerProcess) throws -> (generation: String, staged: String?) {
    let stats = try ok(try replica.connection(), #"{"op":"stats","token":"tok"}"#)
    guard case .string(let generation)? = stats["generation"] else { throw SteerError(.internal, "no generation in \(stats)") }
    var staged: String?
    if case .string(let name)? = stats["staged_generation"] { staged = name }
    return (generation, staged)
}

/// Polls until every replica serves `generation` with nothing staged, or `seconds` pass.
private func waitUntilServing(_ replicas: [ServerProcess], _ generation: String, seconds: Double = 15) throws -> [(generation: String, staged: String?)] {
    let deadline = Date().addingTimeInterval(seconds)
    var states = try replicas.map(served)
    while !states.allSatisfy({ $0.generation == generation && $0.staged == nil }) && Date() < deadline {
        usleep(100_000)
        states = try replicas.map(served)
    }
    return states
}

/// The queries the tests read: `nprobe` 1 on the IVF generations (only one of their 4 lists is
/// scanned), so that their answers differ from the Flat start-up index's and a mix would show.
private let queries = (0..<12).map { #"{"op":"search","token":"tok","vector":\#(vector(10_000 + $0)),"k":10,"nprobe":1}"# }

/// A cluster of two shards × two following replicas with `--shard-count 2`.
private final class Cluster {
    let nats: NATSNode
    let name = "cs" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
    var replicas: [[ServerProcess]] = []
    var routers: [ServerProcess] = []

    init(routers count: Int, healthIntervalMillis: Int = 100) throws {
        nats = try NATSNode()
        for shard in 0..<2 {
            replicas.append(try (0..<2).map { _ in try ServerProcess(arguments: arguments(shard: shard)) })
        }
        let shardFlags = replicas.flatMap { set in ["--shard", set.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")] }
        for _ in 0..<count {
            routers.append(try ServerProcess(arguments: shardFlags + [
                "--admin-token", token, "--follow", nats.url, "--cluster", name, "--health-interval-ms", String(healthIntervalMillis), "--swap-timeout", "20",
            ], route: true))
        }
    }

    /// A replica's `steer serve` flags.
    func arguments(shard: Int) -> [String] {
        ["--dimension", "4", "--admin-token", token, "--public-reads", "true", "--follow", nats.url, "--cluster", name, "--shard", String(shard),
         "--shard-count", "2", "--recall-target", "off"]
    }

    var all: [ServerProcess] { Array(replicas.joined()) }

    /// The heartbeat keys in the replicas bucket now.
    func liveReplicaKeys() async throws -> Set<String> {
        let client = try await NATSConnection.connect(host: "127.0.0.1", port: nats.port)
        let bucket = try await JetStreamContext(connection: client).keyValue("steer_\(name)_replicas")
        let watcher = try await bucket.watch("shard.>")
        var keys = Set<String>()
        loop: for try await event in watcher {
            switch event {
            case .entry(let entry): keys.insert(entry.key)
            case .initialValuesDone: break loop
            }
        }
        await watcher.stop()
        await client.close()
        return keys
    }

    /// Puts the cluster's `generation` key as a coordinator that announced `generation` and then died would
    /// have left it: `prepare`, with its deadline `deadlineMillis` from now.
    func putStalePrepare(_ generation: String, deadlineMillis: Int64) async throws {
        let client = try await NATSConnection.connect(host: "127.0.0.1", port: nats.port)
        let bucket = try await JetStreamContext(connection: client).keyValue("steer_\(name)")
        let deadline = Int64(Date().timeIntervalSince1970 * 1000) + deadlineMillis
        try await bucket.put("generation", Array(#"{"generation":"\#(generation)","state":"prepare","round":0,"deadline_ms":\#(deadline)}"#.utf8))
        await client.close()
    }

    /// Writes `itemCount` items through the first router and waits until every replica applied them.
    func load() throws {
        let client = try routers[0].connection()
        var latest: [Int64] = [0, 0]
        for start in stride(from: 0, to: itemCount, by: 200) {
            let items = (start..<start + 200).map { #"{"id":\#($0),"vector":\#(vector($0)),"title":"t\#($0)"}"# }
            let answer = try ok(client, #"{"op":"upsert","token":"tok","items":[\#(items.joined(separator: ","))]}"#)
            guard case .array(let sequences)? = answer["sequences"] else { throw SteerError(.internal, "no sequences: \(answer)") }
            for (shard, value) in sequences.enumerated() { if case .int(let number) = value { latest[shard] = max(latest[shard], number) } }
        }
        for (shard, set) in replicas.enumerated() {
            for replica in set {
                _ = try ok(try replica.connection(), #"{"op":"stats","token":"tok","min_sequence":\#(latest[shard]),"timeout_ms":20000}"#)
            }
        }
    }

    /// Builds generation `id` on every replica except `except`.
    func build(_ id: String, except: ServerProcess? = nil) throws {
        for replica in all where replica !== except { try buildGeneration(data: replica.directory, id: id) }
    }

    deinit {
        for process in routers + all { process.terminate() }
        for replica in all { replica.removeData() }
    }
}

/// The `generation` and `hits` of each query through `connection`.
private func answers(_ connection: SteerConnection) throws -> [(generation: String, hits: JSONValue?)] {
    try queries.map { line in
        let answer = try ok(connection, line)
        guard case .string(let generation)? = answer["generation"], answer["partial"] == nil else {
            throw SteerError(.internal, "no generation or partial: \(answer)")
        }
        return (generation, answer["hits"])
    }
}

@Suite(.serialized) struct ClusterSwapEndToEndTests {
    @Test func everyReplicaSwitches_readsDuringTheSwapNeverMixGenerations_andAFailedReplicaAbortsForAll() throws {
        let cluster = try Cluster(routers: 1)
        try cluster.load()
        try cluster.build("g2")
        let router = try cluster.routers[0].connection()
        let before = try answers(router)
        #expect(before.allSatisfy { $0.generation == "g1" }, "\(before.map(\.generation))")

        // Reads in a loop on their own connection while the swap runs.
        let stop = Locked(false)
        let seen = Locked<[(query: Int, generation: String, hits: JSONValue?)]>([])
        let failures = Locked<[String]>([])
        let routerPort = cluster.routers[0].port
        let reader = Thread {
            guard let connection = try? SteerConnection(host: "127.0.0.1", port: routerPort) else {
                failures.withLock { $0.append("no connection") }
                return
            }
            var query = 0
            while !stop.get() {
                do {
                    let answer = try call(connection, queries[query])
                    guard answer["ok"] == .bool(true), case .string(let generation)? = answer["generation"], answer["partial"] == nil else {
                        failures.withLock { $0.append("\(answer)") }
                        continue
                    }
                    seen.withLock { $0.append((query, generation, answer["hits"])) }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
                query = (query + 1) % queries.count
            }
        }
        reader.start()
        usleep(200_000)
        let swap = try ok(try cluster.routers[0].connection(), #"{"op":"swap","generation":"g2","token":"tok"}"#)
        usleep(300_000)
        stop.withLock { $0 = true }
        while !reader.isFinished { usleep(10_000) }

        #expect(swap["generation"] == .string("g2") && swap["previous"] == .string("g1") && swap["cluster"] == .bool(true), "\(swap)")
        #expect(swap["prepared"] == .int(4), "every live replica prepared: \(swap)")
        guard case .array(let activated)? = swap["replicas"] else { Issue.record("no replicas: \(swap)"); return }
        #expect(activated.count == 4 && activated.allSatisfy { if case .object(let o) = $0 { o["activated"] == .bool(true) } else { false } }, "\(swap)")
        let states = try waitUntilServing(cluster.all, "g2")
        #expect(states.allSatisfy { $0.generation == "g2" && $0.staged == nil }, "\(states)")

        // Both replicas of each shard answer the query set identically, from g2.
        for set in cluster.replicas {
            for line in queries {
                let first = try ok(try set[0].connection(), line)
                let second = try ok(try set[1].connection(), line)
                #expect(first["generation"] == .string("g2") && first["hits"] == second["hits"], "\(line)")
            }
        }
        let after = try answers(router)
        #expect(after.allSatisfy { $0.generation == "g2" })
        let differing = zip(before, after).filter { $0.hits != $1.hits }.count
        #expect(differing >= queries.count / 2, "g1 and g2 answers must differ for the mix check to mean anything (\(differing) of \(queries.count) differ)")

        // Every read during the swap was one generation's whole answer: all g1, or all g2.
        let reads = seen.get()
        #expect(failures.get().isEmpty, "\(failures.get().prefix(3))")
        #expect(reads.count > 0)
        var sawNew = false
        for read in reads {
            let expected = read.generation == "g1" ? before[read.query].hits : after[read.query].hits
            #expect(read.generation == "g1" || read.generation == "g2")
            #expect(read.hits == expected, "query \(read.query) on \(read.generation): not that generation's answer")
            #expect(!(sawNew && read.generation == "g1"), "an old answer after a new one")
            if read.generation == "g2" { sawNew = true }
        }

        // A replica that cannot load the next generation (not built there) aborts it everywhere.
        let broken = cluster.replicas[1][1]
        try cluster.build("g3", except: broken)
        let refused = try call(try cluster.routers[0].connection(), #"{"op":"swap","generation":"g3","token":"tok"}"#)
        guard case .object(let error)? = refused["error"], case .string(let message)? = error["message"] else {
            Issue.record("the swap was not refused: \(refused)")
            return
        }
        #expect(error["code"] == .string("unavailable") && message.contains("aborted") && message.contains("127.0.0.1:\(broken.port)"), "\(message)")
        let kept = try waitUntilServing(cluster.all, "g2")
        #expect(kept.allSatisfy { $0.generation == "g2" && $0.staged == nil }, "every replica keeps g2, nothing staged: \(kept)")
        #expect(try answers(router).map(\.generation).allSatisfy { $0 == "g2" })
    }

    @Test func ofTwoRoutersSwappingAtOnceExactlyOneCommits_andTheOtherFollowsTheCommit() throws {
        // Health checks once a minute: the router that loses can only move by watching the commit.
        let cluster = try Cluster(routers: 2, healthIntervalMillis: 60_000)
        try cluster.load()
        try cluster.build("g2")
        let results = Locked<[JSONObject]>([])
        let start = Locked(false)
        let threads = cluster.routers.map(\.port).map { port in
            Thread {
                guard let connection = try? SteerConnection(host: "127.0.0.1", port: port) else { return }
                while !start.get() { usleep(100) }
                if let answer = try? call(connection, #"{"op":"swap","generation":"g2","token":"tok"}"#) {
                    results.withLock { $0.append(answer) }
                }
            }
        }
        for thread in threads { thread.start() }
        usleep(100_000)
        start.withLock { $0 = true }
        while threads.contains(where: { !$0.isFinished }) { usleep(10_000) }
        let answers = results.get()
        #expect(answers.count == 2)
        #expect(answers.filter { $0["ok"] == .bool(true) }.count == 1, "exactly one swap commits: \(answers)")
        for answer in answers where answer["ok"] != .bool(true) {
            guard case .object(let error)? = answer["error"], case .string(let message)? = error["message"] else { continue }
            #expect(error["code"] == .string("unavailable") && message.contains("cluster swap"), "\(message)")
        }
        let states = try waitUntilServing(cluster.all, "g2")
        #expect(states.allSatisfy { $0.generation == "g2" }, "\(states)")
        // The router that lost follows the commit it watched; both answer from g2.
        for router in cluster.routers {
            let connection = try router.connection()
            let deadline = Date().addingTimeInterval(5)
            var generation = ""
            while generation != "g2" && Date() < deadline {
                if let answer = try? ok(connection, queries[0]), case .string(let name)? = answer["generation"], answer["partial"] == nil { generation = name }
                if generation != "g2" { usleep(100_000) }
            }
            #expect(generation == "g2")
        }
    }

    @Test func aReplicaThatMissedTheSwapServesTheCommittedGenerationWhenItReturns_andADeadCoordinatorsRoundIsTakenOver() async throws {
        let cluster = try Cluster(routers: 1)
        try cluster.load()
        try cluster.build("g2")
        // One replica is down during the swap: once its heartbeat expired, the swap needs the other three.
        let late = cluster.replicas[0][1]
        let lateKeys = try await cluster.liveReplicaKeys()
        late.terminate()
        // The heartbeat's TTL is 5 s, but NATS expires keys lazily and CI machines are loaded: wait up to
        // 60 s, and require it, so the swap below never waits for the stopped replica.
        let deadline = Date().addingTimeInterval(60)
        while try await cluster.liveReplicaKeys().count > 3 && Date() < deadline { try await Task.sleep(for: .milliseconds(250)) }
        #expect(lateKeys.count == 4)
        #expect(try await cluster.liveReplicaKeys().count == 3, "the stopped replica's heartbeat did not expire within 60 s")
        let swap = try ok(try cluster.routers[0].connection(), #"{"op":"swap","generation":"g2","token":"tok"}"#)
        #expect(swap["prepared"] == .int(3), "\(swap)")
        // Back on its data directory (steer.json still names g1), it reads the commit and swaps to g2.
        let back = try ServerProcess(directory: late.directory, arguments: cluster.arguments(shard: 0))
        cluster.replicas[0][1] = back
        #expect(try waitUntilServing([back], "g2").first?.generation == "g2")
        // Swapped directly afterwards, a restart keeps its own generation: the commit was applied once.
        try buildGeneration(data: back.directory, id: "g5")
        #expect(try ok(try back.connection(), #"{"op":"swap","generation":"g5","token":"tok"}"#)["generation"] == .string("g5"))
        back.terminate()
        let again = try ServerProcess(directory: late.directory, arguments: cluster.arguments(shard: 0))
        cluster.replicas[0][1] = again
        try await Task.sleep(for: .seconds(2))
        #expect(try served(again).generation == "g5", "the restarted replica did not act on the old commit again")

        // A coordinator that announced and died: its round blocks others until its deadline, then not.
        try cluster.build("g6")
        try await cluster.putStalePrepare("g9", deadlineMillis: 60_000)
        let blocked = try call(try cluster.routers[0].connection(), #"{"op":"swap","generation":"g6","token":"tok"}"#)
        guard case .object(let error)? = blocked["error"], case .string(let message)? = error["message"] else {
            Issue.record("a swap went ahead of a running round: \(blocked)")
            return
        }
        #expect(message.contains("in progress") && message.contains("g9"), "\(message)")
        try await cluster.putStalePrepare("g9", deadlineMillis: -1000)
        let taken = try ok(try cluster.routers[0].connection(), #"{"op":"swap","generation":"g6","token":"tok"}"#)
        #expect(taken["generation"] == .string("g6") && taken["prepared"] == .int(4), "\(taken)")
        let states = try waitUntilServing(cluster.all, "g6")
        #expect(states.allSatisfy { $0.generation == "g6" && $0.staged == nil }, "\(states)")

        // A round whose coordinator died after every replica staged it: dropped once its deadline passed.
        try cluster.build("g7")
        try await cluster.putStalePrepare("g7", deadlineMillis: 3000)
        let stagedBy = Date().addingTimeInterval(10)
        var staged = try cluster.all.map(served)
        while !staged.allSatisfy({ $0.staged == "g7" }) && Date() < stagedBy {
            try await Task.sleep(for: .milliseconds(100))
            staged = try cluster.all.map(served)
        }
        #expect(staged.allSatisfy { $0.generation == "g6" && $0.staged == "g7" }, "every replica staged g7: \(staged)")
        let dropped = try waitUntilServing(cluster.all, "g6")
        #expect(dropped.allSatisfy { $0.generation == "g6" && $0.staged == nil }, "dropped after the deadline: \(dropped)")
    }

    @Test func prepareStagesWithoutServing_andActivateSwitchesOnAServer() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", token, "--recall-target", "off"])
        defer {
            server.terminate()
            server.removeData()
        }
        let client = try server.connection()
        let items = (0..<100).map { #"{"id":\#($0),"vector":\#(vector($0))}"# }
        _ = try ok(client, #"{"op":"upsert","token":"tok","items":[\#(items.joined(separator: ","))]}"#)
        try buildGeneration(data: server.directory, id: "g2")
        let unauthorized = try call(client, #"{"op":"prepare","generation":"g2"}"#)
        guard case .object(let refusal)? = unauthorized["error"] else { Issue.record("prepare without a key: \(unauthorized)"); return }
        #expect(refusal["code"] == .string("unauthorized"))
        let prepared = try ok(client, #"{"op":"prepare","generation":"g2","token":"tok"}"#)
        #expect(prepared["generation"] == .string("g2") && prepared["staged"] == .bool(true), "\(prepared)")
        #expect(try served(server) == ("g1", "g2"))
        #expect(try ok(client, queries[0])["generation"] == .string("g1"), "a staged generation does not serve")
        // A write between prepare and activate is in the activated index.
        _ = try ok(client, #"{"op":"upsert","token":"tok","items":[{"id":"late","vector":[9,9,9,9]}]}"#)
        let missing = try call(client, #"{"op":"activate","generation":"g3","token":"tok"}"#)
        guard case .object(let notFound)? = missing["error"] else { Issue.record("activate of nothing staged: \(missing)"); return }
        #expect(notFound["code"] == .string("not_found"))
        let activated = try ok(client, #"{"op":"activate","generation":"g2","token":"tok"}"#)
        #expect(activated["generation"] == .string("g2") && activated["previous"] == .string("g1"), "\(activated)")
        #expect(try served(server) == ("g2", nil))
        let found = try ok(client, #"{"op":"search","token":"tok","vector":[1,1,1,1],"k":1,"nprobe":4}"#)
        guard case .array(let hits)? = found["hits"], case .object(let hit)? = hits.first else { Issue.record("no hits: \(found)"); return }
        #expect(found["generation"] == .string("g2") && hit["id"] == .string("late"))
    }
}
