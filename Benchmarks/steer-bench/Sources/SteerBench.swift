// steer-bench: the load generator of issue 7 (docs/benchmarks.md). It speaks the line protocol over its
// own connections, knows the data set's vectors, and measures latency (HdrHistogram), throughput, errors
// and recall@k against exact ground truth it computed itself.
//
//   steer-bench generate --out DIR --count 200000 --dimension 64 [--clusters 1000 --spread 1.2 --seed 1]
//   steer-bench generate --out DIR --checkpoint demo-data/checkpoint        # item embeddings of a model
//   steer-bench run --data DIR --steer .build/release/steer --spec HNSW32,efC100 \
//       --mode closed --concurrency 1,2,4 --ef-search 16,32,64 --out results.json
//   steer-bench run --data DIR --server 127.0.0.1:7878 --server-pid PID --mode open --rate 1000,2000,4000
//   steer-bench run --data DIR --steer … --mode open --load-fractions 0.1,0.5,0.9 --duration 60   # Poisson arrivals
//   steer-bench run --data glove-100-angular.hdf5 --steer …                                       # ann-benchmarks files
import ArgumentParser
import Foundation
import SteerBenchKit
import SteerCore
import SteerProtocol

#if canImport(Glibc)
import Glibc
#endif

@main
struct SteerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "steer-bench",
        abstract: "Generate benchmark data sets and drive a Steer server with closed- or open-loop load.",
        subcommands: [Generate.self, Run.self, Floor.self, FloorEcho.self]
    )
}

// MARK: - generate

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a data set (base, queries, exact top-k truth) from a seed or from a checkpoint's item embeddings.")

    @Option(help: "Output directory.") var out: String
    @Option(help: "Base vectors (synthetic sets).") var count = 200_000
    @Option(help: "Dimension (synthetic sets).") var dimension = 64
    @Option(help: "Query vectors.") var queries = 1000
    @Option(help: "Generating cluster centres (synthetic sets).") var clusters = 1000
    @Option(help: "Within-cluster spread relative to the centres; larger = more overlap (synthetic sets).") var spread: Float = 1.2
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Option(name: .customLong("truth-k"), help: "Depth of the exact ground truth (recall@k needs k ≤ this).") var truthK = 100
    @Option(help: "A DPR checkpoint directory: use its item embeddings as the base and real DPR query vectors as queries.")
    var checkpoint: String?
    @Option(help: "all-MiniLM-L6-v2 folder (with --checkpoint).") var minilm = "models/all-MiniLM-L6-v2"
    @Option(name: .customLong("history-length"), help: "Items per random history behind each checkpoint query.") var historyLength = 10

    func validate() throws {
        guard count > 0, dimension > 0, queries > 0, clusters > 0, truthK > 0, historyLength > 0 else {
            throw ValidationError("--count, --dimension, --queries, --clusters, --truth-k and --history-length must be positive")
        }
        guard spread > 0, spread.isFinite else { throw ValidationError("--spread must be a positive number") }
    }

    func run() throws {
        let started = nowNanos()
        let data: DataSet
        if let checkpoint {
            data = try DataSet.checkpoint(directory: checkpoint, minilm: minilm, queries: queries, historyLength: historyLength, seed: seed, truthK: truthK)
        } else {
            data = DataSet.synthetic(count: count, dimension: dimension, queries: queries, clusters: clusters, spread: spread, seed: seed, truthK: truthK)
        }
        try data.write(directory: out)
        note("wrote \(out): \(data.count) × \(data.dimension), \(data.queryCount) queries, exact top-\(data.meta.truthK) in \(String(format: "%.1f", Double(nowNanos() - started) / 1e9)) s")
    }
}

// MARK: - run

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drive a server with closed- or open-loop load and write a JSON report.",
        discussion: """
            Either --steer starts the built `steer` binary on a data directory (uploading the data set and, for \
            a spec other than Flat, building a generation with steer-index and swapping to it), or --server \
            targets a running server that already holds the data set (with --load to upload it).
            """)

    @Option(help: "The data set: a directory from steer-bench generate, or an ann-benchmarks HDF5 file (*.hdf5, *.h5).") var data: String
    @Option(help: "Path of the steer binary to start.") var steer: String?
    @Option(help: "HOST:PORT of a running server.") var server: String?
    @Option(name: .customLong("server-pid"), help: "Process id of the --server target, for its CPU time per request (/proc/PID/stat).")
    var serverPID: Int32?
    @Option(help: "Index spec of a started server (built by steer-index from the uploaded store).") var spec = "HNSW32,efC100"
    @Option(name: .customLong("index-shards"), help: "Shards of the generation steer-index builds for a started server (searched side by side while cores are idle).")
    var indexShards = 1
    @Option(name: .customLong("server-data"), help: "Data directory of a started server (kept, reused when it holds the set; default: a temporary one).")
    var serverData: String?
    @Option(name: .customLong("server-arg"), help: "Extra argument for steer serve (repeatable).") var serverArgs: [String] = []
    @Option(help: "all-MiniLM-L6-v2 folder for a checkpoint set's server.") var minilm = "models/all-MiniLM-L6-v2"
    @Flag(help: "Upload the data set to a --server target first.") var load = false
    @Option(help: "Admin token for upserts.") var token: String?

    @Option(help: "closed or open.") var mode = "closed"
    @Option(help: "Closed loop: connections per level (comma-separated).") var concurrency = "1"
    @Option(help: "Open loop: offered requests per second per level (comma-separated).") var rate = ""
    @Option(name: .customLong("load-fractions"),
            help: "Open loop: offered load as fractions of a maximum measured first by a closed loop at --max-concurrency (e.g. 0.1,0.5,0.9).")
    var loadFractions = ""
    @Option(name: .customLong("max-concurrency"), help: "Connections of the closed loop that measures the maximum (default: --connections).")
    var maxConcurrency: Int?
    @Option(name: .customLong("max-duration"), help: "Measured seconds of that closed loop (default: --duration, at most 10).")
    var maxDuration: Double?
    @Option(help: "Open loop: poisson (exponential gaps) or grid (fixed interval).") var arrivals = "poisson"
    @Option(help: "Open loop: pipelined connections carrying the offered load.") var connections = 4
    @Option(help: "Operation fractions, e.g. search=0.9,upsert=0.1 or search=0.5,recommend=0.5.") var mix = "search=1"
    @Option(help: "Results per query.") var k = 10
    @Option(help: "IVF lists probed, a sweep (comma-separated).") var nprobe = ""
    @Option(name: .customLong("ef-search"), help: "HNSW candidate list sizes, a sweep (comma-separated).") var efSearch = ""
    @Flag(help: "Send vectors as vector_b64 instead of JSON arrays.") var base64 = false
    @Option(help: "Queries per search request (1: `vector`; more: a `vectors` batch; QPS and CPU stay per request, `queries_per_second` counts queries).")
    var batch = 1
    @Option(help: "Prompt for recommend requests (none by default).") var prompt: String?
    @Option(name: .customLong("history-length"), help: "Items per recommend history.") var historyLength = 10
    @Option(help: "Warm-up seconds per level (not measured).") var warmup = 2.0
    @Option(help: "Measured seconds per level.") var duration = 10.0
    @Option(help: "Seed of the request choice.") var seed: UInt64 = 7
    @Option(help: "Write the JSON report here (default: standard output).") var out: String?
    @Option(help: "Commit to record (default: git rev-parse HEAD of the working directory).") var commit: String?
    @Option(help: "Free-text label recorded in the report.") var label: String?

    func validate() throws {
        guard (steer == nil) != (server == nil) else { throw ValidationError("give exactly one of --steer PATH or --server HOST:PORT") }
        guard mode == "closed" || mode == "open" else { throw ValidationError("--mode must be closed or open") }
        guard k > 0 else { throw ValidationError("--k must be positive") }
        guard (1...1024).contains(batch) else { throw ValidationError("--batch must be 1 to 1024") }
        guard warmup >= 0, duration > 0, warmup.isFinite, duration.isFinite else { throw ValidationError("--warmup must be ≥ 0 and --duration > 0") }
        guard ArrivalProcess(rawValue: arrivals) != nil else { throw ValidationError("--arrivals must be poisson or grid") }
        if let maxConcurrency, maxConcurrency <= 0 { throw ValidationError("--max-concurrency must be positive") }
        if let maxDuration, !(maxDuration > 0 && maxDuration.isFinite) { throw ValidationError("--max-duration must be positive") }
        if let serverPID, serverPID <= 0 { throw ValidationError("--server-pid must be positive") }
        guard (1...64).contains(indexShards) else { throw ValidationError("--index-shards must be 1 to 64") }
        _ = try Self.ints(concurrency, "--concurrency")
        _ = try Self.ints(nprobe, "--nprobe")
        _ = try Self.ints(efSearch, "--ef-search")
        let fractions = try Self.doubles(loadFractions, "--load-fractions")
        if mode == "open" {
            guard (try Self.doubles(rate, "--rate")).isEmpty != fractions.isEmpty else {
                throw ValidationError("--mode open needs one of --rate or --load-fractions")
            }
            guard connections > 0 else { throw ValidationError("--connections must be positive") }
        }
        if let server {
            guard server.split(separator: ":").count == 2, Int(server.split(separator: ":")[1]) != nil else {
                throw ValidationError("--server must be HOST:PORT")
            }
        }
    }

    static func ints(_ text: String, _ name: String) throws -> [Int] {
        try text.split(separator: ",").map {
            guard let value = Int($0.trimmingCharacters(in: .whitespaces)), value > 0 else { throw ValidationError("\(name): '\($0)' is not a positive integer") }
            return value
        }
    }

    static func doubles(_ text: String, _ name: String) throws -> [Double] {
        try text.split(separator: ",").map {
            guard let value = Double($0.trimmingCharacters(in: .whitespaces)), value > 0, value.isFinite else {
                throw ValidationError("\(name): '\($0)' is not a positive number")
            }
            return value
        }
    }

    func run() throws {
        let loadStart = LoadAverage.read()
        let uptimeStart = Report.uptime()
        let set = try DataSet.load(data)
        guard k <= set.meta.truthK else { throw ValidationError("--k \(k) exceeds the data set's truth depth \(set.meta.truthK)") }
        let mix = try Mix(parsing: self.mix)
        note("data: \(set.count) × \(set.dimension), \(set.queryCount) queries (\(set.meta.source ?? "synthetic")); \(Report.threadLine())")

        // The server: started here, or a running one.
        var started: ServerProcess?
        var temporary: String?
        let host: String, port: Int
        if let steer {
            let directory: String
            if let serverData { directory = serverData } else {
                directory = NSTemporaryDirectory() + "steer-bench-" + UUID().uuidString
                temporary = directory
            }
            let prepared = try PreparedServer.start(binary: steer, directory: directory, data: set, spec: spec, shards: indexShards, minilm: minilm,
                                                    extra: serverArgs, token: token)
            started = prepared
            host = "127.0.0.1"
            port = prepared.port
        } else {
            let parts = server!.split(separator: ":")
            host = String(parts[0])
            port = Int(parts[1])!
            if load {
                note("uploading \(set.count) items to \(host):\(port)")
                try upload(set, host: host, port: port, token: token)
            }
        }
        defer {
            started?.stop()
            if let temporary { try? FileManager.default.removeItem(atPath: temporary) }
        }
        let stats = try request(host: host, port: port, Array(#"{"op":"stats"}"#.utf8))
        if let items = intField(stats, "items"), items < set.count {
            note("warning: the server holds \(items) items, the data set \(set.count): recall will be low")
        }

        let serverPID = started?.pid ?? self.serverPID
        if serverPID == nil { note("no --server-pid: the report has no server CPU per request") }
        let arrivalProcess = ArrivalProcess(rawValue: arrivals) ?? .poisson

        // Levels: every search setting × every load level.
        var settings: [(String, Int?)] = []
        for value in try Self.ints(nprobe, "--nprobe") { settings.append(("nprobe", value)) }
        for value in try Self.ints(efSearch, "--ef-search") { settings.append(("ef_search", value)) }
        if settings.isEmpty { settings = [("none", nil)] }
        let window = Window(warmupNanos: UInt64(warmup * 1e9), durationNanos: UInt64(duration * 1e9))
        var levels: [Level] = []
        var maxLoads: [MaxLoad] = []
        for (param, value) in settings {
            let workload = Workload(data: set, mix: mix, k: k, nprobe: param == "nprobe" ? value : nil,
                                    efSearch: param == "ef_search" ? value : nil, base64: base64, prompt: prompt,
                                    historyLength: historyLength, seed: seed, token: token, batch: batch)
            if mode == "closed" {
                for c in try Self.ints(concurrency, "--concurrency") {
                    let result = try LoadRunner.closed(host: host, port: port, connections: c, window: window, workload: workload, seed: seed, serverPID: serverPID)
                    let level = Level(param: param, value: value, concurrency: c, offeredRate: nil, arrivals: nil, loadFraction: nil, result: result, k: k, batch: batch)
                    note(level.summary)
                    levels.append(level)
                }
            } else {
                var rates = try Self.doubles(rate, "--rate").map { ($0, Double?.none) }
                let fractions = try Self.doubles(loadFractions, "--load-fractions")
                if !fractions.isEmpty {
                    // The maximum: a closed loop at --max-concurrency; the open-loop levels offer fractions of it.
                    let c = maxConcurrency ?? connections
                    let maxWindow = Window(warmupNanos: UInt64(warmup * 1e9), durationNanos: UInt64((maxDuration ?? min(duration, 10)) * 1e9))
                    let result = try LoadRunner.closed(host: host, port: port, connections: c, window: maxWindow, workload: workload, seed: seed, serverPID: serverPID)
                    let level = Level(param: param, value: value, concurrency: c, offeredRate: nil, arrivals: nil, loadFraction: 1, result: result, k: k, batch: batch)
                    note("maximum (closed loop, \(c) connections):" + level.summary)
                    levels.append(level)
                    guard level.qps > 0 else { throw SteerError(.unavailable, "the closed loop measuring the maximum answered nothing") }
                    maxLoads.append(MaxLoad(param: param, value: value, concurrency: c, seconds: result.seconds, qps: level.qps))
                    rates = fractions.map { ($0 * level.qps, $0) }
                }
                for (r, fraction) in rates {
                    let result = try LoadRunner.open(host: host, port: port, connections: connections, rate: r, arrivals: arrivalProcess, window: window,
                                                     workload: workload, seed: seed, serverPID: serverPID)
                    let level = Level(param: param, value: value, concurrency: connections, offeredRate: (r * 10).rounded() / 10,
                                      arrivals: arrivalProcess.rawValue, loadFraction: fraction, result: result, k: k, batch: batch)
                    note(level.summary)
                    levels.append(level)
                }
            }
        }
        let serverStats = try request(host: host, port: port, Array(#"{"op":"stats"}"#.utf8))
        let report = Report(
            tool: "steer-bench", label: label, date: ISO8601DateFormatter().string(from: Date()),
            command: CommandLine.arguments.joined(separator: " "), commit: commit ?? Report.gitCommit(),
            machine: Report.machine(loadStart: loadStart, loadEnd: LoadAverage.read(), uptimeStart: uptimeStart, uptimeEnd: Report.uptime()),
            threads: Report.threads(),
            data: DataInfo(directory: data, meta: set.meta),
            server: ServerInfo(mode: steer == nil ? "external" : "started", address: "\(host):\(port)", pid: serverPID.map(Int.init),
                               binary: steer, requestedSpec: steer == nil ? nil : spec,
                               indexSpec: stringField(serverStats, "index_spec"), items: intField(serverStats, "items"),
                               shards: intField(serverStats, "shards"), generation: stringField(serverStats, "generation"),
                               arguments: serverArgs),
            settings: Settings(mode: mode, mix: mix.description, k: k, warmupSeconds: warmup, durationSeconds: duration,
                               encoding: base64 ? "vector_b64" : "json", openLoopConnections: mode == "open" ? connections : nil,
                               arrivals: mode == "open" ? arrivalProcess.rawValue : nil, seed: Int(seed), batch: batch),
            maxLoad: maxLoads, levels: levels)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        let json = try encoder.encode(report)
        if let out {
            try json.write(to: URL(fileURLWithPath: out))
            note("wrote \(out)")
        } else {
            FileHandle.standardOutput.write(json)
            FileHandle.standardOutput.write(Data("\n".utf8))
        }
    }
}

/// Starts `steer serve` on a data directory holding the data set and an index of the wanted spec.
enum PreparedServer {
    static func start(binary: String, directory: String, data: DataSet, spec: String, shards: Int, minilm: String,
                      extra: [String], token: String?) throws(SteerError) -> ServerProcess {
        // Requests are single queries: OpenMP and OpenBLAS threads beyond one per request only contend
        // (docs/dependencies.md); the run scripts set these, the defaults here match them when unset.
        let common = ["--sync-writes", "false", "--max-in-flight", "256"] + extra + (token.map { ["--admin-token", $0, "--public-reads", "true"] } ?? [])
        if data.meta.source == "checkpoint", let checkpoint = data.meta.checkpoint {
            note("starting steer serve --checkpoint \(checkpoint) (index \(spec))")
            return try ServerProcess(binary: binary, arguments: ["--data", directory, "--checkpoint", checkpoint, "--minilm", minilm,
                                                                 "--index-spec", spec] + common, environment: [:])
        }
        let fresh = !FileManager.default.fileExists(atPath: directory)
        let creation = ["--dimension", String(data.dimension), "--index-spec", "Flat", "--metric", data.meta.metric]
        var server = try ServerProcess(binary: binary, arguments: ["--data", directory] + (fresh ? creation : []) + common,
                                       environment: [:])
        var stats = try request(host: "127.0.0.1", port: server.port, Array(#"{"op":"stats"}"#.utf8))
        if intField(stats, "items") != data.count {
            note("uploading \(data.count) items into \(directory)")
            try upload(data, host: "127.0.0.1", port: server.port, token: token)
            stats = try request(host: "127.0.0.1", port: server.port, Array(#"{"op":"stats"}"#.utf8))
        }
        let wanted = IndexSpecName.canonical(spec)
        if shards == 1, let current = stringField(stats, "index_spec"), IndexSpecName.canonical(current) == wanted, intField(stats, "shards") ?? 1 == 1 {
            return server
        }
        // Build a generation of the wanted spec from the store (trained on a sample of all vectors, as a
        // production index is built), then swap to it.
        let name = "bench-" + wanted.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined() + (shards > 1 ? "-\(shards)shards" : "")
        let generation = directory + "/generations/" + name
        if !FileManager.default.fileExists(atPath: generation) {
            let version = stringField(stats, "embedding_version") ?? "v1"
            server.stop()
            let tool = URL(fileURLWithPath: binary).deletingLastPathComponent().appendingPathComponent("steer-index").path
            note("building \(spec) with \(tool) (all cores)")
            let cores = String(ProcessInfo.processInfo.activeProcessorCount)
            let before = nowNanos()
            try runTool(tool, ["build", "--data", directory, "--version", version, "--spec", spec, "--metric", data.meta.metric, "--shards", String(shards), "--out", generation,
                               "--allow-incomplete", "--quiet", "--generation-id", name],
                        environment: ["OMP_NUM_THREADS": cores])
            note("  built in \(String(format: "%.1f", Double(nowNanos() - before) / 1e9)) s")
            server = try ServerProcess(binary: binary, arguments: ["--data", directory] + common, environment: [:])
        }
        var swap = JSONWriter()
        swap.raw("{\"op\":\"swap\",\"generation\":")
        swap.string(generation)
        if let token {
            swap.raw(",\"token\":")
            swap.string(token)
        }
        swap.raw("}")
        _ = try request(host: "127.0.0.1", port: server.port, swap.bytes)
        return server
    }
}

/// Index spec spellings compared by meaning ("HNSW32" and "HNSW32,efC40" differ; case and spaces do not).
enum IndexSpecName {
    static func canonical(_ text: String) -> String {
        text.replacingOccurrences(of: " ", with: "").uppercased()
    }
}
