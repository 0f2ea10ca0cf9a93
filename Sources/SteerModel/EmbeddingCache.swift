#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SteerCore

/// Counters of the clause-embedding cache.
public struct CacheStats: Sendable, Equatable {
    public var hits: Int
    public var misses: Int
    public var evictions: Int
    /// Entries held now.
    public var count: Int
    public var capacity: Int
}

/// A bounded least-recently-used map from clause text to its MiniLM embedding, safe to share between
/// threads (one mutex; lookups and inserts are O(1)).
public final class EmbeddingCache: Sendable {
    private struct Node {
        var key: String
        var value: [Float]
        var previous: Int
        var next: Int
    }

    /// The LRU list lives in `nodes` (indices as links, −1 = none); `head` is the most recent.
    private struct State {
        var index: [String: Int] = [:]
        var nodes: [Node] = []
        var head = -1
        var tail = -1
        var stats: CacheStats
    }

    private let state: Locked<State>
    public let capacity: Int

    /// - Parameter capacity: the most entries kept; 0 disables caching (every lookup misses).
    public init(capacity: Int) {
        self.capacity = max(0, capacity)
        state = Locked(State(stats: CacheStats(hits: 0, misses: 0, evictions: 0, count: 0, capacity: max(0, capacity))))
    }

    public var stats: CacheStats { state.withLock { $0.stats } }

    /// The cached embedding of `key`, counting a hit or a miss; a hit becomes the most recent entry.
    public func get(_ key: String) -> [Float]? {
        state.withLock { s in
            guard let i = s.index[key] else {
                s.stats.misses += 1
                return nil
            }
            s.stats.hits += 1
            Self.unlink(i, &s)
            Self.pushFront(i, &s)
            return s.nodes[i].value
        }
    }

    /// Stores `value` under `key` as the most recent entry, evicting the least recent when full.
    public func put(_ key: String, _ value: [Float]) {
        guard capacity > 0 else { return }
        state.withLock { s in
            if let i = s.index[key] {
                s.nodes[i].value = value
                Self.unlink(i, &s)
                Self.pushFront(i, &s)
                return
            }
            let slot: Int
            if s.nodes.count < capacity {
                slot = s.nodes.count
                s.nodes.append(Node(key: key, value: value, previous: -1, next: -1))
            } else {
                slot = s.tail
                Self.unlink(slot, &s)
                s.index[s.nodes[slot].key] = nil
                s.nodes[slot] = Node(key: key, value: value, previous: -1, next: -1)
                s.stats.evictions += 1
            }
            s.index[key] = slot
            Self.pushFront(slot, &s)
            s.stats.count = s.index.count
        }
    }

    private static func unlink(_ i: Int, _ s: inout State) {
        let (p, n) = (s.nodes[i].previous, s.nodes[i].next)
        if p >= 0 { s.nodes[p].next = n } else { s.head = n }
        if n >= 0 { s.nodes[n].previous = p } else { s.tail = p }
        s.nodes[i].previous = -1
        s.nodes[i].next = -1
    }

    private static func pushFront(_ i: Int, _ s: inout State) {
        s.nodes[i].next = s.head
        s.nodes[i].previous = -1
        if s.head >= 0 { s.nodes[s.head].previous = i }
        s.head = i
        if s.tail < 0 { s.tail = i }
    }
}
