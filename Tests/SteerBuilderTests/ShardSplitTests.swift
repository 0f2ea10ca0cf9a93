import Foundation
import SteerCore
import SteerStore
import Testing

@testable import SteerBuilder

/// Re-sharding across machines: two old shards split into three new ones put every item on exactly the
/// new shard the sharding function names, with its record and vector unchanged.
@Suite struct ShardSplitTests {
    @Test func twoShardsSplitIntoThreeKeepEveryItemOnceOnItsOwner() throws {
        let directory = TemporaryDirectory("split")
        defer { directory.remove() }
        let old = try Sharding(shardCount: 2)
        let new = try Sharding(shardCount: 3)
        let sources = try (0..<2).map { try ItemStore(options: .init(path: directory.file("old\($0)"), syncWrites: false)) }
        defer { for source in sources { source.close() } }
        var generator = SeededGenerator(seed: 4)
        var expected: [ItemID: [Float]] = [:]
        for source in sources { try source.createVersion("v1", dimension: 3) }
        let ids: [ItemID] = (0..<120).map { .int(Int64($0)) } + (0..<30).map { .string("item-\($0)") }
        for id in ids {
            let vector = (0..<3).map { _ in Float.random(in: -1...1, using: &generator) }
            expected[id] = vector
            _ = try sources[old.shard(of: id)].upsert([ItemStore.ItemWrite(id: id, title: "title \(id)", tags: ["t"], vectors: ["v1": vector])])
        }
        _ = try sources[0].delete([ids[0], ids[1]].filter { old.shard(of: $0) == 0 })
        for id in [ids[0], ids[1]] where old.shard(of: id) == 0 { expected[id] = nil }

        var seen: [ItemID: Int] = [:]
        var copied = 0
        for shard in 0..<3 {
            let target = try ItemStore(options: .init(path: directory.file("new\(shard)"), syncWrites: false))
            defer { target.close() }
            let report = try ShardSplit.run(sources: sources, version: "v1", sharding: new, shard: shard, target: target, batchSize: 7)
            #expect(report.scanned == expected.count)
            copied += report.copied
            for (id, vector) in try storedVectors(target, version: "v1") {
                #expect(new.shard(of: id) == shard)
                #expect(vector == expected[id])
                seen[id, default: 0] += 1
            }
            let record = try target.get([ids[5]])[0]
            if new.shard(of: ids[5]) == shard { #expect(record?.title == "title \(ids[5])" && record?.tags == ["t"]) }
        }
        #expect(copied == expected.count)
        #expect(Set(seen.keys) == Set(expected.keys))
        #expect(seen.values.allSatisfy { $0 == 1 })
    }

    @Test func refusesAMissingVersionAShardOutOfRangeAndAnotherDimension() throws {
        let directory = TemporaryDirectory("split")
        defer { directory.remove() }
        let source = try ItemStore(options: .init(path: directory.file("old"), syncWrites: false))
        defer { source.close() }
        try source.createVersion("v1", dimension: 3)
        let target = try ItemStore(options: .init(path: directory.file("new"), syncWrites: false))
        defer { target.close() }
        let sharding = try Sharding(shardCount: 2)
        #expect(thrownError { try ShardSplit.run(sources: [source], version: "v2", sharding: sharding, shard: 0, target: target) }?.code == .notFound)
        #expect(thrownError { try ShardSplit.run(sources: [source], version: "v1", sharding: sharding, shard: 2, target: target) }?.code == .invalidRequest)
        try target.createVersion("v1", dimension: 4)
        #expect(thrownError { try ShardSplit.run(sources: [source], version: "v1", sharding: sharding, shard: 0, target: target) }?.code == .dimensionMismatch)
    }
}
