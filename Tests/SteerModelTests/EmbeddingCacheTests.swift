import Foundation
import Testing
@testable import SteerModel

@Suite struct EmbeddingCacheTests {
    @Test func leastRecentlyUsedIsEvictedAndCountersMove() {
        let cache = EmbeddingCache(capacity: 2)
        #expect(cache.get("a") == nil)
        cache.put("a", [1])
        cache.put("b", [2])
        #expect(cache.get("a") == [1])  // a is now the most recent
        cache.put("c", [3])  // evicts b
        #expect(cache.get("b") == nil)
        #expect(cache.get("a") == [1])
        #expect(cache.get("c") == [3])
        #expect(cache.stats == CacheStats(hits: 3, misses: 2, evictions: 1, count: 2, capacity: 2))
    }

    @Test func zeroCapacityNeverStores() {
        let cache = EmbeddingCache(capacity: 0)
        cache.put("a", [1])
        #expect(cache.get("a") == nil)
        #expect(cache.stats.count == 0)
    }

    @Test func concurrentUseKeepsCountsConsistent() async {
        let cache = EmbeddingCache(capacity: 16)
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for i in 0..<500 {
                        let key = "k\((i * 7 + worker) % 40)"
                        if cache.get(key) == nil { cache.put(key, [Float(i)]) }
                    }
                }
            }
        }
        let stats = cache.stats
        #expect(stats.hits + stats.misses == 4000)
        #expect(stats.count == 16)
    }
}
