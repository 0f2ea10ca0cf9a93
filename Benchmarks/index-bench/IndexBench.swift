// steer-index-bench: the foundation benchmark (issue: build time, peak memory, recall@10 and
// single-query QPS of SteerIndex, with the AVX2 kernels on and off). Benchmarks/index/run.sh drives it
// together with the Python peers on the same files.
import ArgumentParser
import CFaissKernels
import Foundation
import SteerBenchKit
import SteerCore
import SteerIndex

@main
struct IndexBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "steer-index-bench",
        abstract: "Generate a seeded data set, or build and measure one index over it.",
        subcommands: [Generate.self, Run.self]
    )
}

// MARK: - Files

/// The data set on disk: raw little-endian arrays the Python peers read with numpy.fromfile.
struct DataSet {
    let dimension: Int
    let base: [Float]
    let queries: [Float]
    let truth: [Int64]
    let truthK: Int

    static func read(_ dir: URL) throws -> DataSet {
        let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("meta.json"))) as? [String: Any] ?? [:]
        guard let d = meta["dimension"] as? Int, let k = meta["truth_k"] as? Int else { throw ValidationError("bad meta.json in \(dir.path)") }
        return DataSet(
            dimension: d,
            base: try readArray(dir.appendingPathComponent("base.f32"), as: Float.self),
            queries: try readArray(dir.appendingPathComponent("queries.f32"), as: Float.self),
            truth: try readArray(dir.appendingPathComponent("truth.i64"), as: Int64.self),
            truthK: k
        )
    }
}

func readArray<T>(_ url: URL, as: T.Type) throws -> [T] {
    let data = try Data(contentsOf: url)
    let count = data.count / MemoryLayout<T>.stride
    return data.withUnsafeBytes { raw in
        (0..<count).map { raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.stride, as: T.self) }
    }
}

func writeArray<T>(_ values: [T], to url: URL) throws {
    try values.withUnsafeBytes { try Data($0).write(to: url) }
}

/// Peak resident memory of this process in MiB (VmHWM from /proc/self/status).
func peakRSSMiB() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }
    return 0
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

// MARK: - generate

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write base, queries and exact top-k truth.")
    @Option var out: String
    @Option var count = 1_000_000
    @Option var dimension = 64
    @Option var queries = 1000
    @Option var clusters = 1000
    @Option(help: "Within-cluster spread relative to the centres (more = more overlap).") var spread: Float = 1.0
    @Option var seed: UInt64 = 1
    @Option var k = 10

    func run() throws {
        let dir = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let t0 = now()
        // Base and queries come from the same generating distribution (same seed → same centres),
        // queries drawn after the base rows.
        let all = SyntheticVectors(count: count + queries, dimension: dimension, clusters: clusters, spread: spread, seed: seed)
        let base = Array(all.values[0..<(count * dimension)])
        let qs = Array(all.values[(count * dimension)...])
        // Exact truth through faiss's Flat index (BLAS-batched), cross-checked below on a few queries.
        let flat = try VectorIndex(spec: IndexSpec(parsing: "Flat"), dimension: dimension, metric: .innerProduct)
        try flat.add(base, labels: (0..<Int64(count)).map { $0 })
        let found = try flat.search(qs, k: k)
        var truth: [Int64] = []
        for list in found { truth += list.map(\.label) }
        for q in 0..<min(3, queries) {
            let exact = ExactSearch.topK(query: Array(qs[(q * dimension)..<((q + 1) * dimension)]), base: base, dimension: dimension, k: k, metric: .innerProduct)
            guard Set(exact.map(\.label)) == Set(found[q].map(\.label)) else { throw ValidationError("Flat truth disagrees with brute force at query \(q)") }
        }
        try writeArray(base, to: dir.appendingPathComponent("base.f32"))
        try writeArray(qs, to: dir.appendingPathComponent("queries.f32"))
        try writeArray(truth, to: dir.appendingPathComponent("truth.i64"))
        let meta: [String: Any] = [
            "count": count, "dimension": dimension, "queries": queries, "clusters": clusters,
            "spread": Double(spread), "seed": Int(seed), "truth_k": k, "metric": "ip", "normalized": true,
        ]
        try JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys]).write(to: dir.appendingPathComponent("meta.json"))
        FileHandle.standardError.write("generated \(count)x\(dimension) + \(queries) queries in \(String(format: "%.1f", now() - t0)) s\n".data(using: .utf8)!)
    }
}

// MARK: - run

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Build one index and print one JSON line per search setting.")
    @Option var data: String
    @Option var spec: String
    @Option(help: "faiss kernels: on (the default set: AVX-512 or AVX2) or off (forced scalar).") var kernels = "on"
    @Option(parsing: .upToNextOption) var ef: [Int] = []
    @Option(parsing: .upToNextOption) var nprobe: [Int] = []
    @Option var k = 10
    @Option(help: "Single-query passes over the queries; the fastest is reported (noise on a shared machine).") var repeats = 3
    @Option(name: .customLong("build-threads"), help: "OpenMP threads of the index build (searches always use one).") var buildThreads = 1
    @Option(name: .customLong("pin-core"), help: "After the build, run every thread of this process on this core.") var pinCore: Int?

    func run() throws {
        steer_kernels_force_scalar(kernels == "off" ? 1 : 0)
        let set = try DataSet.read(URL(fileURLWithPath: data))
        let d = set.dimension
        let n = set.base.count / d
        let index = try VectorIndex(spec: IndexSpec(parsing: spec), dimension: d, metric: .innerProduct)
        FaissInfo.setOpenMPThreadsForCurrentThread(buildThreads)
        let t0 = now()
        if index.spec.needsTraining {
            // The same sample size as the Python peers: 256k rows (or all), seeded.
            var rng = SeededGenerator(seed: 1)
            let rows = min(n, 256 * 1024)
            var picked = Array(0..<n)
            for i in 0..<rows { picked.swapAt(i, i + Int(rng.next() % UInt64(n - i))) }
            var sample: [Float] = []
            sample.reserveCapacity(rows * d)
            for r in picked[0..<rows] { sample += set.base[(r * d)..<((r + 1) * d)] }
            try index.train(sample)
        }
        try index.add(set.base, labels: (0..<Int64(n)).map { $0 })
        let buildSeconds = now() - t0
        FaissInfo.setOpenMPThreadsForCurrentThread(1)
        if let pinCore { try Affinity.pinProcess(toCore: pinCore) }
        let queryCount = set.queries.count / d
        var truth: [[Int64]] = []
        for q in 0..<queryCount { truth.append(Array(set.truth[(q * set.truthK)..<(q * set.truthK + k)])) }

        var settings: [(String, Int?, SearchParameters)] = []
        for e in ef { settings.append(("ef_search", e, SearchParameters(efSearch: e))) }
        for p in nprobe { settings.append(("nprobe", p, SearchParameters(nprobe: p))) }
        if settings.isEmpty { settings.append(("none", nil, SearchParameters())) }

        for (name, value, params) in settings {
            let batched = try index.search(set.queries, k: k, parameters: params)
            let recall = ExactSearch.recall(found: batched.map { $0.map(\.label) }, truth: truth)
            let single = (0..<queryCount).map { Array(set.queries[($0 * d)..<(($0 + 1) * d)]) }
            var secs = Double.infinity
            for _ in 0..<max(1, repeats) {
                let t1 = now()
                for q in single { _ = try index.search(q, k: k, parameters: params) }
                secs = min(secs, now() - t1)
            }
            let row: [String: Any] = [
                "engine": "steer (kernels \(kernels), \(String(cString: steer_kernels_isa())))",
                "faiss_version": "1.7.3", "spec": spec, "param": name, "value": value as Any? ?? NSNull(),
                "build_s": (buildSeconds * 1000).rounded() / 1000, "peak_rss_mb": (peakRSSMiB() * 10).rounded() / 10,
                "recall_at_10": (recall * 10000).rounded() / 10000, "qps_single": (Double(queryCount) / secs * 10).rounded() / 10,
                "n": n, "d": d, "build_threads": buildThreads, "pinned_core": pinCore as Any? ?? NSNull(),
            ]
            let json = try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys])
            print(String(decoding: json, as: UTF8.self))
        }
    }
}
