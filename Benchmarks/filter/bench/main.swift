// steer-filter-bench: filtered recall@10 against exact search over the matching items, per plan, and
// recall after rescoring against oversample for quantized indexes (Benchmarks/filter/run.sh).
// Usage: steer-filter-bench ITEMS DIMENSION QUERIES WORKDIR
import Foundation
import SteerCore
import SteerEngine
import SteerIndex

let arguments = CommandLine.arguments
guard arguments.count == 5, let items = Int(arguments[1]), let dimension = Int(arguments[2]), let queryCount = Int(arguments[3]) else {
    FileHandle.standardError.write(Data("usage: steer-filter-bench ITEMS DIMENSION QUERIES WORKDIR\n".utf8))
    exit(2)
}
let workDirectory = arguments[4]
try? FileManager.default.removeItem(atPath: workDirectory)

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
func log(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }

// Seeded data: uniform vectors, a bucket 0..<1000 per item independent of its vector.
var generator = SeededGenerator(seed: 17)
var vectors: [Float] = []
vectors.reserveCapacity(items * dimension)
var buckets: [Int] = []
for _ in 0..<items {
    for _ in 0..<dimension { vectors.append(Float.random(in: -1...1, using: &generator)) }
    buckets.append(Int.random(in: 0..<1000, using: &generator))
}
let queries: [[Float]] = (0..<queryCount).map { _ in (0..<dimension).map { _ in Float.random(in: -1...1, using: &generator) } }

func engine(spec: String) throws -> RetrievalEngine {
    try RetrievalEngine(configuration: .init(dataDirectory: workDirectory, dimension: dimension, indexSpec: spec, syncWrites: false,
                                             payloadIndexes: ["bucket": .numeric]))
}

// Load once into a Flat directory; every other spec is rebuilt from the store on open (IVF trains on all items).
do {
    let start = now()
    let loader = try engine(spec: "Flat")
    var batch: [ItemInput] = []
    for index in 0..<items {
        batch.append(ItemInput(id: .int(Int64(index)), vector: Array(vectors[(index * dimension)..<((index + 1) * dimension)]),
                               attributesJSON: #"{"bucket":\#(buckets[index])}"#))
        if batch.count == 5000 || index == items - 1 {
            _ = try loader.upsert(batch)
            batch.removeAll(keepingCapacity: true)
        }
    }
    try loader.close()
    log("loaded \(items) items in \(String(format: "%.1f", now() - start)) s")
}

// Ground truth per kept share: the exact top 10 over the matching items.
let shares: [(filteredOut: String, below: Int)] = [("50%", 500), ("90%", 100), ("99%", 10), ("99.9%", 1)]
var truths: [Int: [[Int64]]] = [:]
for (_, below) in shares {
    let labels = (0..<items).filter { buckets[$0] < below }.map(Int64.init)
    var base: [Float] = []
    base.reserveCapacity(labels.count * dimension)
    for label in labels { base.append(contentsOf: vectors[(Int(label) * dimension)..<((Int(label) + 1) * dimension)]) }
    truths[below] = queries.map { query in
        ExactSearch.topK(query: query, base: base, dimension: dimension, labels: labels, k: 10, metric: .innerProduct).map(\.label)
    }
}

func ids(_ hits: [Hit]) -> [Int64] { hits.map { if case .int(let value) = $0.id { value } else { -1 } } }

/// `fixed`: the breadth the results of main used (IVF nprobe 64, HNSW ef_search 64) named per request,
/// filter cache off; `calibrated`: the engine's defaults after recall calibration (nothing named).
struct Mode {
    var name: String
    var fixed: Bool
    var cache: Bool
    var indexOnly: Bool
}
let modes = [Mode(name: "fixed, no cache", fixed: true, cache: false, indexOnly: false),
             Mode(name: "calibrated, no cache", fixed: false, cache: false, indexOnly: false),
             Mode(name: "calibrated, cache", fixed: false, cache: true, indexOnly: false),
             Mode(name: "calibrated, cache, index only", fixed: false, cache: true, indexOnly: true)]
let unfilteredTruth = queries.map { query in
    ExactSearch.topK(query: query, base: vectors, dimension: dimension, k: 10, metric: .innerProduct).map(\.label)
}

var rows: [String] = []
var calibrations: [String] = []
for spec in ["Flat", "IVF1024,Flat", "HNSW32"] {
    let start = now()
    let served = try engine(spec: spec)
    log("\(spec): opened (index rebuilt) in \(String(format: "%.1f", now() - start)) s")
    let calibrationStart = now()
    _ = try served.search([queries[0]], options: SearchOptions(k: 10))
    if let calibration = served.recallCalibrator.last {
        let trials = calibration.trials.map { "\($0.value): \(String(format: "%.3f", $0.recall))" }.joined(separator: ", ")
        let line = "| \(spec) | \(calibration.parameter.rawValue) | \(calibration.value) | \(String(format: "%.3f", calibration.recall)) | \(calibration.reached) | \(trials) | \(String(format: "%.1f", now() - calibrationStart)) |"
        log(line)
        calibrations.append(line)
    }
    for mode in modes {
        served.filterPlanner.settings.withLock {
            $0 = mode.indexOnly ? FilterPlanner.Settings(exactMinimum: 0, exactFraction: 0, exactMaximum: 0) : FilterPlanner.Settings()
        }
        served.filterCache.capacityBytes = mode.cache ? FilterCache.defaultCapacityBytes : 0
        for (filteredOut, below) in [("0%", 1000)] + shares {
            if mode.indexOnly && below == 1000 { continue }
            let filter = below == 1000 ? TagFilter() : TagFilter(expression: .attribute(AttributePredicate(name: "bucket", conditions: [.lt(Double(below))])))
            var found: [[Int64]] = []
            var plans: [String: Int] = [:]
            var widenings = 0
            var cached = 0
            let begin = now()
            for query in queries {
                var options = SearchOptions(k: 10, filter: filter)
                if mode.fixed {
                    options.nprobe = spec.hasPrefix("IVF") ? 64 : nil
                    options.efSearch = spec.hasPrefix("HNSW") ? 64 : nil
                }
                let (hits, plan) = try served.searchExplained([query], options: options)
                found.append(ids(hits[0]))
                plans[plan.kind.rawValue, default: 0] += 1
                widenings += plan.widenings
                if plan.cachedFilter { cached += 1 }
            }
            let seconds = now() - begin
            let recall = ExactSearch.recall(found: found, truth: below == 1000 ? unfilteredTruth : truths[below]!)
            let row = "| \(spec) | \(mode.name) | \(filteredOut) | \(plans.map { "\($0.key) \($0.value)" }.sorted().joined(separator: ", ")) | \(String(format: "%.3f", recall)) | \(String(format: "%.1f", Double(queries.count) / seconds)) | \(cached) | \(widenings) |"
            log(row)
            rows.append(row)
        }
    }
    try served.close()
}

var quantized: [String] = []
for spec in ["IVF1024,Flat", "IVF1024,SQ8", "IVF1024,PQ16"] {
    let start = now()
    let served = try engine(spec: spec)
    log("\(spec): opened (index rebuilt) in \(String(format: "%.1f", now() - start)) s")
    _ = try served.search([queries[0]], options: SearchOptions(k: 10))
    let calibrated = served.recallCalibrator.last?.value ?? 0
    for nprobe in [64, calibrated] {
        for oversample in spec.hasSuffix("Flat") ? [1] : [1, 2, 4, 8, 16] {
            var found: [[Int64]] = []
            let begin = now()
            for query in queries {
                var options = SearchOptions(k: 10, nprobe: nprobe)
                options.oversample = oversample
                found.append(ids(try served.search([query], options: options)[0]))
            }
            let seconds = now() - begin
            let bytes = try IndexSpec(parsing: spec).memoryEstimate(dimension: dimension).bytesPerVector
            let label = nprobe == 64 ? "64" : "\(nprobe) (calibrated)"
            let row = "| \(spec) | \(label) | \(oversample) | \(String(format: "%.3f", ExactSearch.recall(found: found, truth: unfilteredTruth))) | \(String(format: "%.0f", Double(queries.count) / seconds)) | \(String(format: "%.0f", bytes)) |"
            log(row)
            quantized.append(row)
        }
    }
    try served.close()
}

print("## Recall calibration (target 0.95, 64 queries: midpoints of two items, both left out)\n")
print("| spec | parameter | chosen | sample recall@10 | reached | trials (value: recall) | seconds |")
print("|---|---|---|---|---|---|---|")
for row in calibrations { print(row) }
print("")
print("## Filtered recall@10 (exact truth over the matching items; 0% = unfiltered, exact truth over all items)\n")
print("| spec | mode | filtered out | plans used (queries) | recall@10 | QPS (1 thread) | filter from cache (queries) | widenings |")
print("|---|---|---|---|---|---|---|---|")
for row in rows { print(row) }
print("\n## Quantized, unfiltered: recall@10 after rescoring vs nprobe and oversample\n")
print("| spec | nprobe | oversample | recall@10 (exact truth) | QPS (1 thread) | bytes/vector (layout estimate) |")
print("|---|---|---|---|---|---|")
for row in quantized { print(row) }
try? FileManager.default.removeItem(atPath: workDirectory)
