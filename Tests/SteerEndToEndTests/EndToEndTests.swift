import Foundation
import SteerClient
import SteerCore
import SteerProtocol
import Testing

private func text(_ bytes: [UInt8]?) -> String { bytes.map { String(decoding: $0, as: UTF8.self) } ?? "<eof>" }

private let token = "tok"

/// Random 4-d items with tags, as client items and as brute-force rows.
private func randomItems(_ count: Int, seed: UInt64) -> [ClientItem] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { index in
        ClientItem(id: index % 3 == 0 ? .string("s\(index)") : .int(Int64(index)),
                   vector: (0..<4).map { _ in Float.random(in: -1...1, using: &generator) },
                   tags: ["a", "b", "c"].filter { _ in Bool.random(using: &generator) }, title: "t\(index)")
    }
}

private func bruteForce(_ items: [ClientItem], _ query: [Float], k: Int, where keep: (ClientItem) -> Bool = { _ in true }) -> [ItemID] {
    let kept = items.filter(keep)
    return ExactSearch.topK(query: query, base: kept.flatMap(\.vector), dimension: 4, k: k, metric: .innerProduct).map { kept[Int($0.label)].id }
}

private func upload(_ items: [ClientItem], to connection: SteerConnection) throws {
    for start in stride(from: 0, to: items.count, by: 8) {
        let response = text(try connection.roundTrip(RequestLine.upsert(Array(items[start..<min(items.count, start + 8)]), token: token)))
        guard response.contains(#""ok":true"#) else { throw SteerError(.internal, "upsert failed: \(response)") }
    }
}

private let malformed: [(line: String, code: String)] = {
    let vector9 = Array(repeating: "[1,2,3,4]", count: 9).joined(separator: ",")
    let longID = String(repeating: "x", count: 600)
    return [
        ("not json", "parse_error"),
        (#"{"op":"ping""#, "parse_error"),
        (#"{"op":"ping",}"#, "parse_error"),
        (#"{'op':'ping'}"#, "parse_error"),
        (#"[1,2]"#, "invalid_request"),
        (#""ping""#, "invalid_request"),
        (#"{}"#, "invalid_request"),
        (#"{"op":null}"#, "invalid_request"),
        (#"{"op":"PING"}"#, "unknown_op"),
        (#"{"op":"fly"}"#, "unknown_op"),
        (#"{"op":"ping","id":{"a":1}}"#, "invalid_request"),
        (#"{"op":"ping","id":1.5}"#, "invalid_request"),
        (#"{"op":"ping","extra":1}"#, "invalid_request"),
        (#"{"op":"ping","op":"stats"}"#, "parse_error"),
        (#"{"op":"search","k":3}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,4]}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3],"k":3}"#, "dimension_mismatch"),
        (#"{"op":"search","vector":[],"k":3}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,NaN],"k":3}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,-Infinity],"k":3}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,1e999],"k":3}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,"4"],"k":3}"#, "invalid_request"),
        (#"{"op":"search","vector":"1,2,3,4","k":3}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,4],"k":0}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,4],"k":-1}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,4],"k":101}"#, "too_large"),
        (#"{"op":"search","vector":[1,2,3,4],"k":"3"}"#, "invalid_request"),
        (#"{"op":"search","vector_b64":"!!!!","k":3}"#, "invalid_request"),
        (#"{"op":"search","vector_b64":"AAAA","k":3}"#, "invalid_request"),
        (#"{"op":"search","vector_b64":"AACAPw==","k":3}"#, "dimension_mismatch"),
        (#"{"op":"search","vector_b64":123,"k":3}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,4],"vector_b64":"AACAPw==","k":3}"#, "invalid_request"),
        (#"{"op":"search","vectors":[],"k":3}"#, "invalid_request"),
        (#"{"op":"search","vectors":[\#(vector9)],"k":3}"#, "too_large"),
        (#"{"op":"search","vectors":[[1,2,3,4],[1,2]],"k":3}"#, "dimension_mismatch"),
        (#"{"op":"search","vector":[1,2,3,4],"k":3,"filter":[]}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,4],"k":3,"filter":{"tags_any":"a"}}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,4],"k":3,"ef_search":0}"#, "invalid_request"),
        (#"{"op":"search","vector":[1,2,3,4],"k":3,"token":5}"#, "invalid_request"),
        (#"{"op":"upsert","items":[{"id":1,"vector":[1,2,3,4]}]}"#, "unauthorized"),
        (#"{"op":"upsert","token":"bad","items":[{"id":1,"vector":[1,2,3,4]}]}"#, "unauthorized"),
        (#"{"op":"upsert","token":"tok","items":[{"id":1,"vector":[1,2,3]}]}"#, "dimension_mismatch"),
        (#"{"op":"upsert","token":"tok","items":[{"id":1,"vector":[1,2,3,4]},{"id":1,"vector":[1,2,3,4]}]}"#, "invalid_request"),
        (#"{"op":"upsert","token":"tok","items":{}}"#, "invalid_request"),
        (#"{"op":"upsert","token":"tok","items":[{"vector":[1,2,3,4]}]}"#, "invalid_request"),
        (#"{"op":"upsert","token":"tok","items":[{"id":true,"vector":[1,2,3,4]}]}"#, "invalid_request"),
        (#"{"op":"upsert","token":"tok","items":[{"id":"x","vector":[1,2,3,4],"tags":[""]}]}"#, "invalid_request"),
        (#"{"op":"upsert","token":"tok","items":[{"id":"\#(longID)","vector":[1,2,3,4]}]}"#, "too_large"),
        (#"{"op":"upsert","token":"tok","items":[{"id":"x","vector":[1,2,3,4],"attributes":"a"}]}"#, "invalid_request"),
        (#"{"op":"delete","token":"tok"}"#, "invalid_request"),
        (#"{"op":"delete","token":"tok","ids":[null]}"#, "invalid_request"),
        (#"{"op":"get","ids":[]}"#, "invalid_request"),
        (#"{"op":"get","ids":[1,2,3,4,5,6,7,8,9]}"#, "too_large"),
        (#"{"op":"recommend","k":3}"#, "invalid_request"),
        (#"{"op":"recommend","history":["nobody"],"k":3}"#, "not_found"),
        (#"{"op":"recommend","history":[],"k":3}"#, "invalid_request"),
        (#"{"op":"recommend","history":[1],"constraints":"maybe"}"#, "invalid_request"),
        (#"{"op":"encode","history":["nobody"]}"#, "not_found"),
        (#"{"op":"swap","generation":"g9"}"#, "unauthorized"),
        (#"{"op":"swap","token":"tok","generation":"g9"}"#, "not_found"),
        (String(repeating: "z", count: 5000), "too_large"),
    ]
}()

@Suite(.serialized) struct EndToEndTests {
    @Test func binaryIsPresent() throws {
        #expect(FileManager.default.isExecutableFile(atPath: try steerBinary()))
    }

    @Test func everyMalformedRequestGetsItsCodeAndTheConnectionKeepsWorking() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", token, "--public-reads", "true", "--max-k", "100", "--max-batch", "8", "--max-line-bytes", "4096"])
        defer {
            server.terminate()
            server.removeData()
        }
        let connection = try server.connection()
        try upload(randomItems(10, seed: 1), to: connection)
        for (index, entry) in malformed.enumerated() {
            let response = try connection.roundTrip(Array(entry.line.utf8))
            do {
                _ = try SteerClient.check(response)
                Issue.record("case \(index) accepted")
            } catch {
                #expect(error.code.rawValue == entry.code, "case \(index) '\(entry.line.prefix(80))': \(error)")
                #expect(!error.message.isEmpty)
            }
            let after = text(try connection.roundTrip(Array(#"{"id":"after-\#(index)","op":"ping"}"#.utf8)))
            #expect(after == #"{"id":"after-\#(index)","ok":true}"#, "case \(index)")
        }
        // Invalid UTF-8 inside a string.
        let bad: [UInt8] = Array(#"{"op":"get","ids":[""#.utf8) + [0xFF, 0xFE] + Array(#""]}"#.utf8)
        #expect(text(try connection.roundTrip(bad)).contains(#""code":"parse_error""#))
        #expect(text(try connection.roundTrip(RequestLine.ping(id: 1))) == #"{"id":1,"ok":true}"#)
    }

    @Test func searchEqualsBruteForceOnAFlatIndex() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--index-spec", "Flat", "--admin-token", token, "--public-reads", "true", "--max-batch", "8"])
        defer {
            server.terminate()
            server.removeData()
        }
        let connection = try server.connection()
        let items = randomItems(300, seed: 2)
        try upload(items, to: connection)
        var generator = SeededGenerator(seed: 3)
        for round in 0..<20 {
            let query = (0..<4).map { _ in Float.random(in: -1...1, using: &generator) }
            let line = RequestLine.search(query, k: 10, base64: round % 2 == 0, filter: round % 4 == 1 ? (any: ["a"], none: ["b"]) : nil)
            let response = try SteerClient.check(try connection.roundTrip(line))
            let ids = try hits(response).map(\.id)
            let expected = round % 4 == 1
                ? bruteForce(items, query, k: 10) { $0.tags.contains("a") && !$0.tags.contains("b") }
                : bruteForce(items, query, k: 10)
            #expect(ids == expected, "round \(round)")
        }
    }

    private func hits(_ response: JSONObject) throws -> [(id: ItemID, score: Float)] {
        guard case .array(let list)? = response["hits"] else { throw SteerError(.internal, "no hits") }
        return try list.map { element in
            guard case .object(let hit) = element else { throw SteerError(.internal, "hit is not an object") }
            let id: ItemID
            switch hit["id"] {
            case .int(let value)?: id = .int(value)
            case .string(let value)?: id = .string(value)
            default: throw SteerError(.internal, "hit without id")
            }
            switch hit["score"] {
            case .int(let value)?: return (id, Float(value))
            case .double(let value)?: return (id, Float(value))
            default: throw SteerError(.internal, "hit without score")
            }
        }
    }

    @Test func upsertIsVisibleToTheNextSearchOnAnotherConnection() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4"])
        defer {
            server.terminate()
            server.removeData()
        }
        let writer = try server.connection()
        let reader = try server.connection()
        for index in 0..<50 {
            let vector: [Float] = [Float(index + 1) * 10, 0, 0, 0]
            _ = try SteerClient.check(try writer.roundTrip(RequestLine.upsert([ClientItem(id: .int(Int64(index)), vector: vector)])))
            let top = try hits(try SteerClient.check(try reader.roundTrip(RequestLine.search([1, 0, 0, 0], k: 1))))
            #expect(top.first?.id == .int(Int64(index)))
        }
        _ = try SteerClient.check(try writer.roundTrip(RequestLine.delete([.int(49)])))
        #expect(try hits(try SteerClient.check(try reader.roundTrip(RequestLine.search([1, 0, 0, 0], k: 1)))).first?.id == .int(48))
    }

    @Test func pipelinedResponsesArriveInOrder() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4"])
        defer {
            server.terminate()
            server.removeData()
        }
        let connection = try server.connection()
        try upload(randomItems(40, seed: 4), to: connection)
        var batch: [UInt8] = []
        for index in 0..<1000 {
            batch += index % 2 == 0 ? RequestLine.search([1, 0, 0, Float(index)], k: 3, id: Int64(index)) : RequestLine.ping(id: Int64(index))
            batch.append(10)
        }
        try connection.write(batch)
        for index in 0..<1000 {
            let response = try SteerClient.check(try #require(try connection.readLine()))
            #expect(response["id"] == .int(Int64(index)))
        }
    }

    @Test func concurrentClientsAllGetCorrectAnswers() async throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", token, "--public-reads", "true"])
        defer {
            server.terminate()
            server.removeData()
        }
        let items = randomItems(200, seed: 5)
        try upload(items, to: try server.connection())
        let port = server.port
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<8 {
                group.addTask {
                    let connection = try SteerConnection(host: "127.0.0.1", port: port)
                    for round in 0..<40 {
                        let query = items[(client * 40 + round) % items.count].vector
                        let response = try SteerClient.check(try connection.roundTrip(RequestLine.search(query, k: 5, base64: client % 2 == 0)))
                        guard case .array(let list)? = response["hits"] else { throw SteerError(.internal, "no hits") }
                        let first = list.first.flatMap { element -> ItemID? in
                            guard case .object(let hit) = element else { return nil }
                            if case .int(let value)? = hit["id"] { return .int(value) }
                            if case .string(let value)? = hit["id"] { return .string(value) }
                            return nil
                        }
                        #expect(first == bruteForce(items, query, k: 1).first)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    @Test func sigtermWithRequestsInFlightLosesNoneAndRestartKeepsEverything() throws {
        let directory = NSTemporaryDirectory() + "steer-e2e-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let items = randomItems(100, seed: 6)
        let query: [Float] = [0.3, -0.2, 0.9, 0.1]
        let expected = bruteForce(items, query, k: 10)
        do {
            let server = try ServerProcess(directory: directory, arguments: ["--dimension", "4", "--admin-token", token, "--public-reads", "true"])
            try upload(items, to: try server.connection())
            let connections = try (0..<4).map { _ in try server.connection() }
            for connection in connections {
                var batch: [UInt8] = []
                for index in 0..<500 {
                    batch += RequestLine.search(query, k: 10, id: Int64(index))
                    batch.append(10)
                }
                try connection.write(batch)
            }
            server.process.terminate() // SIGTERM while the requests are in flight
            for connection in connections {
                for index in 0..<500 {
                    let response = try SteerClient.check(try #require(try connection.readLine(), "response \(index) lost"))
                    #expect(response["id"] == .int(Int64(index)))
                    #expect(try hits(response).map(\.id) == expected)
                }
                #expect(try connection.readLine() == nil)
            }
            server.process.waitUntilExit()
            #expect(server.process.terminationStatus == 0)
        }
        let restarted = try ServerProcess(directory: directory)
        defer { restarted.terminate() }
        let connection = try restarted.connection()
        let stats = try SteerClient.check(try connection.roundTrip(RequestLine.stats()))
        #expect(stats["items"] == .int(100))
        #expect(stats["dimension"] == .int(4))
        #expect(try hits(try SteerClient.check(try connection.roundTrip(RequestLine.search(query, k: 10)))).map(\.id) == expected)
        let got = try SteerClient.check(try connection.roundTrip(Array(#"{"op":"get","ids":["s0"]}"#.utf8)))
        guard case .array(let found)? = got["items"], case .object(let item)? = found.first else {
            Issue.record("item s0 lost")
            return
        }
        #expect(item["title"] == .string("t0"))
    }

    @Test func settingsComeFromFlagsThenEnvironmentThenTheConfigFile() throws {
        let file = NSTemporaryDirectory() + "steer-e2e-config-" + UUID().uuidString + ".json"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data(#"{"dimension": 2, "max_k": 50, "max_batch": 3, "admin_token": "from-file", "public_reads": true}"#.utf8).write(to: URL(fileURLWithPath: file))
        let server = try ServerProcess(arguments: ["--config", file, "--max-batch", "2"], environment: ["STEER_MAX_K": "5"])
        defer {
            server.terminate()
            server.removeData()
        }
        let connection = try server.connection()
        #expect(text(try connection.roundTrip(Array(#"{"op":"search","vector":[1,0],"k":6}"#.utf8))).contains("limit is 5"))
        #expect(text(try connection.roundTrip(Array(#"{"op":"get","ids":[1,2,3]}"#.utf8))).contains("limit is 2"))
        #expect(text(try connection.roundTrip(RequestLine.upsert([ClientItem(id: .int(1), vector: [1, 0])], token: "from-file"))).contains(#""upserted":1"#))
        let stats = try SteerClient.check(try connection.roundTrip(RequestLine.stats()))
        #expect(stats["dimension"] == .int(2))
    }

    @Test func aBadConfigFileStopsTheServerWithAMessage() throws {
        let file = NSTemporaryDirectory() + "steer-e2e-config-" + UUID().uuidString + ".json"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data(#"{"dimension": 2, "colour": "blue"}"#.utf8).write(to: URL(fileURLWithPath: file))
        #expect {
            _ = try ServerProcess(arguments: ["--config", file])
        } throws: { error in
            "\(error)".contains("unknown key 'colour'")
        }
    }
}
