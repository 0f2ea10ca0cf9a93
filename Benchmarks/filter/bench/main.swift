// steer-filter-bench: filtered recall@10 against exact search over the matching items, per plan, and
// recall after rescoring against oversample for quantized indexes (Benchmarks/filter/run.sh).
// Usage: steer-filter-bench ITEMS DIMENSION QUERIES WORKDIR [memory|filtered|quantized|distinct|tags]
// With `memory`: instead, the resident growth of a fresh process opening the data with each spec
// (rebuilt from the store, then loaded from the index file it saved), before and after malloc_trim.
// `filtered` / `quantized` run one of the two search sections (default: both). `distinct`: instead,
// QPS with a different range filter on every request (`bucket` in [a, a + width), a distinct per
// request), resolved from RocksDB and from the in-memory columns back to back, for the specs in
// STEER_DISTINCT_SPECS (default "HNSW32 IVF1024,Flat"). `tags`: instead, QPS of tag filters (each item
// carries the tags h<bucket/500>, t<bucket/100> and p<bucket/10>): `tags_any` of one tag and `tags_none`
// of all but one tag of a level (an exclusion-only filter), at 50/90/99 % filtered out, filter cache off,
// for the specs in STEER_TAG_SPECS (default "HNSW32 IVF1024,Flat"); every request's hit ids go to the file
// STEER_BENCH_HITS (when set), so two builds' runs can be compared line by line. This section uses only
// APIs that main had before the in-memory tag postings, so the same source builds against both.
// Specs: STEER_FILTER_SPECS (filtered section, default "Flat IVF1024,Flat HNSW32"), STEER_QUANT_SPECS
// (quantized section, default "IVF1024,Flat IVF1024,SQ8 IVF1024,PQ16"), STEER_MEMORY_SPECS (memory mode,
// default "Flat IVF1024,Flat HNSW32 IVF1024,SQ8 IVF1024,PQ16"): space-separated index specs.
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SteerCore
import SteerEngine
import SteerIndex

/// VmRSS of this process in bytes (/proc/self/status).
func residentBytes() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kilobytes = Double(line.split(separator: " ").dropFirst().first ?? "") else { return .nan }
    return kilobytes * 1024
}

let arguments = CommandLine.arguments
// The memory mode's child: opens WORKDIR with SPEC (the index is rebuilt from the store, or loaded when
// saved with this spec), waits for recall calibration, searches once, prints "indexed growth-bytes
// growth-after-malloc_trim-bytes" (malloc_trim(0) hands the heap glibc kept after frees back).
if arguments.count == 5 && arguments[1] == "memory-child", let dimension = Int(arguments[3]) {
    let before = residentBytes()
    let engine = try RetrievalEngine(configuration: .init(dataDirectory: arguments[2], dimension: dimension, indexSpec: arguments[4],
                                                          syncWrites: false, payloadIndexes: ["bucket": .numeric]))
    engine.recallCalibrator.waitUntilIdle()
    _ = try engine.search([[Float](repeating: 0.5, count: dimension)], options: SearchOptions(k: 10))
    let after = residentBytes()
    // glibc's malloc_trim (malloc.h is not in Swift's Glibc module).
    if let symbol = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim") {
        _ = unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)(0)
    }
    let trimmed = residentBytes()
    print("\(engine.stats().indexed) \(after - before) \(trimmed - before)")
    try engine.close()
    exit(0)
}
let section = arguments.count == 6 ? arguments[5] : "both"
guard arguments.count == 5 || ["memory", "filtered", "quantized", "distinct", "tags"].contains(section), let items = Int(arguments[1]),
      let dimension = Int(arguments[2]), let queryCount = Int(arguments[3]) else {
    FileHandle.standardError.write(Data("usage: steer-filter-bench ITEMS DIMENSION QUERIES WORKDIR [memory|filtered|quantized|distinct|tags]\n".utf8))
    exit(2)
}
let memoryMode = section == "memory"
func specs(_ variable: String, _ fallback: String) -> [String] {
    (ProcessInfo.processInfo.environment[variable] ?? fallback).split(separator: " ").map(String.init)
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
        let bucket = buckets[index]
        batch.append(ItemInput(id: .int(Int64(index)), vector: Array(vectors[(index * dimension)..<((index + 1) * dimension)]),
                               tags: section == "tags" ? ["h\(bucket / 500)", "t\(bucket / 100)", "p\(bucket / 10)"] : [],
                               attributesJSON: #"{"bucket":\#(bucket)}"#))
        if batch.count == 5000 || index == items - 1 {
            _ = try loader.upsert(batch)
            batch.removeAll(keepingCapacity: true)
        }
    }
    try loader.close()
    log("loaded \(items) items in \(String(format: "%.1f", now() - start)) s")
}

if memoryMode {
    print("## Memory: layout estimate against the resident growth of a fresh process opening the data with the spec\n")
    print("Each spec opens twice: `rebuilt` (the index is built from the store; it is saved on close) and `loaded` (a new process reads that file). `trimmed`: after malloc_trim(0).\n")
    print("| spec | open | estimate bytes/vector | estimate MiB | RSS growth MiB | RSS growth bytes/vector | trimmed MiB | trimmed bytes/vector |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in specs("STEER_MEMORY_SPECS", "Flat IVF1024,Flat HNSW32 IVF1024,SQ8 IVF1024,PQ16") {
        for open in ["rebuilt", "loaded"] {
            let child = Process()
            child.executableURL = URL(fileURLWithPath: arguments[0])
            child.arguments = ["memory-child", workDirectory, String(dimension), spec]
            let output = Pipe()
            child.standardOutput = output
            try child.run()
            let answer = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            child.waitUntilExit()
            let fields = answer.split(whereSeparator: \.isWhitespace)
            guard child.terminationStatus == 0, fields.count == 3, let indexed = Double(fields[0]), let growth = Double(fields[1]),
                  let trimmed = Double(fields[2]) else {
                log("\(spec): memory child failed (status \(child.terminationStatus)): \(answer)")
                exit(1)
            }
            let estimate = try IndexSpec(parsing: spec).memoryEstimate(dimension: dimension)
            func mib(_ bytes: Double) -> String { String(format: "%.1f", bytes / 1_048_576) }
            let row = "| \(spec) | \(open) | \(String(format: "%.0f", estimate.bytesPerVector)) | \(mib(estimate.totalBytes(vectors: Int(indexed)))) | \(mib(growth)) | \(String(format: "%.0f", growth / indexed)) | \(mib(trimmed)) | \(String(format: "%.0f", trimmed / indexed)) |"
            log(row)
            print(row)
        }
    }
    try? FileManager.default.removeItem(atPath: workDirectory)
    exit(0)
}

if section == "distinct" {
    print("## Distinct range filters per request: RocksDB resolution against the in-memory columns\n")
    print("Each request filters `bucket` in [a, a + width) with its own a (no two requests share a filter); the filter cache is off, so every request resolves its filter. Modes run back to back on the same open index; `identical` counts requests whose hit lists (ids and order) equal the other mode's.\n")
    print("| spec | filtered out | mode | plans used (queries) | mean matches | recall@10 | QPS (1 thread) | p50 ms | p99 ms | filter from cache | identical to other mode |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in specs("STEER_DISTINCT_SPECS", "HNSW32 IVF1024,Flat") {
        let served = try engine(spec: spec)
        // Filter cache off: the two modes resolve the same filters, and the second must not find the
        // first one's match sets (with distinct filters per request a cache would not hit anyway).
        served.filterCache.capacityBytes = 0
        served.recallCalibrator.waitUntilIdle()
        log("\(spec): calibrated \(served.recallCalibrator.last.map { "\($0.parameter.rawValue) \($0.value)" } ?? "-")")
        log("\(spec): in-memory payload columns \(served.store.payloadColumnBytes) bytes (estimate) for \(items) items, \(served.store.payloadColumnBytes / max(1, items)) bytes per item")
        var unfilteredLatencies: [Double] = []
        let unfilteredStart = now()
        for query in queries {
            let queryStart = now()
            _ = try served.search([query], options: SearchOptions(k: 10))
            unfilteredLatencies.append(now() - queryStart)
        }
        unfilteredLatencies.sort()
        let unfilteredRow = "| \(spec) | 0% | unfiltered | - | \(items) | - | \(String(format: "%.1f", Double(queries.count) / (now() - unfilteredStart))) | \(String(format: "%.2f", unfilteredLatencies[unfilteredLatencies.count / 2] * 1000)) | \(String(format: "%.2f", unfilteredLatencies[min(unfilteredLatencies.count - 1, unfilteredLatencies.count * 99 / 100)] * 1000)) | - | - |"
        log(unfilteredRow)
        print(unfilteredRow)
        for (filteredOut, width) in [("50%", 500), ("90%", 100), ("99%", 10)] {
            var starts = Array(0...(1000 - width))
            var shuffle = SeededGenerator(seed: UInt64(width))
            starts.shuffle(using: &shuffle)
            let ranges = queries.indices.map { starts[$0 % starts.count] }
            // Truth: the exact top 10 over each request's matches.
            let truth: [[Int64]] = queries.indices.map { position in
                let low = ranges[position]
                let labels = (0..<items).filter { buckets[$0] >= low && buckets[$0] < low + width }.map(Int64.init)
                var base: [Float] = []
                base.reserveCapacity(labels.count * dimension)
                for label in labels { base.append(contentsOf: vectors[(Int(label) * dimension)..<((Int(label) + 1) * dimension)]) }
                return ExactSearch.topK(query: queries[position], base: base, dimension: dimension, labels: labels, k: 10, metric: .innerProduct).map(\.label)
            }
            var answers: [Bool: [[Int64]]] = [:]
            var lines: [Bool: String] = [:]
            for inMemory in [false, true] {
                served.filterPlanner.settings.withLock { $0.inMemoryFilters = inMemory }
                var found: [[Int64]] = []
                var plans: [String: Int] = [:]
                var matches = 0
                var cached = 0
                var latencies: [Double] = []
                let begin = now()
                for (position, query) in queries.enumerated() {
                    let low = Double(ranges[position])
                    let filter = TagFilter(expression: .attribute(AttributePredicate(name: "bucket", conditions: [.gte(low), .lt(low + Double(width))])))
                    let queryStart = now()
                    let (hits, plan) = try served.searchExplained([query], options: SearchOptions(k: 10, filter: filter))
                    latencies.append(now() - queryStart)
                    found.append(ids(hits[0]))
                    plans[plan.kind.rawValue, default: 0] += 1
                    matches += plan.matches ?? 0
                    if plan.cachedFilter { cached += 1 }
                }
                let seconds = now() - begin
                latencies.sort()
                answers[inMemory] = found
                let p50 = latencies[latencies.count / 2] * 1000, p99 = latencies[min(latencies.count - 1, latencies.count * 99 / 100)] * 1000
                lines[inMemory] = "| \(spec) | \(filteredOut) | \(inMemory ? "in-memory columns" : "RocksDB") | \(plans.map { "\($0.key) \($0.value)" }.sorted().joined(separator: ", ")) | \(matches / max(1, queries.count)) | \(String(format: "%.3f", ExactSearch.recall(found: found, truth: truth))) | \(String(format: "%.1f", Double(queries.count) / seconds)) | \(String(format: "%.2f", p50)) | \(String(format: "%.2f", p99)) | \(cached) |"
            }
            let identical = zip(answers[false]!, answers[true]!).filter { $0 == $1 }.count
            for inMemory in [false, true] {
                let row = lines[inMemory]! + " \(identical)/\(queries.count) |"
                log(row)
                print(row)
            }
        }
        try served.close()
    }
    try? FileManager.default.removeItem(atPath: workDirectory)
    exit(0)
}

if section == "tags" {
    print("## Tag filters: `tags_any` of one tag and `tags_none` of all but one tag of a level\n")
    print("Each item carries h<bucket/500>, t<bucket/100>, p<bucket/10>. Request i takes the level's tag number r_i (a seeded shuffle, so requests differ); `tags_any` [r_i] keeps that tag's items, `tags_none` [every other tag of the level] keeps the same share as an exclusion-only filter. Filter cache off: every request resolves its filter. `scanned` is the mean of the plan's `scannedRecords` (records or live ids read for the filter).\n")
    print("| spec | filtered out | filter | plans used (queries) | mean matches | recall@10 | QPS (1 thread) | p50 ms | p99 ms | scanned |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    var hitLines: [String] = []
    for spec in specs("STEER_TAG_SPECS", "HNSW32 IVF1024,Flat") {
        let served = try engine(spec: spec)
        served.filterCache.capacityBytes = 0
        served.recallCalibrator.waitUntilIdle()
        log("\(spec): calibrated \(served.recallCalibrator.last.map { "\($0.parameter.rawValue) \($0.value)" } ?? "-")")
        // The tag postings' memory where the engine reports it (a field main's `EngineStats` lacks).
        let stats = String(describing: served.stats())
        if let range = stats.range(of: #"tagPostingBytes: [0-9]+"#, options: .regularExpression) { log("\(spec): \(stats[range])") }
        var unfiltered: [Double] = []
        let unfilteredStart = now()
        for query in queries {
            let queryStart = now()
            _ = try served.search([query], options: SearchOptions(k: 10))
            unfiltered.append(now() - queryStart)
        }
        unfiltered.sort()
        let baseline = "| \(spec) | 0% | none | - | \(items) | - | \(String(format: "%.1f", Double(queries.count) / (now() - unfilteredStart))) | \(String(format: "%.2f", unfiltered[unfiltered.count / 2] * 1000)) | \(String(format: "%.2f", unfiltered[min(unfiltered.count - 1, unfiltered.count * 99 / 100)] * 1000)) | - |"
        log(baseline)
        print(baseline)
        for (filteredOut, prefix, levels, width) in [("50%", "h", 2, 500), ("90%", "t", 10, 100), ("99%", "p", 100, 10)] {
            var numbers = Array(0..<levels)
            var shuffle = SeededGenerator(seed: UInt64(levels))
            numbers.shuffle(using: &shuffle)
            let chosen = queries.indices.map { numbers[$0 % levels] }
            let truth: [[Int64]] = queries.indices.map { position in
                let labels = (0..<items).filter { buckets[$0] / width == chosen[position] }.map(Int64.init)
                var base: [Float] = []
                base.reserveCapacity(labels.count * dimension)
                for label in labels { base.append(contentsOf: vectors[(Int(label) * dimension)..<((Int(label) + 1) * dimension)]) }
                return ExactSearch.topK(query: queries[position], base: base, dimension: dimension, labels: labels, k: 10, metric: .innerProduct).map(\.label)
            }
            for exclusion in [false, true] {
                var found: [[Int64]] = []
                var plans: [String: Int] = [:]
                var matches = 0, scanned = 0
                var latencies: [Double] = []
                let begin = now()
                for (position, query) in queries.enumerated() {
                    let filter = exclusion
                        ? TagFilter(tagsNone: (0..<levels).filter { $0 != chosen[position] }.map { "\(prefix)\($0)" })
                        : TagFilter(tagsAny: ["\(prefix)\(chosen[position])"])
                    let queryStart = now()
                    let (hits, plan) = try served.searchExplained([query], options: SearchOptions(k: 10, filter: filter))
                    latencies.append(now() - queryStart)
                    found.append(ids(hits[0]))
                    plans[plan.kind.rawValue, default: 0] += 1
                    matches += plan.matches ?? 0
                    scanned += plan.scannedRecords
                }
                let seconds = now() - begin
                latencies.sort()
                let name = exclusion ? "tags_none (\(levels - 1) tag\(levels == 2 ? "" : "s"))" : "tags_any (1 tag)"
                let p50 = latencies[latencies.count / 2] * 1000, p99 = latencies[min(latencies.count - 1, latencies.count * 99 / 100)] * 1000
                let row = "| \(spec) | \(filteredOut) | \(name) | \(plans.map { "\($0.key) \($0.value)" }.sorted().joined(separator: ", ")) | \(matches / max(1, queries.count)) | \(String(format: "%.3f", ExactSearch.recall(found: found, truth: truth))) | \(String(format: "%.1f", Double(queries.count) / seconds)) | \(String(format: "%.2f", p50)) | \(String(format: "%.2f", p99)) | \(scanned / max(1, queries.count)) |"
                log(row)
                print(row)
                for (position, list) in found.enumerated() {
                    hitLines.append("\(spec) \(filteredOut) \(exclusion ? "none" : "any") \(position): \(list.map(String.init).joined(separator: " "))")
                }
            }
        }
        try served.close()
    }
    if let path = ProcessInfo.processInfo.environment["STEER_BENCH_HITS"] {
        try (hitLines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }
    try? FileManager.default.removeItem(atPath: workDirectory)
    exit(0)
}

// Ground truth per kept share: the exact top 10 over the matching items.
let runFiltered = section != "quantized"
let runQuantized = section != "filtered"
let shares: [(filteredOut: String, below: Int)] = [("50%", 500), ("90%", 100), ("99%", 10), ("99.9%", 1)]
var truths: [Int: [[Int64]]] = [:]
for (_, below) in shares where runFiltered {
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
for spec in runFiltered ? specs("STEER_FILTER_SPECS", "Flat IVF1024,Flat HNSW32") : [] {
    let start = now()
    let served = try engine(spec: spec)
    log("\(spec): opened (index rebuilt) in \(String(format: "%.1f", now() - start)) s")
    let calibrationStart = now()
    // Calibration starts in the background when the index is opened; wait for it.
    served.recallCalibrator.waitUntilIdle()
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
for spec in runQuantized ? specs("STEER_QUANT_SPECS", "IVF1024,Flat IVF1024,SQ8 IVF1024,PQ16") : [] {
    let parsed = try IndexSpec(parsing: spec)
    let start = now()
    let served = try engine(spec: spec)
    let opened = now() - start
    served.recallCalibrator.waitUntilIdle()
    log("\(spec): opened (index rebuilt) in \(String(format: "%.1f", opened)) s, calibrated after \(String(format: "%.1f", now() - start)) s")
    let calibrated = served.recallCalibrator.last?.value ?? 0
    // Breadth: ef_search for HNSW, nprobe for IVF; 64 (main's former default) and the calibrated one.
    for breadth in Set([64, calibrated]).filter({ $0 > 0 }).sorted() {
        for oversample in parsed.isQuantized ? [1, 2, 4, 8, 16] : [1] {
            var found: [[Int64]] = []
            var latencies: [Double] = []
            let begin = now()
            for query in queries {
                var options = SearchOptions(k: 10)
                if parsed.isHNSW { options.efSearch = breadth } else if !parsed.isExact { options.nprobe = breadth }
                options.oversample = oversample
                let queryStart = now()
                found.append(ids(try served.search([query], options: options)[0]))
                latencies.append(now() - queryStart)
            }
            let seconds = now() - begin
            latencies.sort()
            let p50 = latencies[latencies.count / 2] * 1000, p99 = latencies[min(latencies.count - 1, latencies.count * 99 / 100)] * 1000
            let bytes = parsed.memoryEstimate(dimension: dimension).bytesPerVector
            let knob = parsed.isHNSW ? "ef_search" : "nprobe"
            let label = "\(knob) \(breadth)" + (breadth == calibrated ? " (calibrated)" : "")
            let row = "| \(spec) | \(label) | \(oversample) | \(String(format: "%.3f", ExactSearch.recall(found: found, truth: unfilteredTruth))) | \(String(format: "%.0f", Double(queries.count) / seconds)) | \(String(format: "%.2f", p50)) | \(String(format: "%.2f", p99)) | \(String(format: "%.0f", bytes)) | \(String(format: "%.0f", opened)) |"
            log(row)
            quantized.append(row)
        }
    }
    try served.close()
}

if runFiltered {
print("## Recall calibration (target 0.95, 64 queries: midpoints of two items, both left out)\n")
print("| spec | parameter | chosen | sample recall@10 | reached | trials (value: recall) | seconds |")
print("|---|---|---|---|---|---|---|")
for row in calibrations { print(row) }
print("")
print("## Filtered recall@10 (exact truth over the matching items; 0% = unfiltered, exact truth over all items)\n")
print("| spec | mode | filtered out | plans used (queries) | recall@10 | QPS (1 thread) | filter from cache (queries) | widenings |")
print("|---|---|---|---|---|---|---|---|")
for row in rows { print(row) }
}
if runQuantized {
print("\n## Quantized, unfiltered: recall@10 after rescoring vs breadth and oversample\n")
print("| spec | breadth | oversample | recall@10 (exact truth) | QPS (1 thread) | p50 ms | p99 ms | bytes/vector (layout estimate) | build s |")
print("|---|---|---|---|---|---|---|---|---|")
for row in quantized { print(row) }
}
try? FileManager.default.removeItem(atPath: workDirectory)
