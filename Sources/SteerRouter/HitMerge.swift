import SteerCore
import SteerProtocol

/// One hit of a shard's answer, kept as the shard wrote it (title, tags) plus what the merge needs.
public struct ShardHit: Sendable, Equatable {
    public var id: ItemID
    public var score: Float
    /// The hit object as the shard sent it.
    public var object: JSONValue

    public init(id: ItemID, score: Float, object: JSONValue) {
        self.id = id
        self.score = score
        self.object = object
    }

    /// Parses a shard's `hits` array.
    ///
    /// - Throws: `.internal` naming the shard when the array or a hit is malformed.
    public static func list(_ value: JSONValue?, shard: Int) throws(SteerError) -> [ShardHit] {
        guard case .array(let elements)? = value else {
            if case .floats(let values)? = value, values.isEmpty { return [] }
            throw SteerError.internalError("shard \(shard) answered without a hits array")
        }
        var hits: [ShardHit] = []
        hits.reserveCapacity(elements.count)
        for element in elements {
            guard case .object(let object) = element else { throw SteerError.internalError("shard \(shard) answered a hit that is not an object") }
            let id: ItemID
            switch object["id"] {
            case .int(let number)?: id = .int(number)
            case .string(let text)?: id = .string(text)
            default: throw SteerError.internalError("shard \(shard) answered a hit without a valid id")
            }
            let score: Float
            switch object["score"] {
            case .double(let number)?: score = Float(number)
            case .int(let number)?: score = Float(number)
            default: throw SteerError.internalError("shard \(shard) answered a hit without a score")
            }
            hits.append(ShardHit(id: id, score: score, object: element))
        }
        return hits
    }
}

/// Merges shard answers into one top-k list.
public enum HitMerge {
    /// The order of hits with equal scores across shards: integer ids before string ids, integers by
    /// value, strings by their UTF-8 bytes. (A single server orders equal scores by internal id, which the
    /// router cannot see; only ties between shards can therefore differ.)
    public static func idPrecedes(_ a: ItemID, _ b: ItemID) -> Bool {
        switch (a, b) {
        case (.int(let x), .int(let y)): return x < y
        case (.int, .string): return true
        case (.string, .int): return false
        case (.string(let x), .string(let y)): return x.utf8.lexicographicallyPrecedes(y.utf8)
        }
    }

    /// The best `k` of several shards' lists: higher score first, equal scores by `idPrecedes`; hits whose
    /// id is in `excluded` are dropped first.
    ///
    /// - Complexity: O(n log n) for n hits in all lists.
    public static func top(_ lists: [[ShardHit]], k: Int, excluding excluded: Set<ItemID> = []) -> [ShardHit] {
        var all: [ShardHit] = []
        all.reserveCapacity(lists.reduce(0) { $0 + $1.count })
        for list in lists {
            for hit in list where excluded.isEmpty || !excluded.contains(hit.id) { all.append(hit) }
        }
        all.sort { a, b in
            if a.score != b.score { return a.score > b.score }
            return idPrecedes(a.id, b.id)
        }
        return Array(all.prefix(k))
    }
}
