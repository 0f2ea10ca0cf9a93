/// Types of user histories (stored by `UserHistoryStore` in SteerStore; carried by the `event`,
/// `get_user` and `delete_user` ops of docs/protocol.md).

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
    /// The user's arrival number of the event (0, 1, 2, … per user, never reused): orders events that
    /// carry the same timestamp.
    public var arrival: UInt64

    public init(item: ItemID, kind: String, timestampMillis: Int64, arrival: UInt64) {
        self.item = item
        self.kind = kind
        self.timestampMillis = timestampMillis
        self.arrival = arrival
    }
}
