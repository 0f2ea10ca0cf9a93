import Foundation
import SteerClient
import SteerCore
import SteerProtocol
import Testing

private func object(_ bytes: [UInt8]) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any], "not a JSON object: \(String(decoding: bytes, as: UTF8.self))")
}

private func line(_ operation: Request.Operation, collection: String? = nil) -> [UInt8] {
    RequestEncoder.encode(Request(operation: operation, token: "tok", collection: collection))
}

/// What the clients saw; `@unchecked Sendable` is safe because every access holds `lock`.
private final class Record: @unchecked Sendable {
    let lock = NSLock()
    var stop = false
    var failures: [String] = []
    var searchesBy: [String: Int] = [:]
    /// Item id → the collection the write's answer named.
    var landed: [Int64: String] = [:]

    func with<T>(_ body: (Record) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(self)
    }
}

@Suite(.serialized) struct CollectionEndToEndTests {
    /// The issue's proof: the alias is moved 100 times while 8 connections search and write through it
    /// and by name. Every request succeeds, no answer mixes collections (each hit carries its
    /// collection's tag), and every write is found in the collection its answer named, and only there.
    @Test func aliasMovedHundredTimesUnderLoad() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", "tok", "--public-reads", "true", "--sync-writes", "false"])
        defer {
            server.terminate()
            server.removeData()
        }
        let admin = try server.connection()
        var generator = SeededGenerator(seed: 19)
        func vector() -> [Float] { (0..<4).map { _ in Float.random(in: -1...1, using: &generator) } }
        for (name, base) in [("a", 0), ("b", 1000)] {
            #expect(try object(admin.roundTrip(line(.createCollection(CollectionSettings(name: name, dimension: 4, metric: .l2)))))["ok"] as? Bool == true)
            let items = (0..<40).map { ItemInput(id: .int(Int64(base + $0)), vector: vector(), tags: [name]) }
            #expect(try object(admin.roundTrip(line(.upsert(items), collection: name)))["upserted"] as? Int == 40)
        }
        #expect(try object(admin.roundTrip(line(.alias(alias: "live", collection: "a"))))["ok"] as? Bool == true)

        let record = Record()
        let group = DispatchGroup()
        let port = server.port
        for reader in 0..<4 {
            var seeded = SeededGenerator(seed: UInt64(100 + reader))
            let queries = (0..<64).map { _ in (0..<4).map { _ in Float.random(in: -1...1, using: &seeded) } }
            group.enter()
            Thread {
                defer { group.leave() }
                guard let connection = try? SteerConnection(host: "127.0.0.1", port: port) else {
                    record.with { $0.failures.append("reader \(reader) cannot connect") }
                    return
                }
                var round = 0
                while !record.with({ $0.stop }) {
                    // l2: the written items lie far away and never reach a top 10 of these queries.
                    let options = SearchOptions(k: 10)
                    let request = line(.search(queries: [queries[round % queries.count]], options: options, batch: false), collection: "live")
                    round += 1
                    do {
                        let answer = try object(try connection.roundTrip(request))
                        guard answer["ok"] as? Bool == true, let collection = answer["collection"] as? String, answer["generation"] is String,
                              let hits = answer["hits"] as? [[String: Any]], hits.count == 10 else {
                            record.with { $0.failures.append("search: \(answer)") }
                            continue
                        }
                        let tags = Set(hits.flatMap { $0["tags"] as? [String] ?? [] })
                        record.with { state in
                            if tags != [collection] { state.failures.append("mixed answer from \(collection): tags \(tags.sorted())") }
                            state.searchesBy[collection, default: 0] += 1
                        }
                    } catch {
                        record.with { $0.failures.append("search: \(error)") }
                    }
                }
            }.start()
        }
        for writer in 0..<4 {
            group.enter()
            Thread {
                defer { group.leave() }
                guard let connection = try? SteerConnection(host: "127.0.0.1", port: port) else {
                    record.with { $0.failures.append("writer \(writer) cannot connect") }
                    return
                }
                var count: Int64 = 0
                while !record.with({ $0.stop }) {
                    let id = 100_000 + Int64(writer) * 10_000 + count
                    // Writers 0 and 1 write through the alias, 2 and 3 name a collection (alternately).
                    let named: String = writer < 2 ? "live" : (count % 2 == 0 ? "a" : "b")
                    count += 1
                    let item = ItemInput(id: .int(id), vector: [100, 100, 100, Float(count % 7)], tags: ["written"])
                    do {
                        let answer = try object(try connection.roundTrip(line(.upsert([item]), collection: named)))
                        guard answer["upserted"] as? Int == 1, let collection = answer["collection"] as? String,
                              named == "live" || collection == named else {
                            record.with { $0.failures.append("upsert to \(named): \(answer)") }
                            continue
                        }
                        record.with { $0.landed[id] = collection }
                    } catch {
                        record.with { $0.failures.append("upsert: \(error)") }
                    }
                }
            }.start()
        }
        // Every client is connected and running before the first move.
        Thread.sleep(forTimeInterval: 0.2)
        let mover = try server.connection()
        for move in 0..<100 {
            let target = move % 2 == 0 ? "b" : "a"
            let answer = try object(try mover.roundTrip(line(.alias(alias: "live", collection: target))))
            #expect(answer["collection"] as? String == target && answer["previous"] as? String == (target == "a" ? "b" : "a"), "\(answer)")
            Thread.sleep(forTimeInterval: 0.005)
        }
        record.with { $0.stop = true }
        group.wait()

        let (failures, searchesBy, landed) = record.with { ($0.failures, $0.searchesBy, $0.landed) }
        #expect(failures.isEmpty, "\(failures.prefix(5))")
        #expect((searchesBy["a"] ?? 0) > 0 && (searchesBy["b"] ?? 0) > 0, "the readers saw both collections: \(searchesBy)")
        #expect(Set(landed.values) == ["a", "b"] && landed.count > 20, "\(landed.count) writes: \(Set(landed.values)), searches \(searchesBy)")
        // Every write is in the collection its answer named, and not in the other.
        let ids = landed.keys.sorted()
        for (name, other) in [("a", "b"), ("b", "a")] {
            var present = Set<Int64>()
            for start in stride(from: 0, to: ids.count, by: 1000) {
                let chunk = ids[start..<min(ids.count, start + 1000)].map { ItemID.int($0) }
                let got = try object(admin.roundTrip(line(.get(chunk), collection: name)))
                #expect(got["ok"] as? Bool == true, "\(got)")
                present.formUnion((got["items"] as? [[String: Any]] ?? []).compactMap { ($0["id"] as? NSNumber)?.int64Value })
            }
            let expected = Set(landed.filter { $0.value == name }.map(\.key))
            #expect(present == expected, "\(name): \(present.subtracting(expected).count) extra, \(expected.subtracting(present).count) missing")
            #expect(present.isDisjoint(with: Set(landed.filter { $0.value == other }.map(\.key))))
        }
    }

    /// Collections and aliases survive a crash (SIGKILL) and a restart, with every acknowledged write.
    @Test func collectionsAndAliasesSurviveACrash() throws {
        let first = try ServerProcess(arguments: ["--dimension", "3", "--admin-token", "tok"])
        defer { first.removeData() }
        let admin = try first.connection()
        #expect(try object(admin.roundTrip(line(.createCollection(CollectionSettings(name: "movies_v1", dimension: 2, metric: .cosine)))))["ok"] as? Bool == true)
        #expect(try object(admin.roundTrip(line(.createCollection(CollectionSettings(name: "movies_v2", dimension: 5, metric: .l2, indexSpec: "HNSW8")))))["ok"] as? Bool == true)
        #expect(try object(admin.roundTrip(line(.upsert([ItemInput(id: .string("m1"), vector: [0, 1], title: "one")]), collection: "movies_v1")))["upserted"] as? Int == 1)
        #expect(try object(admin.roundTrip(line(.upsert([ItemInput(id: .string("m1"), vector: [1, 2, 3, 4, 5], title: "five")]), collection: "movies_v2")))["upserted"] as? Int == 1)
        #expect(try object(admin.roundTrip(line(.alias(alias: "movies", collection: "movies_v2"))))["ok"] as? Bool == true)
        first.kill()

        let second = try ServerProcess(directory: first.directory, arguments: ["--admin-token", "tok"])
        defer { second.terminate() }
        let connection = try second.connection()
        let listed = try object(connection.roundTrip(line(.listCollections)))
        let names = (listed["collections"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(names == ["default", "movies_v1", "movies_v2"], "\(listed)")
        #expect(listed["aliases"] as? [String: String] == ["movies": "movies_v2"])
        let hit = try object(connection.roundTrip(line(.search(queries: [[1, 2, 3, 4, 5]], options: SearchOptions(k: 1), batch: false), collection: "movies")))
        #expect(hit["collection"] as? String == "movies_v2")
        #expect((hit["hits"] as? [[String: Any]])?.first?["title"] as? String == "five")
        let old = try object(connection.roundTrip(line(.get([.string("m1")]), collection: "movies_v1")))
        #expect((old["items"] as? [[String: Any]])?.first?["title"] as? String == "one")
        let described = try object(connection.roundTrip(line(.describeCollection("movies_v2"))))
        #expect(described["index_spec"] as? String == "HNSW8" && described["metric"] as? String == "l2" && described["dimension"] as? Int == 5)
    }
}

/// The built `steer-index` binary, beside `steer`.
private func steerIndex(_ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try steerBinary()).deletingLastPathComponent().appendingPathComponent("steer-index")
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = Pipe()
    try process.run()
    let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw SteerError(.internal, "steer-index \(arguments.first ?? "") exited \(process.terminationStatus): \(stderr)") }
}

/// docs/operations.md "Reindexing with an alias", step by step against the trainer's fixture
/// checkpoints: a collection per checkpoint, a generation built beside the running server, the alias
/// moved, the old collection dropped.
@Suite(.serialized) struct ReindexWithAliasEndToEndTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = root.appendingPathComponent("Tests/SteerModelTests/Fixtures").path
    static var minilm: String {
        ProcessInfo.processInfo.environment["STEER_MINILM_DIR"] ?? root.appendingPathComponent("models/all-MiniLM-L6-v2").path
    }

    private func golden(_ fixture: String) throws -> (history: [Int], top10: Set<Int>) {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/" + fixture + "/golden.json"))
        let cases = try #require((try JSONSerialization.jsonObject(with: data) as? [String: Any])?["cases"] as? [[String: Any]])
        let first = try #require(cases.first { $0["prompt"] is NSNull })
        return ((first["history"] as? [NSNumber] ?? []).map(\.intValue), Set((first["top10"] as? [NSNumber] ?? []).map(\.intValue)))
    }

    private func recommended(_ connection: SteerConnection, _ history: [Int], collection: String) throws -> (String?, Set<Int>) {
        let request = RecommendRequest(history: history.map { .int(Int64($0)) }, k: 10)
        let answer = try object(connection.roundTrip(line(.recommend(request), collection: collection)))
        let ids = (answer["hits"] as? [[String: Any]] ?? []).compactMap { ($0["id"] as? NSNumber)?.intValue }
        return (answer["collection"] as? String, Set(ids))
    }

    @Test func reindexAcrossCheckpointsWithAnAlias() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", "tok", "--public-reads", "true",
                                                   "--checkpoint-root", Self.fixtures, "--minilm", Self.minilm])
        defer {
            server.terminate()
            server.removeData()
        }
        let admin = try server.connection()
        let v1 = try object(admin.roundTrip(line(.createCollection(CollectionSettings(name: "movies_v1", dimension: nil, checkpoint: "demo-sasrec")))))
        #expect(v1["ok"] as? Bool == true, "\(v1)")
        #expect((v1["embedding_version"] as? String)?.hasPrefix("ckpt-") == true && v1["dimension"] as? Int == 40)
        #expect(try object(admin.roundTrip(line(.alias(alias: "movies", collection: "movies_v1"))))["ok"] as? Bool == true)
        let sasrec = try golden("demo-sasrec")
        var (served, ids) = try recommended(admin, sasrec.history, collection: "movies")
        #expect(served == "movies_v1" && ids == sasrec.top10)

        // The retrained model: a new collection from its checkpoint, a generation built beside the server.
        let v2 = try object(admin.roundTrip(line(.createCollection(CollectionSettings(name: "movies_v2", dimension: nil, checkpoint: "demo-gru4rec")))))
        let version = try #require(v2["embedding_version"] as? String)
        let data = server.directory + "/collections/movies_v2"
        // A read-only open beside the server can meet a compaction that just deleted a file it listed
        // (RocksDB answers `corrupt`); the documented remedy is to run the build again.
        var attempt = 0
        while true {
            do {
                try steerIndex(["build", "--data", server.directory, "--collection", "movies_v2", "--version", version, "--spec", "HNSW16",
                                "--shards", "2", "--out", data + "/generations/g2", "--generation-id", "g2", "--quiet"])
                break
            } catch {
                attempt += 1
                if attempt == 5 { throw error }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
        try steerIndex(["verify", data + "/generations/g2", "--data", server.directory, "--collection", "movies_v2", "--min-recall", "0.9"])
        #expect(throws: SteerError.self) { try steerIndex(["verify", data + "/generations/g2", "--data", server.directory, "--collection", "nope"]) }
        let swapped = try object(admin.roundTrip(line(.swap(generation: "g2", checkpoint: nil), collection: "movies_v2")))
        #expect(swapped["generation"] as? String == "g2" && swapped["collection"] as? String == "movies_v2", "\(swapped)")
        let gru4rec = try golden("demo-gru4rec")
        (served, ids) = try recommended(admin, gru4rec.history, collection: "movies_v2")
        #expect(served == "movies_v2" && ids.intersection(gru4rec.top10).count >= 9, "HNSW over 2 shards: \(ids) vs \(gru4rec.top10)")

        // Verified: move the alias, then drop the old collection.
        let moved = try object(admin.roundTrip(line(.alias(alias: "movies", collection: "movies_v2"))))
        #expect(moved["previous"] as? String == "movies_v1")
        (served, _) = try recommended(admin, gru4rec.history, collection: "movies")
        #expect(served == "movies_v2")
        #expect(try object(admin.roundTrip(line(.dropCollection("movies_v1"))))["dropped"] as? String == "movies_v1")
        let listed = try object(admin.roundTrip(line(.listCollections)))
        #expect((listed["collections"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String } == ["default", "movies_v2"])
        // The files go once the requests that held it ended (at once here; the answer does not wait).
        let gone = Date().addingTimeInterval(10)
        while FileManager.default.fileExists(atPath: server.directory + "/collections/movies_v1"), Date() < gone { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!FileManager.default.fileExists(atPath: server.directory + "/collections/movies_v1"))
    }
}

/// `steer collections …` on a stopped server's data directory: the ops the protocol has, refused while a
/// server holds the directory, and what they made is served after the next start.
@Suite(.serialized) struct OfflineCollectionsEndToEndTests {
    private func steer(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try steerBinary())
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = Pipe()
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    @Test func offlineCreateAliasAndList() throws {
        let first = try ServerProcess(arguments: ["--dimension", "3"])
        defer { first.removeData() }
        let data = first.directory
        #expect(try steer(["collections", "list", "--data", data]).status == 1, "a running server holds the directory")
        first.terminate()
        let created = try steer(["collections", "create", "--data", data, "--name", "books", "--dimension", "2", "--metric", "l2"])
        #expect(created.status == 0 && created.output.contains(#""name":"books""#), "\(created)")
        #expect(try steer(["collections", "alias", "--data", data, "--alias", "reading", "--collection", "books"]).status == 0)
        let refused = try steer(["collections", "drop", "--data", data, "--name", "books"])
        #expect(refused.status == 1 && refused.output.contains("in_use"))
        #expect(try steer(["collections", "create", "--data", data, "--name", "Bad", "--dimension", "2"]).status == 1)

        let second = try ServerProcess(directory: data)
        defer { second.terminate() }
        let connection = try second.connection()
        let upsert = RequestEncoder.encode(Request(operation: .upsert([ItemInput(id: .int(1), vector: [3, 4])]), collection: "reading"))
        #expect(try object(connection.roundTrip(upsert))["collection"] as? String == "books")
        let listed = try object(connection.roundTrip(line(.listCollections)))
        #expect(listed["aliases"] as? [String: String] == ["reading": "books"])
    }

    @Test func aSnapshotOfANamedCollectionRestoresItsItems() throws {
        let first = try ServerProcess(arguments: ["--dimension", "3"])
        defer { first.removeData() }
        let data = first.directory
        let connection = try first.connection()
        let create = RequestEncoder.encode(Request(operation: .createCollection(CollectionSettings(name: "books", dimension: 2, metric: .l2))))
        #expect(try object(connection.roundTrip(create))["ok"] as? Bool == true)
        let items = [ItemInput(id: .int(1), vector: [3, 4], title: "Dune"), ItemInput(id: .int(2), vector: [-1, 0])]
        #expect(try object(connection.roundTrip(RequestEncoder.encode(Request(operation: .upsert(items), collection: "books"))))["ok"] as? Bool == true)
        let intoDefault = RequestEncoder.encode(Request(operation: .upsert([ItemInput(id: .int(9), vector: [1, 1, 1])])))
        #expect(try object(connection.roundTrip(intoDefault))["ok"] as? Bool == true)
        first.terminate()

        let snapshot = NSTemporaryDirectory() + "steer-collection-snapshot-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: snapshot) }
        #expect(try steer(["snapshot", "--data", data, "--collection", "nope", "--out", snapshot]).status == 1)
        #expect(!FileManager.default.fileExists(atPath: snapshot))
        let written = try steer(["snapshot", "--data", data, "--collection", "books", "--out", snapshot])
        #expect(written.status == 0, "\(written.output)")

        // The restored directory serves the collection's items (2-d, l2) as its default collection.
        let restored = try ServerProcess(arguments: ["--restore", snapshot])
        defer { restored.terminate(); restored.removeData() }
        let answer = try object(restored.connection().roundTrip(RequestEncoder.encode(Request(operation: .get([.int(1), .int(2), .int(9)])))))
        let found = (answer["items"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? Int }
        #expect(found.sorted() == [1, 2], "\(answer)")
        #expect((answer["missing"] as? [Int]) == [9], "\(answer)")

        // With --with-collections the snapshot holds the whole directory: the default collection, the
        // named one and the catalog; `--collection` and `--with-collections` together are refused.
        let whole = NSTemporaryDirectory() + "steer-collection-snapshot-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: whole) }
        #expect(try steer(["snapshot", "--data", data, "--collection", "books", "--with-collections", "--out", whole]).status != 0)
        #expect(!FileManager.default.fileExists(atPath: whole))
        let all = try steer(["snapshot", "--data", data, "--with-collections", "--out", whole])
        #expect(all.status == 0 && all.output.contains("1 named collections"), "\(all.output)")
        let both = try ServerProcess(arguments: ["--restore", whole])
        defer { both.terminate(); both.removeData() }
        let toBoth = try both.connection()
        let inDefault = try object(toBoth.roundTrip(RequestEncoder.encode(Request(operation: .get([.int(1), .int(9)])))))
        #expect((inDefault["items"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? Int } == [9], "\(inDefault)")
        let inBooks = try object(toBoth.roundTrip(RequestEncoder.encode(Request(operation: .get([.int(1), .int(2), .int(9)]), collection: "books"))))
        #expect((inBooks["items"] as? [[String: Any]] ?? []).compactMap { $0["title"] as? String } == ["Dune"], "\(inBooks)")
        #expect((inBooks["items"] as? [[String: Any]] ?? []).count == 2, "\(inBooks)")
    }
}
