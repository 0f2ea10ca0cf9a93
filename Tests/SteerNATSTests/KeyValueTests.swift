import Foundation
import SteerNATS
import Testing

/// JetStream key-value buckets against a real nats-server.
@Suite(.serialized)
struct KeyValueTests {
    /// Put, get, update with a revision (and its conflict), create, delete, purge; `direct` picks
    /// `$JS.API.DIRECT.GET` or `$JS.API.STREAM.MSG.GET` for reads.
    private func exerciseBucket(direct: Bool) async throws {
        let server = try NATSServerProcess.start()
        defer { server.stop() }
        let nc = try await server.connect()
        let js = JetStreamContext(connection: nc)
        var config = KeyValueConfig(bucket: "cluster-meta", history: 3)
        config.allowDirect = direct
        let kv = try await js.createKeyValue(config)
        #expect(kv.allowDirect == direct)
        let stream = try await js.streamInfo("KV_cluster-meta")
        #expect(stream.config.subjects == ["$KV.cluster-meta.>"])
        #expect(stream.config.maxMsgsPerSubject == 3)
        #expect(stream.config.denyDelete == true)
        #expect(stream.config.allowRollupHdrs == true)

        let missing = try await kv.get("shards.count")
        #expect(missing == nil)
        let r1 = try await kv.put("shards.count", "2".bytes)
        let e1 = try await kv.get("shards.count")
        #expect(e1 == KeyValueEntry(bucket: "cluster-meta", key: "shards.count", value: "2".bytes, revision: r1, operation: .put))
        let r2 = try await kv.update("shards.count", "3".bytes, revision: r1)
        #expect(r2 > r1)
        // A writer still holding r1 loses: a specific conflict, and the value stays.
        let conflict = await natsError("update with a stale revision") { try await kv.update("shards.count", "9".bytes, revision: r1) }
        #expect(conflict?.isWrongLastSequence == true, "got \(String(describing: conflict))")
        let afterConflict = try await kv.get("shards.count")?.value
        #expect(afterConflict == "3".bytes)
        // create only when absent.
        let taken = await natsError("create over an existing key") { try await kv.create("shards.count", "1".bytes) }
        #expect(taken?.isWrongLastSequence == true, "got \(String(describing: taken))")
        let rGen = try await kv.create("generation.0", "g1".bytes)
        let createdRevision = try await kv.get("generation.0")?.revision
        #expect(createdRevision == rGen)

        // Delete leaves a marker: get says nil, entry shows the marker, create works again.
        let rDel = try await kv.delete("generation.0")
        let afterDelete = try await kv.get("generation.0")
        #expect(afterDelete == nil)
        let marker = try await kv.entry("generation.0")
        #expect(marker?.operation == .delete)
        #expect(marker?.revision == rDel)
        let rAgain = try await kv.create("generation.0", "g2".bytes)
        #expect(rAgain > rDel)
        let recreated = try await kv.get("generation.0")?.value
        #expect(recreated == "g2".bytes)

        // Purge removes the history of that key (one message left: the marker).
        _ = try await kv.put("replica.a", "up".bytes)
        _ = try await kv.put("replica.a", "up2".bytes)
        let before = try await js.streamInfo("KV_cluster-meta").state.messages
        _ = try await kv.purge("replica.a")
        let after = try await js.streamInfo("KV_cluster-meta").state.messages
        #expect(after == before - 1)
        let afterPurge = try await kv.get("replica.a")
        #expect(afterPurge == nil)
        let purgeMarker = try await kv.entry("replica.a")?.operation
        #expect(purgeMarker == .purge)

        let badKey = await natsError("key with a space") { try await kv.put("bad key", []) }
        guard case .invalidArgument = badKey else { Issue.record("got \(String(describing: badKey))"); return }
        let bound = try await js.keyValue("cluster-meta")
        let viaBound = try await bound.get("shards.count")?.value
        #expect(viaBound == "3".bytes)
        let unknown = await natsError("missing bucket") { try await js.keyValue("nope") }
        guard case .jetStream(let e) = unknown else { Issue.record("got \(String(describing: unknown))"); return }
        #expect(e.errCode == JetStreamAPIError.streamNotFound)
        try await js.deleteKeyValue("cluster-meta")
        await nc.close()
    }

    @Test func bucketWithDirectGet() async throws {
        try await exerciseBucket(direct: true)
    }

    @Test func bucketWithMessageGet() async throws {
        try await exerciseBucket(direct: false)
    }

    @Test func historyOneKeepsOverwriting() async throws {
        let server = try NATSServerProcess.start()
        defer { server.stop() }
        let nc = try await server.connect()
        let kv = try await JetStreamContext(connection: nc).createKeyValue(KeyValueConfig(bucket: "h1"))
        for i in 0..<5 { _ = try await kv.put("k", "\(i)".bytes) }
        let latest = try await kv.get("k")?.value
        #expect(latest == "4".bytes)
        let storedCount = try await kv.js.streamInfo("KV_h1").state.messages
        #expect(storedCount == 1)
        await nc.close()
    }

    @Test func watchDeliversLatestValuesThenChanges() async throws {
        let server = try NATSServerProcess.start()
        defer { server.stop() }
        let nc = try await server.connect()
        let js = JetStreamContext(connection: nc)
        let kv = try await js.createKeyValue(KeyValueConfig(bucket: "meta", history: 5))
        _ = try await kv.put("replica.a", "v1".bytes)
        _ = try await kv.put("replica.a", "v2".bytes)
        let rB = try await kv.put("replica.b", "b1".bytes)
        _ = try await kv.put("other.x", "x".bytes)

        let watcher = try await kv.watch("replica.>")
        var iterator = watcher.makeAsyncIterator()
        var initial: [KeyValueEntry] = []
        while let event = try await iterator.next() {
            if case .entry(let entry) = event { initial.append(entry) } else { break }
        }
        #expect(initial.map(\.key) == ["replica.a", "replica.b"])
        #expect(initial.map(\.value) == ["v2", "b1"].map(\.bytes))
        #expect(initial.last?.revision == rB)

        let rC = try await kv.put("replica.c", "c1".bytes)
        _ = try await kv.put("other.y", "not watched".bytes)
        let rDel = try await kv.delete("replica.a")
        let first = try await iterator.next()
        #expect(first == .entry(KeyValueEntry(bucket: "meta", key: "replica.c", value: "c1".bytes, revision: rC, operation: .put)))
        let second = try await iterator.next()
        #expect(second == .entry(KeyValueEntry(bucket: "meta", key: "replica.a", value: [], revision: rDel, operation: .delete)))
        await watcher.stop()

        // A watch on nothing says at once that the initial values are done.
        let empty = try await kv.watch("nothing.>")
        var emptyIterator = empty.makeAsyncIterator()
        let firstEmpty = try await emptyIterator.next()
        #expect(firstEmpty == .initialValuesDone)
        await empty.stop()

        // includeHistory replays every revision.
        let history = try await kv.watch("replica.a", includeHistory: true)
        var historyIterator = history.makeAsyncIterator()
        var values: [KeyValueOperation] = []
        while let event = try await historyIterator.next() {
            if case .entry(let entry) = event { values.append(entry.operation) } else { break }
        }
        #expect(values == [.put, .put, .delete])
        await history.stop()
        await nc.close()
    }
}
