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

/// One item to insert or replace through the engine.
public struct ItemInput: Sendable {
    public var id: ItemID
    public var vector: [Float]
    public var title: String?
    public var tags: [String]
    /// A JSON object as text, stored as given.
    public var attributesJSON: String?

    public init(id: ItemID, vector: [Float], title: String? = nil, tags: [String] = [], attributesJSON: String? = nil) {
        self.id = id
        self.vector = vector
        self.title = title
        self.tags = tags
        self.attributesJSON = attributesJSON
    }
}

/// A stored item as `get` returns it.
public struct ItemOutput: Sendable {
    public var id: ItemID
    public var title: String?
    public var tags: [String]
    public var attributesJSON: String?
    /// The item's vector of the current generation's embedding version (nil when it has none).
    public var vector: [Float]?
}

/// Tag filter of `search` and `recommend`: an item passes when it carries at least one of `tagsAny`
/// (ignored when empty) and none of `tagsNone`.
public struct TagFilter: Sendable, Hashable {
    public var tagsAny: [String]
    public var tagsNone: [String]
    /// More required groups: an item must carry one tag of every group (and one of `tagsAny` when that is
    /// not empty). The router sends a recommend's clause constraints to the shards this way.
    public var tagGroups: [[String]]

    public init(tagsAny: [String] = [], tagsNone: [String] = [], tagGroups: [[String]] = []) {
        self.tagsAny = tagsAny
        self.tagsNone = tagsNone
        self.tagGroups = tagGroups
    }

    public var isEmpty: Bool { tagsAny.isEmpty && tagsNone.isEmpty && tagGroups.isEmpty }
}

/// Search knobs.
public struct SearchOptions: Sendable {
    /// Results per query, 1 to `VectorIndex.maxK`.
    public var k: Int
    public var nprobe: Int?
    public var efSearch: Int?
    public var filter: TagFilter

    public init(k: Int, nprobe: Int? = nil, efSearch: Int? = nil, filter: TagFilter = TagFilter()) {
        self.k = k
        self.nprobe = nprobe
        self.efSearch = efSearch
        self.filter = filter
    }
}

/// One search result, hydrated from the store.
public struct Hit: Sendable, Equatable {
    public var id: ItemID
    public var score: Float
    public var title: String?
    public var tags: [String]

    public init(id: ItemID, score: Float, title: String?, tags: [String]) {
        self.id = id
        self.score = score
        self.title = title
        self.tags = tags
    }
}

/// How a prompt's clauses act on recommendations (docs/model.md).
public enum ConstraintMode: String, Sendable, Hashable, CaseIterable {
    /// Steering only.
    case soft
    /// Steering plus a hard tag filter per clause with tags: a positive clause requires one of its tags,
    /// a negative clause excludes its tags.
    case hybrid
    /// No steering (the base vector), the filters of `hybrid` only.
    case hard
}

/// A `recommend` or `encode` request.
public struct RecommendRequest: Sendable {
    /// Item ids, oldest first. With `user`, they follow the stored history (the most recent items).
    public var history: [ItemID]
    /// A user whose stored history (`UserHistoryStore`) is read: its most recent `maxHistory` items come
    /// before `history`, and with `excludeHistory` all of its stored items are left out of the results.
    public var user: UserID?
    /// Most stored events read for `user`.
    public var maxHistory: Int = RecommendRequest.defaultMaxHistory
    /// More items to leave out with `excludeHistory`, beside `history` (filled from the stored history).
    public var seen: [ItemID] = []

    /// Example items the results should resemble (`recommend` only; see `ExampleStrategy`).
    public var positive: [ItemID] = []
    /// Example items the results should not resemble.
    public var negative: [ItemID] = []
    /// How `positive` and `negative` make the ranking.
    public var strategy: ExampleStrategy = .averageVector

    /// `maxHistory` when a request names none.
    public static let defaultMaxHistory = 50
    public var prompt: String?
    public var k: Int
    /// Leave the history's items out of the results (default true).
    public var excludeHistory: Bool
    public var constraints: ConstraintMode
    public var filter: TagFilter
    public var nprobe: Int?
    public var efSearch: Int?

    public init(history: [ItemID], prompt: String? = nil, k: Int = 10, excludeHistory: Bool = true,
                constraints: ConstraintMode = .soft, filter: TagFilter = TagFilter(), nprobe: Int? = nil, efSearch: Int? = nil) {
        self.history = history
        self.prompt = prompt
        self.k = k
        self.excludeHistory = excludeHistory
        self.constraints = constraints
        self.filter = filter
        self.nprobe = nprobe
        self.efSearch = efSearch
    }
}

/// How `recommend` ranks with example items (`positive`/`negative`), with the semantics of Qdrant's
/// Recommend API strategies. The query the encoder makes from a history, a user or a prompt, when the
/// request has one, counts as one more positive example.
public enum ExampleStrategy: String, Sendable, CaseIterable {
    /// One query vector, `2·mean(positives) − mean(negatives)` (`mean(positives)` without negatives),
    /// searched like any query.
    case averageVector = "average_vector"
    /// Each candidate is scored against every example: with `p` its best score against a positive and
    /// `n` against a negative, its score is `p` when `p > n`, else `−n²`.
    case bestScore = "best_score"
}

/// What `recommend` returns.
public struct Recommendation: Sendable {
    public var hits: [Hit]
    public var clauses: [QueryClause]
    /// History ids that were not known and were skipped.
    public var unknownHistory: [ItemID]
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
}

/// One write of a shard's write log (docs/scaling.md, "Following a stream"), as `RetrievalEngine.apply`
/// takes it.
public enum WriteOperation: Sendable {
    case upsert([ItemInput])
    case delete([ItemID])
}

/// What `RetrievalEngine.apply` did with a write-log message.
public enum ApplyOutcome: Sendable {
    /// Written; `count` is what `upsert`/`delete` would answer (items written, or ids that existed).
    case applied(count: Int)
    /// Refused alike on every replica (for example a vector of the wrong dimension); recorded as applied.
    case rejected(SteerError)
    /// The sequence was applied before (a redelivery); nothing changed.
    case alreadyApplied
}
