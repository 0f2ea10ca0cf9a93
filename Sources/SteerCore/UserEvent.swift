// Values of user histories (stored by `UserHistoryStore` in SteerStore; carried by the `event`,
// `get_user` and `delete_user` ops of docs/protocol.md), of recommending from examples and of
// `ingest_vectors` chunks: shared by the engine and the wire codec, like RetrievalTypes.swift.

/// A user's identifier in `UserHistoryStore`: a string or an integer, with `ItemID`'s rules (non-empty,
/// at most `ItemID.maxStringBytes` UTF-8 bytes in NFC) and byte encoding. `.int(7)` and `.string("7")`
/// are different users.
public typealias UserID = ItemID

/// One event to record in a user's history.
public struct UserEvent: Sendable, Equatable {
    public var user: UserID
    public var item: ItemID
    /// What happened (`view`, `click`, `purchase`, …): 1 to `UserEvent.maxKindBytes` UTF-8 bytes.
    public var kind: String
    /// The event's time in milliseconds (by convention since the Unix epoch); histories are ordered by it.
    public var timestampMillis: Int64

    /// Longest event kind, in UTF-8 bytes.
    public static let maxKindBytes = 64
    /// Largest per-user cap a store accepts (`ItemStore.Options.maxEventsPerUser`).
    public static let maxEventsPerUserLimit = 100_000
    /// The kind of an event that names none.
    public static let defaultKind = "view"

    public init(user: UserID, item: ItemID, kind: String, timestampMillis: Int64) {
        self.user = user
        self.item = item
        self.kind = kind
        self.timestampMillis = timestampMillis
    }
}

/// One event of a stored history.
public struct StoredEvent: Sendable, Equatable {
    public var item: ItemID
    public var kind: String
    public var timestampMillis: Int64
    /// The user's arrival number of the event (0, 1, 2, … per user, never reused while the history
    /// exists; a deleted history starts again at 0 with a new `HistoryPosition.created`): orders events
    /// that carry the same timestamp.
    public var arrival: UInt64

    public init(item: ItemID, kind: String, timestampMillis: Int64, arrival: UInt64) {
        self.item = item
        self.kind = kind
        self.timestampMillis = timestampMillis
        self.arrival = arrival
    }
}

/// Where a user's stored history stands: which history (`created`, the store sequence after the write
/// that started it; a deleted and restarted history has a larger one) and the arrival number its next
/// event gets. An export records it per user; a later `steer export --since` writes only the events of
/// the same history with `arrival >= nextArrival`, and all events of a history that is new or restarted.
public struct HistoryPosition: Sendable, Hashable {
    public var created: UInt64
    public var nextArrival: UInt64

    public init(created: UInt64, nextArrival: UInt64) {
        self.created = created
        self.nextArrival = nextArrival
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

    /// Candidates each positive's index search returns for `best_score` rescoring, for `k` hits: `4k + 32`,
    /// at most 10 000 (`VectorIndex.maxK`). The decoder charges the request this many units per positive.
    public static func bestScoreCandidates(k: Int) -> Int { min(10_000, 4 * k + 32) }
}

/// One item of an `ingest_vectors` chunk: its vector of the version being ingested, and optionally a
/// new title and tags (kept as stored when nil).
public struct VersionItem: Sendable {
    public var id: ItemID
    public var vector: [Float]
    public var title: String?
    public var tags: [String]?

    /// Longest embedding-version name (and `checkpoint_hash` label), in UTF-8 bytes: the item store's
    /// `ItemStore.maxVersionNameBytes`, which the store enforces again.
    public static let maxVersionNameBytes = 256
    /// Largest dimension of a version: the item store's `ItemStore.maxDimension`.
    public static let maxDimension = 65536

    public init(id: ItemID, vector: [Float], title: String? = nil, tags: [String]? = nil) {
        self.id = id
        self.vector = vector
        self.title = title
        self.tags = tags
    }
}
