import Foundation
import SteerClient
import SteerCore
import Testing

private let token = "ingest-token"

private func steerIndex(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try steerBinary()).deletingLastPathComponent().appendingPathComponent("steer-index")
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = Pipe()
    try process.run()
    let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, stderr)
}

private func call(_ connection: SteerConnection, _ request: [String: Any]) throws -> [String: Any] {
    let response = try connection.roundTrip([UInt8](try JSONSerialization.data(withJSONObject: request)))
    guard let object = try JSONSerialization.jsonObject(with: Data(response)) as? [String: Any] else {
        throw SteerError(.internal, "not an object: \(String(decoding: response, as: UTF8.self))")
    }
    return object
}

/// What the reading clients saw; `@unchecked Sendable` is safe because every access holds `lock`.
private final class Observed: @unchecked Sendable {
    let lock = NSLock()
    var stop = false
    var failures: [String] = []
    var generations: [String: Int] = [:]

    func with<T>(_ body: (Observed) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(self)
    }
}

@Suite(.serialized) struct VersionIngestEndToEndTests {
    @Test func aNewVersionStreamsInUnderLoadThenBuildsAndSwaps() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", token, "--public-reads", "true", "--sync-writes", "false",
                                                   "--max-batch", "64"])
        defer {
            server.terminate()
            server.removeData()
        }
        let admin = try server.connection()
        var generator = SeededGenerator(seed: 41)
        func vector() -> [Double] { (0..<4).map { _ in Double(Float.random(in: -1...1, using: &generator)) } }
        let v1 = (0..<300).map { ["id": $0, "vector": vector(), "tags": [$0 % 2 == 0 ? "even" : "odd"]] as [String: Any] }
        for start in stride(from: 0, to: 300, by: 50) {
            #expect(try call(admin, ["op": "upsert", "token": token, "items": Array(v1[start..<(start + 50)])])["ok"] as? Bool == true)
        }
        // The new version: the 300 items and 20 new ones.
        let v2: [(id: Int, vector: [Double])] = (0..<320).map { ($0, vector()) }

        // Readers search and recommend throughout.
        let observed = Observed()
        let port = server.port
        var threads: [Thread] = []
        for client in 0..<2 {
            let thread = Thread {
                guard let connection = try? SteerConnection(host: "127.0.0.1", port: port) else {
                    observed.with { $0.failures.append("client \(client) could not connect") }
                    return
                }
                var round = 0
                while !observed.with({ $0.stop }) {
                    round += 1
                    let request: [String: Any] = round % 2 == 0 ? ["op": "search", "vector": [0.1, Double(client), -0.3, 0.2], "k": 5]
                        : ["op": "recommend", "history": [round % 300, (round * 7) % 300], "k": 5]
                    guard let answer = try? call(connection, request), answer["ok"] as? Bool == true, let generation = answer["generation"] as? String else {
                        observed.with { $0.failures.append("client \(client) round \(round) failed") }
                        continue
                    }
                    observed.with { $0.generations[generation, default: 0] += 1 }
                }
            }
            thread.start()
            threads.append(thread)
        }
        defer {
            observed.with { $0.stop = true }
            while threads.contains(where: { !$0.isFinished }) { Thread.sleep(forTimeInterval: 0.01) }
        }

        // Streamed in chunks of 40 (the last chunk carries no items and completes the version).
        for start in stride(from: 0, to: v2.count, by: 40) {
            let chunk = v2[start..<min(v2.count, start + 40)].map { item -> [String: Any] in
                var object: [String: Any] = ["id": item.id, "vector": item.vector]
                if item.id >= 300 { object["title"] = "new \(item.id)"; object["tags"] = ["new"] }
                return object
            }
            let answer = try call(admin, ["op": "ingest_vectors", "token": token, "version": "v2", "dimension": 4, "checkpoint_hash": "test-ckpt",
                                          "items": chunk])
            #expect(answer["ok"] as? Bool == true && answer["complete"] as? Bool == false, "\(answer)")
            if start == 0 {
                // Incomplete: the index builder refuses it.
                let early = try steerIndex(["build", "--data", server.directory, "--version", "v2", "--spec", "Flat", "--shards", "1",
                                            "--out", server.directory + "/generations/early", "--quiet"])
                #expect(early.status != 0 && early.stderr.contains("still being ingested"), "\(early.stderr)")
            }
        }
        // A chunk of the serving version, a chunk of another source and a vector of the wrong size are refused.
        let serving = try call(admin, ["op": "ingest_vectors", "token": token, "version": "v1", "dimension": 4, "items": [["id": 1, "vector": [1, 2, 3, 4]]]])
        #expect((serving["error"] as? [String: Any])?["code"] as? String == "invalid_request", "\(serving)")
        let otherSource = try call(admin, ["op": "ingest_vectors", "token": token, "version": "v2", "dimension": 4, "checkpoint_hash": "other", "items": []])
        #expect((otherSource["error"] as? [String: Any])?["code"] as? String == "invalid_request", "\(otherSource)")
        let wrongSize = try call(admin, ["op": "ingest_vectors", "token": token, "version": "v2", "dimension": 4, "checkpoint_hash": "test-ckpt",
                                         "items": [["id": 1, "vector": [1, 2, 3]]]])
        #expect((wrongSize["error"] as? [String: Any])?["code"] as? String == "dimension_mismatch", "\(wrongSize)")
        let unauthorized = try call(admin, ["op": "ingest_vectors", "version": "v2", "dimension": 4, "items": []])
        #expect((unauthorized["error"] as? [String: Any])?["code"] as? String == "unauthorized")
        let done = try call(admin, ["op": "ingest_vectors", "token": token, "version": "v2", "dimension": 4, "checkpoint_hash": "test-ckpt",
                                    "items": [], "complete": true])
        #expect(done["complete"] as? Bool == true && done["total"] as? Int == 320, "\(done)")

        // Build beside the live server, then swap to it under the same load.
        let built = try steerIndex(["build", "--data", server.directory, "--version", "v2", "--spec", "Flat", "--shards", "2",
                                    "--out", server.directory + "/generations/gen-v2", "--generation-id", "gen-v2", "--quiet"])
        #expect(built.status == 0, "\(built.stderr)")
        let swap = try call(admin, ["op": "swap", "token": token, "generation": "gen-v2"])
        #expect(swap["ok"] as? Bool == true && swap["previous"] as? String == "g1", "\(swap)")
        Thread.sleep(forTimeInterval: 0.3)

        // The new version serves: search equals brute force over v2, new items included.
        let query: [Double] = [0.4, -0.1, 0.8, 0.3]
        let answer = try call(admin, ["op": "search", "vector": query, "k": 10])
        var scored: [(id: Int, score: Float)] = []
        for item in v2 {
            var score: Float = 0
            for (value, weight) in zip(item.vector, query) { score += Float(value) * Float(weight) }
            scored.append((item.id, score))
        }
        scored.sort { $0.score != $1.score ? $0.score > $1.score : $0.id < $1.id }
        let expected = scored.prefix(10).map(\.id)
        #expect(answer["generation"] as? String == "gen-v2")
        #expect(((answer["hits"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? Int } == Array(expected))
        let newItem = try call(admin, ["op": "get", "ids": [310]])
        let fetched = (newItem["items"] as? [[String: Any]])?.first
        #expect(fetched?["title"] as? String == "new 310" && (fetched?["vector"] as? [Double])?.map { Float($0) } == v2[310].vector.map { Float($0) })

        observed.with { $0.stop = true }
        while threads.contains(where: { !$0.isFinished }) { Thread.sleep(forTimeInterval: 0.01) }
        observed.with { seen in
            #expect(seen.failures.isEmpty, "\(seen.failures.prefix(5))")
            #expect(Set(seen.generations.keys).isSubset(of: ["g1", "gen-v2"]), "\(seen.generations)")
            #expect(seen.generations["g1", default: 0] > 0 && seen.generations["gen-v2", default: 0] > 0, "\(seen.generations)")
        }
    }

    /// Runs the built `steer` with `arguments`; its exit status and output.
    private func steer(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try steerBinary())
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let stdout = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, stdout, stderr)
    }

    /// The loop's serving half on the trainer's fixtures: a server on the SASRec checkpoint gets the GRU4Rec
    /// checkpoint's embeddings streamed in (`steer ingest --server`), a generation is built beside it and
    /// swapped to with the new checkpoint under a recommend load; afterwards the answers are the GRU4Rec
    /// golden file's (the trainer's own scores).
    @Test func steerIngestServerStreamsACheckpointAndTheSwapServesItsModel() throws {
        let fixtures = RecommendEndToEndTests.fixtures
        let server = try ServerProcess(arguments: ["--checkpoint", fixtures + "/demo-sasrec", "--minilm", RecommendEndToEndTests.minilm,
                                                   "--admin-token", token, "--public-reads", "true", "--sync-writes", "false"])
        defer {
            server.terminate()
            server.removeData()
        }
        let tokenFile = server.directory + ".token"
        try Data(token.utf8).write(to: URL(fileURLWithPath: tokenFile))
        defer { try? FileManager.default.removeItem(atPath: tokenFile) }

        let observed = Observed()
        let port = server.port
        let load = Thread {
            guard let connection = try? SteerConnection(host: "127.0.0.1", port: port) else {
                observed.with { $0.failures.append("could not connect") }
                return
            }
            var round = 0
            while !observed.with({ $0.stop }) {
                round += 1
                let request: [String: Any] = ["op": "recommend", "history": [1 + round % 400, 1 + (round * 13) % 400], "prompt": "something funny", "k": 5]
                guard let answer = try? call(connection, request), answer["ok"] as? Bool == true, let generation = answer["generation"] as? String else {
                    observed.with { $0.failures.append("round \(round) failed") }
                    continue
                }
                observed.with { $0.generations[generation, default: 0] += 1 }
            }
        }
        load.start()
        defer {
            observed.with { $0.stop = true }
            while !load.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        }

        let ingest = try steer(["ingest", "--server", "127.0.0.1:\(port)", "--token-file", tokenFile, "--checkpoint", fixtures + "/demo-gru4rec",
                                "--batch-size", "64", "--quiet"])
        #expect(ingest.status == 0, "\(ingest.stderr)")
        let version = try #require(ingest.stdout.split(separator: " ").dropFirst().first.map(String.init))
        #expect(version.hasPrefix("ckpt-"))
        // Streaming again is idempotent.
        #expect(try steer(["ingest", "--server", "127.0.0.1:\(port)", "--token-file", tokenFile, "--checkpoint", fixtures + "/demo-gru4rec",
                           "--quiet"]).status == 0)
        let built = try steerIndex(["build", "--data", server.directory, "--version", version, "--spec", "Flat", "--shards", "1",
                                    "--out", server.directory + "/generations/gru", "--generation-id", "gru", "--quiet"])
        #expect(built.status == 0, "\(built.stderr)")
        let admin = try server.connection()
        let swap = try call(admin, ["op": "swap", "token": token, "generation": "gru", "checkpoint": "demo-gru4rec"])
        #expect(swap["ok"] as? Bool == true, "\(swap)")
        Thread.sleep(forTimeInterval: 0.2)
        observed.with { $0.stop = true }
        while !load.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        observed.with { seen in
            #expect(seen.failures.isEmpty, "\(seen.failures.prefix(5))")
            #expect(seen.generations.count == 2 && seen.generations["gru", default: 0] > 0, "\(seen.generations)")
        }

        // The answers are now the GRU4Rec checkpoint's, as the trainer scored them.
        let golden = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixtures + "/demo-gru4rec/golden.json"))) as? [String: Any])
        let cases = try #require(golden["cases"] as? [[String: Any]])
        var compared = 0
        for (number, entry) in cases.enumerated() {
            let history = (entry["history"] as? [Any]) ?? []
            if history.isEmpty, entry["prompt"] is NSNull { continue }
            var request: [String: Any] = ["op": "recommend", "history": history, "k": 10]
            if let prompt = entry["prompt"] as? String { request["prompt"] = prompt }
            let answer = try call(admin, request)
            #expect(answer["generation"] as? String == "gru")
            let got = ((answer["hits"] as? [[String: Any]]) ?? []).compactMap { ($0["id"] as? NSNumber)?.intValue }
            let expected = (entry["top10"] as? [NSNumber] ?? []).map(\.intValue)
            let scores = (entry["top10_scores"] as? [NSNumber])?.map(\.doubleValue) ?? []
            // Equal, except that two ids may trade places where the reference scores differ by < 1e-4.
            var same = got.count == expected.count && Set(got) == Set(expected)
            for (position, id) in got.enumerated() where same && id != expected[position] {
                guard let other = expected.firstIndex(of: id), scores.count == expected.count, abs(scores[other] - scores[position]) < 1e-4 else {
                    same = false
                    break
                }
            }
            #expect(same, "case \(number): \(got) vs \(expected)")
            compared += 1
        }
        #expect(compared >= 8)
    }
}
