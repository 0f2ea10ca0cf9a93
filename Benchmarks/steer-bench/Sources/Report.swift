import Foundation
import Histogram
import SteerBenchKit

/// The JSON report of one `steer-bench run` (docs/benchmarks.md describes the fields).
struct Report: Encodable {
    var tool: String
    var label: String?
    var date: String
    var command: String
    var commit: String
    var machine: Machine
    var threads: [String: String]
    var data: DataInfo
    var server: ServerInfo
    var settings: Settings
    /// Open loop with --load-fractions: the closed-loop maximum each setting's levels are fractions of.
    var maxLoad: [MaxLoad]
    var levels: [Level]

    static let threadVariables = ["OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"]

    static func threads() -> [String: String] {
        var result: [String: String] = [:]
        for name in threadVariables { result[name] = ProcessInfo.processInfo.environment[name] ?? "unset" }
        return result
    }

    static func threadLine() -> String {
        threadVariables.map { "\($0)=\(ProcessInfo.processInfo.environment[$0] ?? "unset")" }.joined(separator: " ")
    }

    static func gitCommit() -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git", "rev-parse", "HEAD"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return "unknown" }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return process.terminationStatus == 0 ? text.trimmingCharacters(in: .whitespacesAndNewlines) : "unknown"
    }

    /// The output of `uptime` (load averages and the time), or "unknown".
    static func uptime() -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["uptime"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return "unknown" }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func machine(loadStart: [Double], loadEnd: [Double], uptimeStart: String, uptimeEnd: String) -> Machine {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let cpu = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1)[1]).trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let kernel = ((try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)) ?? "unknown")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return Machine(cpu: cpu, cores: ProcessInfo.processInfo.activeProcessorCount, kernel: kernel,
                       memoryGib: Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30),
                       loadAverageStart: loadStart, loadAverageEnd: loadEnd, uptimeStart: uptimeStart, uptimeEnd: uptimeEnd,
                       transparentHugePages: ((try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)) ?? "unknown")
                           .trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

enum LoadAverage {
    /// The 1, 5 and 15 minute load averages from /proc/loadavg.
    static func read() -> [Double] {
        let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        return text.split(separator: " ").prefix(3).compactMap { Double($0) }
    }
}

struct Machine: Encodable {
    var cpu: String
    var cores: Int
    var kernel: String
    var memoryGib: Double
    var loadAverageStart: [Double]
    var loadAverageEnd: [Double]
    /// `uptime` before and after the run: the load other work put on the machine meanwhile.
    var uptimeStart: String
    var uptimeEnd: String
    /// /sys/kernel/mm/transparent_hugepage/enabled (the bracketed word is in force).
    var transparentHugePages: String
}

/// The closed-loop maximum that open-loop levels given as --load-fractions are fractions of.
struct MaxLoad: Encodable {
    var param: String
    var value: Int?
    var concurrency: Int
    var seconds: Double
    var qps: Double
}

struct DataInfo: Encodable {
    var directory: String
    var meta: DataSetMeta
}

struct ServerInfo: Encodable {
    var mode: String
    var address: String
    /// The process whose CPU time the levels' `server_cpu` counts.
    var pid: Int?
    var binary: String?
    var requestedSpec: String?
    var indexSpec: String?
    var items: Int?
    var shards: Int?
    var generation: String?
    var arguments: [String]
}

struct Settings: Encodable {
    var mode: String
    var mix: String
    var k: Int
    var warmupSeconds: Double
    var durationSeconds: Double
    var encoding: String
    var openLoopConnections: Int?
    /// Open loop: `poisson` or `grid`.
    var arrivals: String?
    var seed: Int
    /// Queries per search request (`--batch`).
    var batch: Int
}

/// Latency summary in microseconds.
struct Latency: Encodable {
    var count: UInt64
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    init(_ histogram: Histogram<UInt64>) {
        func micros(_ nanos: UInt64) -> Double { (Double(nanos) / 100).rounded() / 10 }
        count = histogram.totalCount
        p50 = micros(histogram.valueAtPercentile(50))
        p90 = micros(histogram.valueAtPercentile(90))
        p99 = micros(histogram.valueAtPercentile(99))
        p999 = micros(histogram.valueAtPercentile(99.9))
        max = micros(histogram.max)
        mean = (histogram.mean / 100).rounded() / 10
    }
}

/// One measured level: a search setting at one concurrency (closed loop) or offered rate (open loop).
struct Level: Encodable {
    var param: String
    var value: Int?
    var concurrency: Int
    var offeredRate: Double?
    /// Open loop: `poisson` or `grid`.
    var arrivals: String?
    /// The offered rate as a fraction of `max_load` (1 for the closed loop that measured it).
    var loadFraction: Double?
    var requests: Int
    var qps: Double
    /// Queries answered per second: `qps` × the queries per search request (`--batch`).
    var queriesPerSecond: Double
    var errors: Int
    var errorCodes: [String: Int]
    var recallAtK: Double?
    var k: Int
    var latencyUs: Latency
    var byOperation: [String: Latency]
    /// Open loop: the sender's lag behind the schedule (part of `latency_us`).
    var sendLagUs: Latency?
    /// The server's CPU time over the measured window divided by the requests answered in it
    /// (/proc/<pid>/stat, user + system, 10 ms ticks); nil without a server pid.
    var serverCpu: CPUAccount?
    /// The same for this load generator (which shares the machine with the server).
    var clientCpu: CPUAccount?
    /// (latency µs, percentile) pairs for CDF plots.
    var cdf: [[Double]]

    init(param: String, value: Int?, concurrency: Int, offeredRate: Double?, arrivals: String?, loadFraction: Double?, result: LevelResult, k: Int,
         batch: Int = 1) {
        let tally = result.tally, seconds = result.seconds
        self.param = param
        self.value = value
        self.concurrency = concurrency
        self.offeredRate = offeredRate
        self.arrivals = arrivals
        self.loadFraction = loadFraction
        serverCpu = result.serverCPU
        clientCpu = result.clientCPU
        self.k = k
        requests = Int(tally.all.totalCount)
        qps = (Double(requests) / seconds * 10).rounded() / 10
        queriesPerSecond = (Double(requests * batch) / seconds * 10).rounded() / 10
        errorCodes = tally.errors
        errors = tally.errors.values.reduce(0, +)
        recallAtK = tally.recallCount > 0 ? (tally.recallSum / Double(tally.recallCount) * 10000).rounded() / 10000 : nil
        latencyUs = Latency(tally.all)
        var byOperation: [String: Latency] = [:]
        for op in Operation.allCases where tally.byOperation[op.rawValue].totalCount > 0 {
            byOperation[op.name] = Latency(tally.byOperation[op.rawValue])
        }
        self.byOperation = byOperation
        sendLagUs = offeredRate != nil && tally.sendLag.totalCount > 0 ? Latency(tally.sendLag) : nil
        var cdf: [[Double]] = []
        if tally.all.totalCount > 0 {
            for step in tally.all.percentiles(ticksPerHalfDistance: 5) {
                cdf.append([(Double(step.value) / 100).rounded() / 10, (step.percentileLevelIteratedTo * 1000).rounded() / 1000])
            }
        }
        self.cdf = cdf
    }

    var summary: String {
        let setting = value.map { "\(param)=\($0) " } ?? ""
        let load = offeredRate.map { "rate \(Int($0))/s (\(arrivals ?? "grid")) over \(concurrency) conn" } ?? "concurrency \(concurrency)"
        let recall = recallAtK.map { String(format: " recall@%d %.4f", k, $0) } ?? ""
        let cpu = serverCpu?.cpuPerRequestUs.map { " server CPU \($0) µs/req" } ?? ""
        let queries = queriesPerSecond != qps ? String(format: " (%.0f queries/s)", queriesPerSecond) : ""
        return "  \(setting)\(load): \(String(format: "%.0f", qps)) QPS\(queries) p50 \(latencyUs.p50) µs p99 \(latencyUs.p99) µs p99.9 \(latencyUs.p999) µs max \(latencyUs.max) µs errors \(errors)\(recall)\(cpu)"
    }
}
