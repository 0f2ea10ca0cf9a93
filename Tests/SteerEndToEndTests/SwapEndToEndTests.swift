import Foundation
import SteerClient
import SteerCore
import Testing

/// The built `steer-index` binary, beside `steer`.
private func steerIndexBinary() throws -> String {
    let path = URL(fileURLWithPath: try steerBinary()).deletingLastPathComponent().appendingPathComponent("steer-index").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw SteerError(.notFound, "the built steer-index binary is not at '\(path)'; build with --build-tests")
    }
    return path
}

/// Runs `steer-index build` on the server's data directory while it serves.
private func buildGeneration(data: String, id: String, shards: Int) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try steerIndexBinary())
    process.arguments = ["build", "--data", data, "--version", "v1", "--spec", "Flat", "--shards", String(shards),
                         "--out", data + "/generations/" + id, "--generation-id", id, "--quiet"]
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = Pipe()
    try process.run()
    let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw SteerError(.internal, "steer-index build exited \(process.terminationStatus): \(stderr)")
    }
}

private func object(_ bytes: [UInt8]) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any], "not a JSON object: \(String(decoding: bytes, as: UTF8.self))")
}

/// What the searching clients saw; `@unchecked Sendable` is safe because every access holds `lock`.
private final class LoadRecord: @unchecked Sendable {
    let lock = NSLock()
    var stop = false
    var swapReturned = false
    var errors: [String] = []
    var counts: [String: Int] = [:]

    func with<T>(_ body: (LoadRecord) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(self)
    }
}

@Suite(.serialized) struct SwapEndToEndTests {
    @Test func swapUnderLoadSIGHUPAndRestart() throws {
        let server = try ServerProcess(arguments: ["--dimension", "4", "--admin-token", "tok", "--public-reads", "true", "--sync-writes", "false"])
        defer { server.removeData() }
        let admin = try server.connection()
        var generator = SeededGenerator(seed: 5)
        let items = (0..<300).map { index in
            ClientItem(id: .int(Int64(index)), vector: (0..<4).map { _ in Float.random(in: -1...1, using: &generator) }, title: "t\(index)")
        }
        for start in stride(from: 0, to: items.count, by: 100) {
            let response = try object(try admin.roundTrip(RequestLine.upsert(Array(items[start..<(start + 100)]), token: "tok")))
            #expect(response["ok"] as? Bool == true)
        }
        let probe: [Float] = [0.3, -0.2, 0.9, 0.1]
        let before = try object(try admin.roundTrip(RequestLine.search(probe, k: 10)))
        #expect(before["generation"] as? String == "g1")

        // Built by another process while the server holds the store; then a write it does not contain.
        try buildGeneration(data: server.directory, id: "gE", shards: 2)
        let late = ClientItem(id: .string("late"), vector: probe.map { $0 * 10 }, title: "late")
        #expect(try object(try admin.roundTrip(RequestLine.upsert([late], token: "tok")))["ok"] as? Bool == true)

        // Clients search throughout the swap.
        let record = LoadRecord()
        let port = server.port
        var threads: [Thread] = []
        for client in 0..<4 {
            let thread = Thread {
                do {
                    let connection = try SteerConnection(host: "127.0.0.1", port: port)
                    var sawNew = false
                    var query: [Float] = [Float(client), 1, -1, 0.5]
                    while !record.with({ $0.stop }) {
                        let sentAfterSwap = record.with { $0.swapReturned }
                        query[3] += 0.01
                        let response = try object(try connection.roundTrip(RequestLine.search(query, k: 5)))
                        let generation = response["generation"] as? String ?? "<none>"
                        var problem: String?
                        if response["ok"] as? Bool != true {
                            problem = "error response \(response)"
                        } else if generation != "g1" && generation != "gE" {
                            problem = "unexpected generation \(generation)"
                        } else if generation == "g1" && (sawNew || sentAfterSwap) {
                            problem = "old generation after the new one (client \(client))"
                        }
                        if generation == "gE" { sawNew = true }
                        record.with {
                            $0.counts[generation, default: 0] += 1
                            if let problem { $0.errors.append(problem) }
                        }
                    }
                } catch {
                    record.with { $0.errors.append("client \(client): \(error)") }
                }
            }
            thread.start()
            threads.append(thread)
        }
        Thread.sleep(forTimeInterval: 0.3)
        let swap = try object(try admin.roundTrip(Array(#"{"op":"swap","generation":"gE","token":"tok"}"#.utf8)))
        record.with { $0.swapReturned = true }
        Thread.sleep(forTimeInterval: 0.3)
        record.with { $0.stop = true }
        while threads.contains(where: { !$0.isFinished }) { Thread.sleep(forTimeInterval: 0.01) }
        #expect(swap["ok"] as? Bool == true, "\(swap)")
        #expect(swap["generation"] as? String == "gE" && swap["previous"] as? String == "g1")
        #expect((swap["replayed"] as? Int ?? 0) >= 1)
        record.with { record in
            #expect(record.errors.isEmpty, "\(record.errors.prefix(5))")
            #expect(record.counts["g1", default: 0] > 0 && record.counts["gE", default: 0] > 0, "\(record.counts)")
        }
        // Same answers as the start-up index, plus the write made after the build.
        let after = try object(try admin.roundTrip(RequestLine.search(probe, k: 11)))
        #expect(after["generation"] as? String == "gE")
        let hits = try #require(after["hits"] as? [[String: Any]])
        #expect(hits.first?["id"] as? String == "late")
        let oldHits = try #require(before["hits"] as? [[String: Any]])
        #expect(hits.dropFirst().map { $0["id"] as? Int } == oldHits.map { $0["id"] as? Int })
        // A bad generation is refused over the protocol and gE keeps serving.
        let refused = try object(try admin.roundTrip(Array(#"{"op":"swap","generation":"missing","token":"tok"}"#.utf8)))
        #expect((refused["error"] as? [String: Any])?["code"] as? String == "not_found", "\(refused)")

        // SIGHUP picks the newest generation.
        try buildGeneration(data: server.directory, id: "gF", shards: 3)
        kill(server.process.processIdentifier, SIGHUP)
        var served = ""
        let deadline = Date().addingTimeInterval(15)
        while served != "gF" && Date() < deadline {
            served = try object(try admin.roundTrip(RequestLine.search(probe, k: 1)))["generation"] as? String ?? ""
            if served != "gF" { Thread.sleep(forTimeInterval: 0.05) }
        }
        #expect(served == "gF")
        admin.shutdownWrite()

        // A restart serves the swapped generation again.
        #expect(server.terminate() == 0)
        let restarted = try ServerProcess(directory: server.directory, arguments: ["--admin-token", "tok", "--public-reads", "true"])
        defer { restarted.terminate() }
        let connection = try restarted.connection()
        defer { connection.shutdownWrite() }
        let again = try object(try connection.roundTrip(RequestLine.search(probe, k: 11)))
        #expect(again["generation"] as? String == "gF")
        #expect((again["hits"] as? [[String: Any]])?.first?["id"] as? String == "late")
    }
}
