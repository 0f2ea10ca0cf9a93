// steer-server-bench: search latency and throughput through `steer serve` (driven by the Swift client)
// against the same index searched in-process. Writes Benchmarks/server/results-<date>.json.
//
//   swift build -c release && OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
//     .build/release/steer-server-bench [--items 20000] [--queries 4000] [--spec HNSW32] [--out DIR]
//
// For each dimension (64, 384): start the built `steer serve` (beside this binary) on a fresh data
// directory, upload the items, then measure closed-loop single-query searches (k=10) over 1, 4 and 16
// connections with JSON and base64 vectors. Then stop the server (it saves its index), and search that
// same saved index in-process (VectorIndex.search) and through RetrievalEngine (search + hydration from
// RocksDB) with 1, 4 and 16 threads. Server overhead at p50 = server p50 − engine p50 (same work).
import Foundation
import SteerClient
import SteerCore
import SteerEngine
import SteerIndex
import SteerProtocol

struct Options {
    var items = 20_000
    var queries = 4000
    var spec = "HNSW32"
    var dimensions = [64, 384]
    var connections = [1, 4, 16]
    var out = "Benchmarks/server"
    var k = 10

    init(arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            let value = iterator.next() ?? ""
            switch argument {
            case "--items": items = Int(value) ?? items
            case "--queries": queries = Int(value) ?? queries
            case "--spec": spec = value
            case "--out": out = value
            case "--dimensions": dimensions = value.split(separator: ",").compactMap { Int($0) }
            default: FileHandle.standardError.write(Data("unknown argument \(argument)\n".utf8)); exit(2)
            }
        }
    }
}

struct Row: Codable {
    var dimension: Int
    var mode: String          // server | engine | index
    var encoding: String      // json | b64 | in-process
    var connections: Int      // client connections or in-process threads
    var requests: Int
    var p50Micros: Double
    var p99Micros: Double
    var meanMicros: Double
    var qps: Double
}

func percentile(_ sorted: [Double], _ q: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * q).rounded()))]
}

/// Runs `threads` closed loops over `total` operations; returns per-operation latencies (µs) and wall time.
func closedLoop(threads: Int, total: Int, _ body: @escaping @Sendable (_ thread: Int, _ index: Int) throws -> Void) throws -> ([Double], Double) {
    let perThread = total / threads
    let latencies = Locked<[Double]>([])
    let failure = Locked<(any Error)?>(nil)
    let start = DispatchTime.now().uptimeNanoseconds
    DispatchQueue.concurrentPerform(iterations: threads) { thread in
        var local: [Double] = []
        local.reserveCapacity(perThread)
        for index in 0..<perThread {
            let begin = DispatchTime.now().uptimeNanoseconds
            do {
                try body(thread, thread * perThread + index)
            } catch {
                failure.withLock { $0 = error }
                return
            }
            local.append(Double(DispatchTime.now().uptimeNanoseconds - begin) / 1000)
        }
        latencies.withLock { $0.append(contentsOf: local) }
    }
    if let error = failure.get() { throw error }
    let wall = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    return (latencies.get().sorted(), wall)
}

func row(_ dimension: Int, _ mode: String, _ encoding: String, _ connections: Int, _ result: ([Double], Double)) -> Row {
    let (sorted, wall) = result
    let mean = sorted.reduce(0, +) / Double(max(sorted.count, 1))
    return Row(dimension: dimension, mode: mode, encoding: encoding, connections: connections, requests: sorted.count,
               p50Micros: percentile(sorted, 0.5), p99Micros: percentile(sorted, 0.99), meanMicros: mean,
               qps: Double(sorted.count) / wall)
}

func log(_ text: String) { FileHandle.standardError.write(Data((text + "\n").utf8)) }

/// A `steer serve` child process.
final class Server {
    let process = Process()
    let port: Int

    init(binary: String, directory: String, dimension: Int, spec: String) throws {
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--port", "0", "--data", directory, "--dimension", String(dimension), "--index-spec", spec,
                             "--sync-writes", "false", "--log-level", "warning", "--max-in-flight", "256"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var text = ""
        while !text.contains("\n") {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { throw SteerError(.unavailable, "steer serve exited before listening") }
            text += String(decoding: data, as: UTF8.self)
        }
        guard let port = text.split(separator: "\n")[0].split(separator: ":").last.flatMap({ Int($0) }) else {
            throw SteerError(.internal, "unexpected output \(text)")
        }
        self.port = port
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

let options = Options(arguments: CommandLine.arguments)
let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("steer").path
guard FileManager.default.isExecutableFile(atPath: binary) else {
    log("the steer binary is missing beside this benchmark (\(binary)); build the package first")
    exit(1)
}
let environment = ProcessInfo.processInfo.environment
log("OPENBLAS_NUM_THREADS=\(environment["OPENBLAS_NUM_THREADS"] ?? "unset") OMP_NUM_THREADS=\(environment["OMP_NUM_THREADS"] ?? "unset") cores=\(ProcessInfo.processInfo.activeProcessorCount)")

var rows: [Row] = []
for dimension in options.dimensions {
    let data = SyntheticVectors(count: options.items, dimension: dimension, clusters: 200, spread: 0.6, seed: UInt64(dimension))
    let queryData = SyntheticVectors(count: 512, dimension: dimension, clusters: 200, spread: 0.6, seed: UInt64(dimension) + 1)
    let queries = (0..<queryData.count).map { queryData.row($0) }
    let jsonLines = queries.map { RequestLine.search($0, k: options.k) }
    let b64Lines = queries.map { RequestLine.search($0, k: options.k, base64: true) }
    let directory = NSTemporaryDirectory() + "steer-server-bench-\(dimension)-" + UUID().uuidString
    defer { try? FileManager.default.removeItem(atPath: directory) }

    log("d=\(dimension): starting server, uploading \(options.items) items (\(options.spec))")
    let server = try Server(binary: binary, directory: directory, dimension: dimension, spec: options.spec)
    do {
        let connection = try SteerConnection(host: "127.0.0.1", port: server.port)
        // Upsert lines must stay under the server's 1 MiB line limit (~12 bytes per JSON float).
        let batch = max(1, min(1000, 600_000 / (dimension * 12)))
        for start in stride(from: 0, to: options.items, by: batch) {
            let items = (start..<min(options.items, start + batch)).map { ClientItem(id: .int(Int64($0)), vector: data.row($0), title: "item \($0)") }
            _ = try SteerClient.check(try connection.roundTrip(RequestLine.upsert(items)))
        }
    }
    for (encoding, lines) in [("json", jsonLines), ("b64", b64Lines)] {
        for connections in options.connections {
            let pool = try (0..<connections).map { _ in try SteerConnection(host: "127.0.0.1", port: server.port) }
            nonisolated(unsafe) let clients = pool // each thread uses only its own connection
            _ = try closedLoop(threads: connections, total: min(400, options.queries)) { thread, index in
                _ = try clients[thread].roundTrip(lines[index % lines.count])
            }
            let result = try closedLoop(threads: connections, total: options.queries) { thread, index in
                let response = try clients[thread].roundTrip(lines[index % lines.count])
                if response.count < 20 { throw SteerError(.internal, "short response") }
            }
            let measured = row(dimension, "server", encoding, connections, result)
            log("  server \(encoding) c=\(connections): p50 \(Int(measured.p50Micros)) µs p99 \(Int(measured.p99Micros)) µs \(Int(measured.qps)) QPS")
            rows.append(measured)
        }
    }
    server.stop()

    // The same index, in-process: the file the server saved, and the engine over the same directory.
    let index = try VectorIndex.load(path: directory + "/index/index.bin")
    let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, syncWrites: false))
    for threads in options.connections {
        _ = try closedLoop(threads: threads, total: min(400, options.queries)) { _, i in _ = try index.search(queries[i % queries.count], k: options.k) }
        let raw = row(dimension, "index", "in-process", threads, try closedLoop(threads: threads, total: options.queries) { _, i in
            _ = try index.search(queries[i % queries.count], k: options.k)
        })
        let hydrated = row(dimension, "engine", "in-process", threads, try closedLoop(threads: threads, total: options.queries) { _, i in
            _ = try engine.search([queries[i % queries.count]], options: SearchOptions(k: options.k))
        })
        log("  index t=\(threads): p50 \(Int(raw.p50Micros)) µs \(Int(raw.qps)) QPS; engine: p50 \(Int(hydrated.p50Micros)) µs \(Int(hydrated.qps)) QPS")
        rows += [raw, hydrated]
    }
    try engine.close()
}

struct Results: Codable {
    var date: String
    var command: String
    var environment: [String: String]
    var cores: Int
    var cpu: String
    var items: Int
    var queriesPerConfiguration: Int
    var spec: String
    var k: Int
    var rows: [Row]
}

let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
    .split(separator: "\n").first { $0.hasPrefix("model name") }
    .map { String($0.split(separator: ":", maxSplits: 1)[1]).trimmingCharacters(in: .whitespaces) } ?? "unknown"
let formatter = DateFormatter()
formatter.dateFormat = "yyyy-MM-dd"
formatter.timeZone = TimeZone(identifier: "UTC")
let date = formatter.string(from: Date())
var env: [String: String] = [:]
for name in ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE"] { env[name] = environment[name] ?? "unset" }
let results = Results(date: date, command: CommandLine.arguments.joined(separator: " "), environment: env,
                      cores: ProcessInfo.processInfo.activeProcessorCount, cpu: cpu, items: options.items,
                      queriesPerConfiguration: options.queries, spec: options.spec, k: options.k, rows: rows)
let encoder = JSONEncoder()
encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
encoder.keyEncodingStrategy = .convertToSnakeCase
let path = "\(options.out)/results-\(date).json"
try encoder.encode(results).write(to: URL(fileURLWithPath: path))
log("wrote \(path)")
