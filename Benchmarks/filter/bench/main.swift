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

var rows: [String] = []
for spec in ["Flat", "IVF1024,Flat", "HNSW32"] {
    let start = now()
    let served = try engine(spec: spec)
    log("\(spec): opened (index rebuilt) in \(String(format: "%.1f", now() - start)) s")
    for (mode, settings) in [("planner", FilterPlanner.Settings()), ("index only", FilterPlanner.Settings(exactMinimum: 0, exactFraction: 0, exactMaximum: 0))] {
        served.filterPlanner.settings.withLock { $0 = settings }
        for (filteredOut, below) in shares {
            let filter = TagFilter(expression: .attribute(AttributePredicate(name: "bucket", conditions: [.lt(Double(below))])))
            var found: [[Int64]] = []
            var plans: [String: Int] = [:]
            var widenings = 0
            let begin = now()
            for query in queries {
                let nprobe = spec.hasPrefix("IVF") ? 64 : nil
                let (hits, plan) = try served.searchExplained([query], options: SearchOptions(k: 10, nprobe: nprobe, filter: filter))
                found.append(ids(hits[0]))
                plans[plan.kind.rawValue, default: 0] += 1
                widenings += plan.widenings
            }
            let seconds = now() - begin
            let recall = ExactSearch.recall(found: found, truth: truths[below]!)
            let row = "| \(spec) | \(mode) | \(filteredOut) | \(plans.map { "\($0.key) \($0.value)" }.sorted().joined(separator: ", ")) | \(String(format: "%.3f", recall)) | \(String(format: "%.0f", Double(queries.count) / seconds)) | \(widenings) |"
            log(row)
            rows.append(row)
        }
    }
    try served.close()
}

var quantized: [String] = []
for spec in ["IVF1024,SQ8", "IVF1024,PQ16"] {
    let start = now()
    let served = try engine(spec: spec)
    log("\(spec): opened (index rebuilt) in \(String(format: "%.1f", now() - start)) s")
    let truth = queries.map { query in
        ExactSearch.topK(query: query, base: vectors, dimension: dimension, k: 10, metric: .innerProduct).map(\.label)
    }
    for oversample in [1, 2, 4, 8, 16] {
        var found: [[Int64]] = []
        let begin = now()
        for query in queries {
            var options = SearchOptions(k: 10, nprobe: 64)
            options.oversample = oversample
            found.append(ids(try served.search([query], options: options)[0]))
        }
        let seconds = now() - begin
        let bytes = try IndexSpec(parsing: spec).memoryEstimate(dimension: dimension).bytesPerVector
        let row = "| \(spec) | 64 | \(oversample) | \(String(format: "%.3f", ExactSearch.recall(found: found, truth: truth))) | \(String(format: "%.0f", Double(queries.count) / seconds)) | \(String(format: "%.0f", bytes)) |"
        log(row)
        quantized.append(row)
    }
    try served.close()
}

print("## Filtered recall@10 (exact truth over the matching items)\n")
print("| spec (IVF: nprobe 64; HNSW: ef_search 64) | plans | filtered out | plans used (queries) | recall@10 | QPS (1 thread) | widenings |")
print("|---|---|---|---|---|---|---|")
for row in rows { print(row) }
print("\n## Quantized, unfiltered: recall@10 after rescoring vs oversample\n")
print("| spec | nprobe | oversample | recall@10 | QPS (1 thread) | bytes/vector (layout estimate) |")
print("|---|---|---|---|---|---|")
for row in quantized { print(row) }
try? FileManager.default.removeItem(atPath: workDirectory)
