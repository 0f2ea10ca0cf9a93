import Foundation
import SteerCore
import SteerIndex
import SteerStore

/// An immutable description of what the engine serves: one embedding version, the index built from it
/// and the query encoder that produces vectors in its space. The engine holds the current generation
/// behind a lock and replaces it whole (`RetrievalEngine.swap`), so a query never mixes generations.
///
/// The index is an `IndexGeneration`: either the single index the engine builds or loads from `DIR/index`
/// at start-up (wrapped with `IndexGeneration.unsaved`, one shard) or a sharded generation directory
/// loaded by `swap`. It takes live upserts and deletes (routed to shards by `Sharding`); everything else
/// is fixed for the generation's lifetime.
public struct Generation: Sendable {
    /// A short name, for example `g1` or a manifest's generation id, reported by `stats`, named by every
    /// search, recommend and encode response, and used by `swap`.
    public let id: String
    /// The store's embedding version the index holds.
    public let embeddingVersion: String
    public let dimension: Int
    public let metric: Metric
    public let index: IndexGeneration
    /// nil when this generation cannot serve `recommend`/`encode`.
    public let encoder: (any QueryEncoder)?
    /// The store sequence the index was built (or loaded) at, before live writes.
    public let builtAtSequence: UInt64

    /// The generation directory it was loaded from; nil for the index the engine built at start-up.
    public var directory: String? { index.directory.isEmpty ? nil : index.directory }

    public init(id: String, embeddingVersion: String, dimension: Int, metric: Metric, index: IndexGeneration,
                encoder: (any QueryEncoder)?, builtAtSequence: UInt64) {
        self.id = id
        self.embeddingVersion = embeddingVersion
        self.dimension = dimension
        self.metric = metric
        self.index = index
        self.encoder = encoder
        self.builtAtSequence = builtAtSequence
    }
}

/// What `RetrievalEngine.swap` did.
public struct SwapResult: Sendable, Equatable {
    /// The generation serving now.
    public var generation: String
    /// The generation it replaced.
    public var previous: String
    /// Store writes replayed into the new generation after its manifest's sequence (added + removed).
    public var replayed: Int
    /// The generation directory now served.
    public var directory: String
}

/// What `recommend` returns.
public struct Recommendation: Sendable {
    public var hits: [Hit]
    public var clauses: [QueryClause]
    /// History ids that were not known and were skipped.
    public var unknownHistory: [ItemID]
    /// The plan that ran.
    public var plan: SearchPlan = .unfiltered
}

/// Engine state reported by `stats`.
public struct EngineStats: Sendable {
    public var generation: String
    public var embeddingVersion: String
    public var dimension: Int
    public var metric: Metric
    public var indexSpec: String
    /// Live items in the store.
    public var items: Int
    /// Live vectors in the index.
    public var indexed: Int
    public var tombstones: Int
    public var storeSequence: UInt64
    /// RocksDB memtable bytes (`ItemStore.memtableBytes`).
    public var storeMemtableBytes: Int = 0
    /// The store's record cache (search hydration): bound, estimated bytes, entries, hits, misses.
    public var recordCache = ItemStore.RecordCacheStatistics(capacityBytes: 0, bytes: 0, entries: 0, hits: 0, misses: 0)
    public var builtAtSequence: UInt64
    public var encoder: String?
    /// The encoder's own counters (DPR: the clause-embedding cache's hits, misses, evictions, entries).
    public var encoderStatistics: [(name: String, value: Int)]
    public var faissVersion: String
    public var openMPMaxThreads: Int
    /// Shards of the serving generation (1 for the engine's own index).
    public var shards: Int = 1
    /// The generation directory serving, nil for the engine's own index.
    public var generationDirectory: String? = nil
    /// The generation `prepare` staged (`GenerationStaging.swift`), nil when none is.
    public var stagedGeneration: String? = nil
    /// The index's memory by its layout (`IndexSpec.memoryEstimate`), for the vectors it holds: an
    /// estimate, not a measurement.
    public var indexBytesEstimate: Double = 0
    public var indexBytesPerVectorEstimate: Double = 0
    /// Bytes of the store's in-memory payload columns (`ItemStore.payloadColumnBytes`): 8 per internal
    /// id per declared attribute plus multi-valued items and keyword values, an estimate.
    public var payloadColumnBytes: Int = 0
    /// Bytes of the store's in-memory tag postings and live-id set (`ItemStore.tagPostingBytes`): at
    /// most 8 per posting plus about 112 and the tag's bytes per distinct tag, and 1 bit per internal id;
    /// an estimate.
    public var tagPostingBytes: Int = 0
    /// Searches and recommends answered by each plan (`FilterPlanner.planCounts`).
    public var plans: [(kind: SearchPlan.Kind, count: Int)] = []
    /// What the serving generation's recall calibration chose (`RecallCalibration`), nil when none ran.
    public var recallCalibration: RecallCalibration? = nil
    /// Whether a recall calibration is pending, done, failed or off (`RecallCalibrator.status`).
    public var recallCalibrationState: RecallCalibrator.Status = .off
}

/// What `RetrievalEngine.apply` did with a write-log message.
public enum ApplyOutcome: Sendable {
    /// Written; `count` is what `upsert`/`delete` would answer (items written, or ids that existed).
    case applied(count: Int)
    /// Events recorded in users' histories (an `events` message).
    case recorded(EventRecordResult)
    /// Refused alike on every replica (for example a vector of the wrong dimension); recorded as applied.
    case rejected(SteerError)
    /// The sequence was applied before (a redelivery); nothing changed.
    case alreadyApplied
}
