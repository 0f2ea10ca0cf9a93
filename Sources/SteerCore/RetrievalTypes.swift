// The values requests and answers carry, shared by the engine (which takes and returns them) and the
// wire codec (SteerProtocol, which decodes and writes them): items, tag filters, search knobs, hits,
// recommend requests, prompt clauses and write-log operations. Plain values, no behaviour beyond
// validation-free construction; every bound on them is enforced where they are decoded.

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

    public init(id: ItemID, title: String?, tags: [String], attributesJSON: String?, vector: [Float]?) {
        self.id = id
        self.title = title
        self.tags = tags
        self.attributesJSON = attributesJSON
        self.vector = vector
    }
}

/// Filter of `search` and `recommend`: an item passes when it carries at least one of `tagsAny`
/// (ignored when empty), none of `tagsNone`, one tag of every group of `tagGroups`, and meets
/// `expression` when there is one (docs/protocol.md, "Filter expressions").
public struct TagFilter: Sendable, Hashable {
    public var tagsAny: [String]
    public var tagsNone: [String]
    /// More required groups: an item must carry one tag of every group (and one of `tagsAny` when that is
    /// not empty). The router sends a recommend's clause constraints to the shards this way.
    public var tagGroups: [[String]]
    /// A filter expression over tags and attributes, combined with the tag lists by "and".
    public var expression: FilterExpression?

    public init(tagsAny: [String] = [], tagsNone: [String] = [], tagGroups: [[String]] = [], expression: FilterExpression? = nil) {
        self.tagsAny = tagsAny
        self.tagsNone = tagsNone
        self.tagGroups = tagGroups
        self.expression = expression
    }

    public var isEmpty: Bool { tagsAny.isEmpty && tagsNone.isEmpty && tagGroups.isEmpty && expression == nil }
}

/// Search knobs.
public struct SearchOptions: Sendable {
    /// Results per query, 1 to `VectorIndex.maxK`.
    public var k: Int
    public var nprobe: Int?
    public var efSearch: Int?
    public var filter: TagFilter
    /// Return the plan that ran (the engine's `SearchPlan`) with the hits.
    public var explain: Bool
    /// Quantized indexes: fetch k × oversample candidates and rescore them exactly; nil = the engine's
    /// default (`FilterPlanner.Settings.defaultOversample`).
    public var oversample: Int?

    public init(k: Int, nprobe: Int? = nil, efSearch: Int? = nil, filter: TagFilter = TagFilter(), explain: Bool = false) {
        self.k = k
        self.nprobe = nprobe
        self.efSearch = efSearch
        self.filter = filter
        self.explain = explain
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

/// How a prompt's clauses act on recommendations (docs/model.md, docs/checkpoint-format.md §3); the DPR
/// model's offline `recommend` and the engine take the same value.
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
    /// Return the plan that ran (`Recommendation.plan`).
    public var explain: Bool = false
    /// As `SearchOptions.oversample`.
    public var oversample: Int?

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

/// One clause of a prompt, as the encoder understood it ("more comedies, but no horror" →
/// (+ "comedies", tags ["Comedy"]), (− "horror", tags ["Horror"])).
public struct QueryClause: Sendable, Hashable {
    public enum Polarity: String, Sendable, Hashable {
        case positive
        case negative
    }

    /// The clause's text as it appeared in the prompt.
    public var text: String
    public var polarity: Polarity
    /// Catalog tags the clause maps to (empty when it maps to none); `hybrid` and `hard` constraints
    /// filter on them.
    public var tags: [String]

    public init(text: String, polarity: Polarity, tags: [String] = []) {
        self.text = text
        self.polarity = polarity
        self.tags = tags
    }
}

/// One write of a shard's write log (docs/scaling.md, "Following a stream"), as `RetrievalEngine.apply`
/// takes it.
public enum WriteOperation: Sendable {
    case upsert([ItemInput])
    case delete([ItemID])
    /// Events for users' histories (`event`), timestamps given.
    case events([UserEvent])
    /// A user's whole history deleted (`delete_user`).
    case deleteUser(UserID)

    /// Whether the write changes user histories rather than items.
    public var isHistory: Bool {
        switch self {
        case .upsert, .delete: return false
        case .events, .deleteUser: return true
        }
    }

    /// The items, ids or events the write names (1 for `deleteUser`).
    public var count: Int {
        switch self {
        case .upsert(let items): return items.count
        case .delete(let ids): return ids.count
        case .events(let events): return events.count
        case .deleteUser: return 1
        }
    }
}
