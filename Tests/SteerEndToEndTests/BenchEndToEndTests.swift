import Foundation
import SteerClient
import SteerCore
import Testing

/// The built `steer-bench` binary: `STEER_BENCH_BIN` when set, else beside the `steer` binary.
private func benchBinary() throws -> String {
    if let path = ProcessInfo.processInfo.environment["STEER_BENCH_BIN"], !path.isEmpty { return path }
    let path = URL(fileURLWithPath: try steerBinary()).deletingLastPathComponent().appendingPathComponent("steer-bench").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw SteerError(.notFound, "steer-bench was not built beside steer (\(path)); build with --build-tests")
    }
    return path
}

/// Runs steer-bench to completion: (exit status, standard error).
private func bench(_ arguments: [String]) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try benchBinary())
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}

private func temporaryPath(_ name: String) -> String { NSTemporaryDirectory() + "steer-bench-e2e-\(name)-" + UUID().uuidString }

@Suite(.serialized) struct BenchEndToEndTests {
    /// A tiny set: 2,000 × 16 clustered vectors, 100 queries, exact top-10.
    private func tinySet() throws -> String {
        let directory = temporaryPath("data")
        let (status, stderr) = try bench(["generate", "--out", directory, "--count", "2000", "--dimension", "16", "--queries", "100",
                                          "--clusters", "20", "--truth-k", "10", "--seed", "3"])
        #expect(status == 0, "generate failed: \(stderr)")
        return directory
    }

    @Test func closedLoopOnAFlatIndex_hasFullRecallAndTheReportShape() throws {
        let data = try tinySet()
        let out = temporaryPath("report") + ".json"
        defer {
            try? FileManager.default.removeItem(atPath: data)
            try? FileManager.default.removeItem(atPath: out)
        }
        let (status, stderr) = try bench(["run", "--data", data, "--steer", try steerBinary(), "--spec", "Flat", "--concurrency", "1,2",
                                          "--mix", "search=0.9,upsert=0.1", "--warmup", "0.2", "--duration", "1", "--out", out])
        try #require(status == 0, "steer-bench run failed: \(stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any])

        let machine = try #require(report["machine"] as? [String: Any])
        #expect((machine["cores"] as? Int ?? 0) > 0)
        #expect((machine["load_average_start"] as? [Double])?.count == 3)
        let threads = try #require(report["threads"] as? [String: String])
        #expect(Set(threads.keys) == ["OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"])
        #expect((report["commit"] as? String)?.isEmpty == false)
        #expect((report["command"] as? String)?.contains("--spec Flat") == true)
        let server = try #require(report["server"] as? [String: Any])
        #expect(server["index_spec"] as? String == "Flat")
        #expect(server["items"] as? Int == 2000)

        let levels = try #require(report["levels"] as? [[String: Any]])
        #expect(levels.map { $0["concurrency"] as? Int } == [1, 2])
        for level in levels {
            // A Flat index searched exactly: every answer must be the exact top 10.
            #expect(level["recall_at_k"] as? Double == 1.0)
            #expect(level["errors"] as? Int == 0)
            #expect((level["requests"] as? Int ?? 0) > 0)
            let latency = try #require(level["latency_us"] as? [String: Double])
            let p50 = try #require(latency["p50"]), p99 = try #require(latency["p99"]), max = try #require(latency["max"])
            #expect(p50 > 0 && p50 <= p99 && p99 <= max)
            let byOperation = try #require(level["by_operation"] as? [String: Any])
            #expect(byOperation["search"] != nil)
            #expect(!(level["cdf"] as? [[Double]] ?? []).isEmpty)
            // The started server's CPU over the window, per answered request.
            let cpu = try #require(level["server_cpu"] as? [String: Any])
            #expect((cpu["answered"] as? Int ?? 0) > 0)
            #expect((cpu["cpu_seconds"] as? Double ?? 0) > 0)
            #expect((cpu["cpu_per_request_us"] as? Double ?? 0) > 0)
        }
        #expect((machine["uptime_start"] as? String)?.contains("load average") == true)
    }

    @Test func openLoop_recordsTheOfferedRateAndFullRecall() throws {
        let data = try tinySet()
        let out = temporaryPath("open") + ".json"
        defer {
            try? FileManager.default.removeItem(atPath: data)
            try? FileManager.default.removeItem(atPath: out)
        }
        let (status, stderr) = try bench(["run", "--data", data, "--steer", try steerBinary(), "--spec", "Flat", "--mode", "open",
                                          "--arrivals", "grid", "--rate", "100", "--connections", "2", "--warmup", "0.2", "--duration", "1", "--out", out])
        try #require(status == 0, "steer-bench run failed: \(stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any])
        let levels = try #require(report["levels"] as? [[String: Any]])
        try #require(levels.count == 1)
        #expect(levels[0]["offered_rate"] as? Double == 100)
        #expect(levels[0]["recall_at_k"] as? Double == 1.0)
        // 100/s for 1 s: the schedule holds 100 requests (±1 per connection for rounding at the window edges).
        let requests = levels[0]["requests"] as? Int ?? 0
        #expect((98...102).contains(requests), "requests \(requests)")
        #expect(levels[0]["arrivals"] as? String == "grid")
    }

    @Test func poissonLoadFractions_measureTheMaximumThenOfferFractionsOfIt() throws {
        let data = try tinySet()
        let out = temporaryPath("poisson") + ".json"
        defer {
            try? FileManager.default.removeItem(atPath: data)
            try? FileManager.default.removeItem(atPath: out)
        }
        let (status, stderr) = try bench(["run", "--data", data, "--steer", try steerBinary(), "--spec", "Flat", "--mode", "open",
                                          "--load-fractions", "0.02,0.05", "--connections", "2", "--max-duration", "0.5",
                                          "--warmup", "0.2", "--duration", "2", "--out", out])
        try #require(status == 0, "steer-bench run failed: \(stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any])
        let maxLoad = try #require((report["max_load"] as? [[String: Any]])?.first)
        let maximum = try #require(maxLoad["qps"] as? Double)
        #expect(maximum > 0)
        let levels = try #require(report["levels"] as? [[String: Any]])
        try #require(levels.count == 3, "the maximum's closed loop, then two open-loop levels")
        #expect(levels[0]["load_fraction"] as? Double == 1 && levels[0]["offered_rate"] == nil)
        for (level, fraction) in zip(levels.dropFirst(), [0.02, 0.05]) {
            #expect(level["arrivals"] as? String == "poisson")
            #expect(level["load_fraction"] as? Double == fraction)
            let offered = try #require(level["offered_rate"] as? Double)
            #expect(abs(offered - fraction * maximum) <= 0.1)
            #expect(level["recall_at_k"] as? Double == 1.0)
            #expect(level["errors"] as? Int == 0)
            // A Poisson count over 2 s: mean 2 × offered, standard deviation its square root; 6 of them.
            let requests = Double(level["requests"] as? Int ?? 0)
            let mean = 2 * offered
            #expect(abs(requests - mean) <= 6 * mean.squareRoot() + 2, "requests \(requests), expected about \(mean)")
            let cpu = try #require(level["server_cpu"] as? [String: Any])
            #expect((cpu["answered"] as? Int ?? 0) > 0)
            #expect(cpu["cpu_per_request_us"] as? Double != nil)
        }
    }

    @Test func anExternalServer_isChargedForAStallAndItsCPUIsCounted() throws {
        let data = try tinySet()
        let out = temporaryPath("stall") + ".json"
        let server = try ServerProcess(arguments: ["--dimension", "16", "--index-spec", "Flat", "--sync-writes", "false"])
        defer {
            server.terminate()
            try? FileManager.default.removeItem(atPath: data)
            try? FileManager.default.removeItem(atPath: out)
            try? FileManager.default.removeItem(atPath: server.directory)
        }
        let pid = server.process.processIdentifier
        let port = server.port
        // Stop the server for 400 ms in the middle of the 2 s window (the warm-up is 0.5 s plus upload).
        let giveUp = Date().addingTimeInterval(30)
        let stall = Thread {
            Thread.sleep(forTimeInterval: 0.3)
            // Wait until steer-bench has uploaded the set and started its window.
            while (try? SteerClient.check(try SteerConnection(host: "127.0.0.1", port: port).roundTrip(Array(#"{"op":"stats"}"#.utf8)))).flatMap({ object -> Int? in
                if case .int(let items)? = object["items"] { return Int(items) }
                return nil
            }) != 2000 {
                if Date() > giveUp { return }
                Thread.sleep(forTimeInterval: 0.05)
            }
            Thread.sleep(forTimeInterval: 1.5)
            kill(pid, SIGSTOP)
            Thread.sleep(forTimeInterval: 0.4)
            kill(pid, SIGCONT)
        }
        stall.start()
        let (status, stderr) = try bench(["run", "--data", data, "--server", "127.0.0.1:\(server.port)", "--server-pid", String(pid), "--load",
                                          "--mode", "open", "--arrivals", "grid", "--rate", "100", "--connections", "2",
                                          "--warmup", "0.5", "--duration", "2", "--out", out])
        try #require(status == 0, "steer-bench run failed: \(stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any])
        #expect((report["server"] as? [String: Any])?["pid"] as? Int == Int(pid))
        let level = try #require((report["levels"] as? [[String: Any]])?.first)
        #expect(level["recall_at_k"] as? Double == 1.0)
        let cpu = try #require(level["server_cpu"] as? [String: Any])
        #expect((cpu["answered"] as? Int ?? 0) > 0)
        // Every request scheduled during the stall is charged from its scheduled time: about 40 of the
        // window's 200 wait 0–400 ms, so the slowest is near 400 ms and p90 is tens of ms.
        let latency = try #require(level["latency_us"] as? [String: Double])
        #expect((latency["max"] ?? 0) >= 300_000, "max \(latency["max"] ?? 0) µs")
        #expect((latency["p90"] ?? 0) >= 20_000, "p90 \(latency["p90"] ?? 0) µs")
    }

    @Test func aDamagedDataSet_failsNamingTheFile() throws {
        let data = try tinySet()
        defer { try? FileManager.default.removeItem(atPath: data) }
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: data + "/queries.f32"))
        let (status, stderr) = try bench(["run", "--data", data, "--steer", try steerBinary(), "--duration", "1"])
        #expect(status != 0)
        #expect(stderr.contains("queries.f32"), "stderr: \(stderr)")
    }
}
