import SteerCore
import SteerEngine
import SteerProtocol

/// User histories through the router (docs/scaling.md, "User histories"): a user's events live on one
/// shard, `Sharding.shard(of: user)` (the user id hashed like an item id), on every replica of it.
/// `event` and `delete_user` are written to every live replica of the user's shard like item writes;
/// `get_user` reads one replica; `recommend`/`encode` with `user` read the stored history there first,
/// then fan out as with an explicit history.
extension Router {
    /// Runs `event`, `get_user` or `delete_user` on the user's shard and writes the answer's fields.
    ///
    /// - Throws: a shard's refusal; `.unavailable` when no replica of the shard applied a write or
    ///   answered a read (as for item writes and `get`).
    func history(_ operation: Request.Operation, token: String?, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        switch operation {
        case .event(let events):
            // Timestamps were filled in when the router decoded the line, so every replica stores the same ones.
            let recorded = try await write(op: "event", countField: "recorded", token: token, deadline: deadline, keys: events.map(\.user), &writer) { indices in
                .event(indices.map { events[$0] })
            }
            writer.raw(",\"recorded\":")
            writer.int(recorded)
        case .getUser(let user, let limit):
            let (events, collection) = try await storedEventsNamingCollection(user, limit: limit, token: token, deadline: deadline)
            writer.raw(",\"collection\":")
            writer.string(collection ?? deadline.collection ?? CollectionName.defaultName)
            writer.raw(",\"user\":")
            writer.itemID(user)
            writer.raw(",\"events\":")
            writer.value(.array(events))
        case .deleteUser(let user):
            let deleted = try await write(op: "delete_user", countField: "deleted", token: token, deadline: deadline, keys: [user], &writer) { _ in
                .deleteUser(user)
            }
            writer.raw(",\"deleted\":")
            writer.int(deleted)
        default:
            throw SteerError.internalError("\(operation.name) is not a user-history op")
        }
    }

    /// The `events` array of `get_user` from one replica of the user's shard.
    private func storedEvents(_ user: UserID, limit: Int?, token: String?, deadline: Deadline) async throws -> [JSONValue] {
        try await storedEventsNamingCollection(user, limit: limit, token: token, deadline: deadline).events
    }

    /// The `events` array of `get_user` and the collection the shard read it from (the request's
    /// `collection`, an alias resolved).
    private func storedEventsNamingCollection(_ user: UserID, limit: Int?, token: String?, deadline: Deadline) async throws -> (events: [JSONValue], collection: String?) {
        let line = RequestEncoder.encode(Request(operation: .getUser(user, limit: limit), collection: deadline.collection))
        let shard = sharding.shard(of: user)
        let (answers, _) = try await readShards([shard: line], token: token, deadline: deadline, allowPartial: false)
        guard let answer = answers[shard], case .array(let events)? = answer["events"] else {
            throw SteerError(.unavailable, "get_user: shard \(shard) answered without 'events'")
        }
        return (events, Self.collectionName([answer]))
    }

    /// `request` with its `user`'s stored history read from the user's shard, as a server resolves it
    /// (`RetrievalEngine.withStoredHistory`): the most recent `maxHistory` stored items before `history`,
    /// all of them in `seen`. Unchanged without `user`.
    func withStoredHistory(_ request: RecommendRequest, token: String?, deadline: Deadline) async throws -> RecommendRequest {
        guard let user = request.user else { return request }
        let events = try await storedEvents(user, limit: nil, token: token, deadline: deadline)
        var stored: [ItemID] = []
        stored.reserveCapacity(events.count)
        for (index, event) in events.enumerated() {
            guard case .object(let object) = event, let value = object["item"] else {
                throw SteerError(.unavailable, "get_user: events[\(index)] of the shard's answer has no item")
            }
            switch value {
            case .int(let number): stored.append(.int(number))
            case .string(let text): stored.append(.string(text))
            default: throw SteerError(.unavailable, "get_user: events[\(index)].item of the shard's answer is not an id")
            }
        }
        var resolved = request
        resolved.history = Array(stored.suffix(request.maxHistory)) + request.history
        resolved.seen = stored
        resolved.user = nil
        return resolved
    }
}
