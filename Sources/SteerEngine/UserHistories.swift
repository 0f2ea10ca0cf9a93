import SteerCore
import SteerStore

/// What `RetrievalEngine.recordEvents` did.
public struct EventRecordResult: Sendable, Equatable {
    /// Events stored (after the per-user cap).
    public var recorded: Int
    /// Events the per-user cap removed or never wrote (`UserHistoryStore`, "Cap").
    public var dropped: Int
    /// Items named by the events that are not in the catalog (recorded all the same), each once, in
    /// order of first appearance.
    public var unknownItems: [ItemID]

    public init(recorded: Int, dropped: Int, unknownItems: [ItemID]) {
        self.recorded = recorded
        self.dropped = dropped
        self.unknownItems = unknownItems
    }
}

/// User histories through the engine: events, reading and deleting a user's history, and the stored
/// history of `recommend`/`encode` requests that name a `user` (docs/protocol.md, "User histories").
/// Histories live in the engine's store (`ItemStore.histories`) and do not depend on the generation.
extension RetrievalEngine {
    /// The users' histories in the engine's store.
    public var histories: UserHistoryStore { store.histories }

    /// Records events in their users' histories in one atomic batch (see `UserHistoryStore.record`).
    /// Items need not exist: unknown ones are recorded and reported.
    ///
    /// - Parameter streamSequence: the write log's sequence of these events, stored in the same batch
    ///   (`apply(batch:)`); nil outside a write log.
    /// - Throws: what `UserHistoryStore.record` throws; `.unavailable` once closed.
    public func recordEvents(_ events: [UserEvent], streamSequence: UInt64? = nil) throws(SteerError) -> EventRecordResult {
        try requireOpen()
        var seen = Set<ItemID>()
        let items = events.map(\.item).filter { seen.insert($0).inserted }
        // Validated by `record` below too; checked first so that a bad id is refused before the lookup.
        for (index, event) in events.enumerated() {
            do {
                try event.item.validate()
            } catch {
                throw SteerError(error.code, "events[\(index)].item: \(error.message)")
            }
        }
        let known = try store.internalIDs(of: items)
        let result = try store.histories.record(events, streamSequence: streamSequence)
        return EventRecordResult(recorded: result.recorded, dropped: result.dropped,
                                 unknownItems: zip(items, known).compactMap { $1 == nil ? $0 : nil })
    }

    /// A user's stored events, oldest first (the most recent `limit`, or all).
    public func userEvents(_ user: UserID, limit: Int? = nil) throws(SteerError) -> [StoredEvent] {
        try requireOpen()
        return try store.histories.events(of: user, limit: limit)
    }

    /// Deletes a user's history for good (`UserHistoryStore.deleteUser`).
    ///
    /// - Returns: how many events were deleted.
    public func deleteUser(_ user: UserID) throws(SteerError) -> Int {
        try requireOpen()
        return try store.histories.deleteUser(user)
    }

    /// `request` with its `user`'s stored history resolved: the most recent `maxHistory` stored items
    /// put before `history`, every stored item added to `seen` (left out of the results when
    /// `excludeHistory`), and `user` cleared. A request without `user` is returned unchanged; an unknown
    /// user has an empty history.
    ///
    /// - Throws: `.invalidRequest` for a bad user id or `maxHistory`; store errors.
    func withStoredHistory(_ request: RecommendRequest) throws(SteerError) -> RecommendRequest {
        guard let user = request.user else { return request }
        guard request.maxHistory >= 1 else { throw SteerError.invalid("max_history must be at least 1, got \(request.maxHistory)") }
        var resolved = request
        let stored = try store.histories.recentItems(of: user, limit: store.options.maxEventsPerUser)
        resolved.history = Array(stored.suffix(request.maxHistory)) + request.history
        resolved.seen = stored
        resolved.user = nil
        return resolved
    }
}
