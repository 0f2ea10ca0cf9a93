import Foundation
import SteerCore
import SteerIndex
import SteerStore
import Testing
@testable import SteerEngine

/// Recall calibration (`RecallCalibrator`): the default ef_search/nprobe it chooses keeps filtered
/// recall@10 against the exact top 10 over the matches at the target at every selectivity, and
/// quantized IVF after rescoring at its stated recall, with no per-request knob.
@Suite struct RecallCalibrationTests {
    static let dimension = 24

    /// Uniform vectors (a hard case for IVF and HNSW) with a bucket 0..<1000 independent of the vector.
    static func catalogue(count: Int, seed: UInt64) -> [ItemInput] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { index in
            let vector = (0..<dimension).map { _ in Float.random(in: -1...1, using: &generator) }
            return ItemInput(id: .int(Int64(index)), vector: vector,
                             attributesJSON: #"{"bucket":\#(Int.random(in: 0..<1000, using: &generator))}"#)
        }
    }

    static func open(_ directory: String, spec: String, target: Double? = RecallCalibration.defaultTarget) throws -> RetrievalEngine {
        var configuration = RetrievalEngine.Configuration(dataDirectory: directory, dimension: dimension, indexSpec: spec, syncWrites: false,
                                                          payloadIndexes: ["bucket": .numeric])
        configuration.recallTarget = target
        return try RetrievalEngine(configuration: configuration)
    }

    static func directory() -> String { NSTemporaryDirectory() + "steer-calibration-test-" + UUID().uuidString }

    /// Mean recall@10 of `engine`'s default search against exact search over the items with bucket < `below`.
    static func filteredRecall(_ engine: RetrievalEngine, _ items: [ItemInput], below: Int, queries: [[Float]]) throws -> (Double, Set<SearchPlan.Kind>) {
        let kept = items.filter { item in
            FilterExpression.attribute(AttributePredicate(name: "bucket", conditions: [.lt(Double(below))]))
                .matches(tags: [], attributesJSON: item.attributesJSON)
        }
        let filter = TagFilter(expression: .attribute(AttributePredicate(name: "bucket", conditions: [.lt(Double(below))])))
        var found: [[Int64]] = []
        var truth: [[Int64]] = []
        var kinds = Set<SearchPlan.Kind>()
        for query in queries {
            let (hits, plan) = try engine.searchExplained([query], options: SearchOptions(k: 10, filter: filter))
            kinds.insert(plan.kind)
            found.append(hits[0].map { if case .int(let value) = $0.id { value } else { -1 } })
            truth.append(ExactSearch.topK(query: query, base: kept.flatMap(\.vector), dimension: dimension, k: 10, metric: .innerProduct)
                .map { if case .int(let value) = kept[Int($0.label)].id { value } else { -1 } })
        }
        return (ExactSearch.recall(found: found, truth: truth), kinds)
    }

    static func queries(_ count: Int, seed: UInt64) -> [[Float]] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in (0..<dimension).map { _ in Float.random(in: -1...1, using: &generator) } }
    }

    /// On this data IVF256 at its standard nprobe 16 (32 lists at 50 % filtered out) and HNSW4,efC16 at its
    /// standard ef_search 64 miss the target through the index plan (checked first, with calibration
    /// off); calibrated, the defaults reach it at every selectivity, through the index plan and the exact one.
    @Test(arguments: ["HNSW4,efC16", "IVF256,Flat"])
    func filteredRecallReachesTheTargetAtEverySelectivity(spec: String) throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let items = Self.catalogue(count: 4000, seed: 31)
        let queries = Self.queries(100, seed: 32)
        do {
            let engine = try Self.open(directory, spec: spec, target: nil)
            defer { try? engine.close() }
            #expect(try engine.upsert(items) == 4000)
            let (recall, kinds) = try Self.filteredRecall(engine, items, below: 500, queries: queries)
            #expect(recall < 0.95 && kinds == [.index], "\(spec) uncalibrated at 50 %: recall \(recall)")
        }
        let engine = try Self.open(directory, spec: spec)
        defer { try? engine.close() }
        // Opening the stored items started the calibration in the background.
        engine.recallCalibrator.waitUntilIdle()
        for (mode, settings) in [("planner", FilterPlanner.Settings()),
                                 ("index only", FilterPlanner.Settings(exactMinimum: 0, exactFraction: 0, exactMaximum: 0))] {
            engine.filterPlanner.settings.withLock { $0 = settings }
            for below in [500, 100, 10] {
                // HNSW4 forced onto the index with 1 % of the items allowed measured 0.906–0.942 across runs
                // (the graph is built by parallel insertion, so it differs run to run): below the target, and
                // why the planner answers that selectivity exactly. docs/index.md states it.
                if mode == "index only" && below == 10 && spec.hasPrefix("HNSW") { continue }
                let (recall, kinds) = try Self.filteredRecall(engine, items, below: below, queries: queries)
                #expect(recall >= 0.95, "\(spec) \(mode) bucket < \(below): recall \(recall)")
                if mode == "index only" || below == 500 { #expect(kinds == [.index], "\(spec) \(mode) \(below): \(kinds)") }
            }
        }
        let calibration = try #require(engine.recallCalibrator.last)
        #expect(calibration.reached && calibration.recallLowerBound >= 0.95 && calibration.recall > calibration.recallLowerBound
                && calibration.queries == RecallCalibration.sampleQueries)
        #expect(calibration.parameter == (spec.hasPrefix("IVF") ? .nprobe : .efSearch))
        #expect(engine.stats().recallCalibration == calibration)
        // The standard default was not enough here: calibration raised it.
        let shard = engine.generation.index.shards[0]
        if spec.hasPrefix("IVF") {
            #expect(calibration.trials.first?.value == VectorIndex.standardNprobe && shard.defaultNprobe == calibration.value)
        } else {
            #expect(calibration.trials.first?.value == VectorIndex.standardEfSearch && shard.defaultEfSearch == calibration.value)
        }
        #expect(calibration.trials.first!.recallLowerBound < 0.95 && calibration.trials.count > 1)
    }

    /// A mean at the target is not enough: the sample's spread must put the lower bound there too.
    @Test func theLowerBoundCountsTheSamplesSpread() {
        let steady = RecallCalibration.meanAndLowerBound(Array(repeating: 0.96, count: 64))
        #expect(abs(steady.mean - steady.lowerBound) < 1e-9 && abs(steady.mean - 0.96) < 1e-9)
        // Mean 0.96 from recalls of 1.0 and 0.6: the bound falls below 0.95.
        let spread = RecallCalibration.meanAndLowerBound(Array(repeating: 1.0, count: 58) + Array(repeating: 0.6, count: 6))
        #expect(abs(spread.mean - (58 + 3.6) / 64) < 1e-9 && spread.lowerBound < 0.95 && spread.lowerBound > 0.9)
        #expect(RecallCalibration.meanAndLowerBound([]) == (1, 1))
    }

    @Test func offKeepsTheDefaultsAndGrowthRecalibrates() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let engine = try Self.open(directory, spec: "IVF64,Flat", target: nil)
            defer { try? engine.close() }
            _ = try engine.upsert(Self.catalogue(count: 2000, seed: 33))
            _ = try engine.search(Self.queries(1, seed: 34), options: SearchOptions(k: 10))
            #expect(engine.recallCalibrator.runs == 0 && engine.recallCalibrator.last == nil)
            #expect(engine.generation.index.shards[0].defaultNprobe == VectorIndex.standardNprobe)
            #expect(engine.stats().recallCalibration == nil)
        }
        let engine = try Self.open(directory, spec: "IVF64,Flat")
        defer { try? engine.close() }
        engine.recallCalibrator.waitUntilIdle()
        #expect(engine.recallCalibrator.runs == 1, "started when the index was loaded")
        _ = try engine.search(Self.queries(1, seed: 34), options: SearchOptions(k: 10))
        engine.recallCalibrator.waitUntilIdle()
        _ = try engine.search(Self.queries(1, seed: 35), options: SearchOptions(k: 10))
        #expect(engine.recallCalibrator.runs == 1, "not due again until the index doubles")
        let more = Self.catalogue(count: 4000, seed: 36).map { item in
            var copy = item
            if case .int(let value) = item.id { copy.id = .int(value + 10_000) }
            return copy
        }
        _ = try engine.upsert(more)
        engine.recallCalibrator.waitUntilIdle()
        #expect(engine.recallCalibrator.runs == 2 && engine.recallCalibrator.lastError == nil, "started by the write that doubled the index")
        #expect(engine.recallCalibrator.last?.reached == true)
    }

    /// Rescoring is bounded by the probes: with IVF64's standard nprobe 16 the rescored recall stays
    /// where the probes leave it; calibrated, the default oversample reaches the stated recall.
    @Test(arguments: [("IVF64,SQ8", 0.95), ("IVF64,PQ8", 0.90)])
    func rescoredRecallReachesItsTargetWithTheDefaults(spec: String, wanted: Double) throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, spec: spec)
        defer { try? engine.close() }
        let items = Self.catalogue(count: 4000, seed: 38)
        _ = try engine.upsert(items)
        engine.recallCalibrator.waitUntilIdle()
        let base = items.flatMap(\.vector)
        var found: [[Int64]] = []
        var truth: [[Int64]] = []
        for query in Self.queries(30, seed: 39) {
            let (hits, plan) = try engine.searchExplained([query], options: SearchOptions(k: 10))
            #expect(plan.oversample == FilterPlanner.Settings().defaultOversample && plan.rescored > 0)
            found.append(hits[0].map { if case .int(let value) = $0.id { value } else { -1 } })
            truth.append(ExactSearch.topK(query: query, base: base, dimension: Self.dimension, k: 10, metric: .innerProduct).map(\.label))
        }
        let recall = ExactSearch.recall(found: found, truth: truth)
        #expect(recall >= wanted, "\(spec): rescored recall@10 \(recall)")
    }

    /// Calibration runs in the background: held back, it leaves searches answering at once with the
    /// index's own default, `stats` says it is pending, and once it ends its value is the default.
    @Test func searchesDoNotWaitForCalibration() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let gate = DispatchSemaphore(value: 0)
        let released = Locked(false)
        var configuration = RetrievalEngine.Configuration(dataDirectory: directory, dimension: Self.dimension, indexSpec: "IVF256,Flat",
                                                          syncWrites: false)
        configuration.recallCalibrationBeforeRun = { gate.wait() }
        let engine = try RetrievalEngine(configuration: configuration)
        defer { try? engine.close() }
        // Should a search wait for the held run, this releases it after 30 s and the check below fails.
        let safety = Thread {
            Thread.sleep(forTimeInterval: 30)
            if released.withLock({ value in let was = value; value = true; return !was }) { gate.signal() }
        }
        safety.start()
        _ = try engine.upsert(Self.catalogue(count: 4000, seed: 40))
        #expect(engine.recallCalibrator.status == .pending && engine.stats().recallCalibrationState == .pending)
        let shard = engine.generation.index.shards[0]
        for query in Self.queries(5, seed: 41) {
            let hits = try engine.search([query], options: SearchOptions(k: 10))
            #expect(hits[0].count == 10)
        }
        #expect(!released.get(), "a search waited for the calibration")
        #expect(engine.recallCalibrator.status == .pending && engine.recallCalibrator.runs == 0)
        #expect(shard.defaultNprobe == VectorIndex.standardNprobe && engine.stats().recallCalibration == nil)
        if released.withLock({ value in let was = value; value = true; return !was }) { gate.signal() }
        engine.recallCalibrator.waitUntilIdle()
        let calibration = try #require(engine.recallCalibrator.last)
        #expect(engine.recallCalibrator.status == .done && engine.stats().recallCalibrationState == .done)
        #expect(calibration.reached && calibration.value > VectorIndex.standardNprobe && shard.defaultNprobe == calibration.value)
    }
}
