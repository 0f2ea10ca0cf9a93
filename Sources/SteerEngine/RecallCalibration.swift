import Dispatch
import SteerCore
import SteerIndex
import SteerStore

/// The search breadth (HNSW `ef_search`, IVF `nprobe`) an index needs to reach a recall target on its
/// own data, measured by `RecallCalibrator` and made the default of its shards for every search that
/// names none (docs/index.md, "Recall calibration").
///
/// Method (`calibrate`): `sampleQueries` queries, each the midpoint of two live items' float vectors
/// from the store (the pairs evenly spaced over the ascending internal ids, so the choice is
/// deterministic). A stored vector itself would be an easy query for HNSW (its graph node links to its
/// own neighbours): on 100,000 uniform 64-d vectors it gave recall 0.936 at ef_search 64 where fresh
/// queries get 0.792 (Benchmarks/filter/results-2026-12-07-calibration-loaded.md). The truth of each query is
/// the exact top k + 2 over the whole index (HNSW: every live label allowed and searched by label
/// lookup; IVF: every list probed, so over the index's codes for SQ8/PQ), without the two items it was
/// made from; the approximate lists drop them too. The breadth starts at the shards' current default
/// and doubles until the sample's recall@k reaches the target or the cap (`maxEfSearch` for HNSW,
/// every list for IVF); the value reached (or the cap) becomes the default. "Reaches" means the one-sided
/// 95 % lower confidence bound of the sample's mean (mean − 1.645 × standard deviation ÷ √queries) is at
/// least the target, not the mean alone, so the noise of a 64-query sample does not stop one doubling short. Flat is exact, and indexes
/// with at most 2 × `sampleQueries` live vectors are left as they are.
///
/// Why filtered searches need nothing more: the IVF scan with an allowed set probes
/// nprobe × live ÷ allowed lists (CFaissShim), and the HNSW beam counts only allowed rows toward
/// ef_search (so it explores about 1 ÷ share-allowed times more rows), so their recall against the
/// exact top k over the matches tracks the unfiltered recall at the same default.
///
/// For quantized IVF (SQ8, PQ) the recall is that of the probes over the codes; the codes' own loss is
/// left to rescoring (`oversample`).
///
/// Thread-safety: a value type; `calibrate` only searches the index (concurrent searches are fine) and
/// then sets the shards' defaults (each under the index's own lock).
public struct RecallCalibration: Sendable, Equatable {
    /// Mean recall@k the default breadth must reach when the configuration names none.
    public static let defaultTarget = 0.95
    /// Queries sampled from the stored items.
    public static let sampleQueries = 64
    /// Neighbours compared per query.
    public static let k = 10
    /// Largest HNSW ef_search calibration chooses (the cost cap; beyond it the target is reported missed).
    public static let maxEfSearch = 4096

    public enum Parameter: String, Sendable {
        case efSearch = "ef_search"
        case nprobe
    }

    /// The recall it aimed at.
    public var target: Double
    /// The knob it set.
    public var parameter: Parameter
    /// The default it set for the knob.
    public var value: Int
    /// The sample's mean recall@k at `value`.
    public var recall: Double
    /// The one-sided 95 % lower confidence bound of that mean.
    public var recallLowerBound: Double
    /// Whether `recallLowerBound` reached `target` (false: `value` is the cap).
    public var reached: Bool
    /// Queries in the sample.
    public var queries: Int
    /// Every value tried, in order, with its recall.
    public var trials: [Trial]

    public struct Trial: Sendable, Equatable {
        public var value: Int
        public var recall: Double
        public var recallLowerBound: Double
    }

    /// The mean of `samples` and its one-sided 95 % lower confidence bound (normal approximation).
    static func meanAndLowerBound(_ samples: [Double]) -> (mean: Double, lowerBound: Double) {
        guard !samples.isEmpty else { return (1, 1) }
        let n = Double(samples.count)
        let mean = samples.reduce(0, +) / n
        guard samples.count > 1 else { return (mean, mean) }
        let variance = samples.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1)
        return (mean, mean - 1.645 * (variance / n).squareRoot())
    }

    /// Measures `index` on a sample of its items and sets the default breadth of every shard.
    ///
    /// - Parameters:
    ///   - target: mean recall@k wanted, in (0, 1].
    ///   - version: the embedding version whose vectors the index holds.
    /// - Returns: what it chose, or nil when there is nothing to calibrate (Flat, an untrained index,
    ///   or at most `sampleQueries` live vectors).
    /// - Throws: `invalid_request` for a target outside (0, 1]; store and index errors.
    /// - Complexity: one exact search of the sample over every live vector, then one search of the
    ///   sample per doubling (at most log2(cap ÷ start) + 1).
    @discardableResult
    public static func calibrate(_ index: IndexGeneration, store: ItemStore, version: String, metric: Metric,
                                 target: Double) throws(SteerError) -> RecallCalibration? {
        guard target > 0 && target <= 1 else { throw SteerError.invalid("recall target must be in (0, 1], got \(target)") }
        let parameter: Parameter
        let cap: Int
        switch index.spec.family {
        case .flat: return nil
        case .hnsw, .hnswSQ8:
            parameter = .efSearch
            cap = maxEfSearch
        case .ivfFlat(let lists), .ivfSQ8(let lists), .ivfPQ(let lists, _, _), .opqIVFPQ(_, _, let lists, _, _):
            parameter = .nprobe
            cap = lists
        }
        guard index.shards.allSatisfy(\.isTrained), index.count > 2 * sampleQueries else { return nil }
        let live = try store.liveInternalIDs().sorted()
        guard live.count > 2 * sampleQueries else { return nil }
        let dimension = index.dimension
        let step = live.count / sampleQueries
        let firsts = (0..<sampleQueries).map { live[$0 * step] }
        let seconds = (0..<sampleQueries).map { live[($0 * step + step / 2 + live.count / 2) % live.count] }
        let firstVectors = try store.vectors(internalIDs: firsts, version: version)
        let secondVectors = try store.vectors(internalIDs: seconds, version: version)
        var queries: [Float] = []
        var sources: [(Int64, Int64)] = []
        for position in 0..<sampleQueries {
            guard let a = firstVectors[position], let b = secondVectors[position], a.count == dimension, b.count == dimension,
                  firsts[position] != seconds[position] else { continue }
            var midpoint = zip(a, b).map { ($0 + $1) / 2 }
            if metric == .cosine {
                guard midpoint.contains(where: { $0 != 0 }) else { continue }
                Vectors.normalizeRows(&midpoint, dimension: dimension)
            }
            queries.append(contentsOf: midpoint)
            sources.append((firsts[position], seconds[position]))
        }
        guard !sources.isEmpty else { return nil }
        let fetch = k + 2
        func withoutSources(_ lists: [[ScoredLabel]]) -> [[Int64]] {
            zip(lists, sources).map { list, pair in
                Array(list.lazy.map(\.label).filter { $0 != pair.0 && $0 != pair.1 }.prefix(k))
            }
        }
        let exact: SearchParameters
        switch parameter {
        case .efSearch:
            exact = SearchParameters(allowed: AllowedLabels(sortedLabels: live), exactFilterThreshold: Int.max)
        case .nprobe:
            exact = SearchParameters(nprobe: cap)
        }
        let truth = withoutSources(try index.search(queries, k: fetch, parameters: exact))
        let start = index.shards[0]
        var value = max(1, min(cap, parameter == .efSearch ? start.defaultEfSearch : start.defaultNprobe))
        var trials: [Trial] = []
        while true {
            let parameters = parameter == .efSearch ? SearchParameters(efSearch: value) : SearchParameters(nprobe: value)
            let found = withoutSources(try index.search(queries, k: fetch, parameters: parameters))
            let (recall, lowerBound) = meanAndLowerBound(ExactSearch.recallPerQuery(found: found, truth: truth))
            trials.append(Trial(value: value, recall: recall, recallLowerBound: lowerBound))
            if lowerBound >= target || value >= cap { break }
            value = min(cap, value * 2)
        }
        let last = trials[trials.count - 1]
        for shard in index.shards {
            switch parameter {
            case .efSearch: shard.defaultEfSearch = last.value
            case .nprobe: shard.defaultNprobe = last.value
            }
        }
        return RecallCalibration(target: target, parameter: parameter, value: last.value, recall: last.recall,
                                 recallLowerBound: last.recallLowerBound, reached: last.recallLowerBound >= target,
                                 queries: sources.count, trials: trials)
    }
}

/// When calibration runs: when a generation is loaded or swapped in, after a write, and before a
/// search, it is due for a generation's index that holds more than 2 × `RecallCalibration.sampleQueries`
/// vectors and was not calibrated yet, or whose live vectors have doubled since its last calibration.
/// A due calibration runs on a background thread (a global dispatch queue, one OpenMP thread), never on
/// the caller's: the caller (a search worker, a write, a swap) returns at once, and searches meanwhile
/// use the index's defaults as they are until the run sets the new ones. The defaults only grow (each
/// run starts at the current one). A failed run is reported by `lastError` and retried when the index
/// has doubled. `status` says whether one is pending.
///
/// Thread-safe: its state is `Locked`; at most one calibration runs at a time. `waitUntilIdle` blocks
/// until none runs (the engine's `close` waits, so no run outlives the store it reads).
public final class RecallCalibrator: Sendable {
    /// The recall aimed at; nil turns calibration off.
    public let target: Double?

    /// Where calibration stands, for `stats` (`recall_calibration_state`).
    public enum Status: String, Sendable {
        /// `--recall-target off`.
        case off
        /// Nothing calibrated yet: no index was due (Flat, too few vectors, untrained).
        case none
        /// A run is in progress; searches use the defaults as they are.
        case pending
        /// The last run finished and set the defaults (`last`).
        case done
        /// The last run failed (`lastError`); retried when the index has doubled.
        case failed
    }

    private struct State {
        /// The index last calibrated (its identity: a rebuilt index under the same generation name counts as new).
        var index: ObjectIdentifier?
        /// Live vectors when the last run started.
        var items = 0
        var running = false
        var last: RecallCalibration?
        var lastError: String?
        var runs = 0
    }

    private let state = Locked(State())
    /// Entered when a run is dispatched, left when it ends.
    private let inFlight = DispatchGroup()
    /// Runs on the calibration thread before each calibration (tests hold a run back with it).
    private let beforeRun: (@Sendable () -> Void)?

    /// - Parameter beforeRun: called on the calibration thread before each run (for tests).
    public init(target: Double?, beforeRun: (@Sendable () -> Void)? = nil) {
        self.target = target
        self.beforeRun = beforeRun
    }

    /// Where calibration stands (see `Status`).
    public var status: Status {
        guard target != nil else { return .off }
        return state.withLock { value in
            if value.running { return .pending }
            if value.lastError != nil { return .failed }
            return value.last == nil ? .none : .done
        }
    }

    /// Blocks until no calibration runs.
    public func waitUntilIdle() { inFlight.wait() }

    /// What the last run chose, nil when none has (or it found nothing to calibrate).
    public var last: RecallCalibration? { state.withLock { $0.last } }
    /// The last run's error message, nil when it succeeded.
    public var lastError: String? { state.withLock { $0.lastError } }
    /// Runs so far.
    public var runs: Int { state.withLock { $0.runs } }

    /// Starts calibrating `generation` on the background thread when it is due (see the type); returns
    /// at once either way.
    func calibrateIfDue(_ generation: Generation, store: ItemStore) {
        guard let target else { return }
        let items = generation.index.count
        let due = state.withLock { (value: inout State) -> Bool in
            guard !value.running, items > 2 * RecallCalibration.sampleQueries else { return false }
            let identity = ObjectIdentifier(generation.index)
            guard value.index != identity || items >= 2 * value.items else { return false }
            value.running = true
            if value.index != identity { value.last = nil }
            value.index = identity
            value.items = items
            return true
        }
        guard due else { return }
        inFlight.enter()
        DispatchQueue.global(qos: .utility).async { [self] in
            defer { inFlight.leave() }
            // The sample's searches stay on this thread: calibration must not take the cores of the
            // search workers (faiss's IVF search of 64 queries would use every OpenMP thread).
            FaissInfo.setOpenMPThreadsForCurrentThread(1)
            beforeRun?()
            run(generation, store: store, target: target)
        }
    }

    private func run(_ generation: Generation, store: ItemStore, target: Double) {
        let outcome = Result { () throws(SteerError) in
            try RecallCalibration.calibrate(generation.index, store: store, version: generation.embeddingVersion,
                                            metric: generation.metric, target: target)
        }
        state.withLock { value in
            value.running = false
            value.runs += 1
            switch outcome {
            case .success(let result):
                if let result { value.last = result }
                value.lastError = nil
            case .failure(let error):
                value.lastError = error.message
            }
        }
    }
}
