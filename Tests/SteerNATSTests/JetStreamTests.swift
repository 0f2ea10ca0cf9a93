import Foundation
import SteerNATS
import Testing

/// JetStream against a real nats-server: streams, publish with ack, de-duplication, optimistic
/// concurrency, durable pull consumers, and a 3-node cluster with an R=3 stream.
@Suite(.serialized)
struct JetStreamTests {
    @Test func streamCreateInfoDelete() async throws {
        let server = try NATSServerProcess.start()
        defer { server.stop() }
        let nc = try await server.connect()
        let js = JetStreamContext(connection: nc)
        let config = StreamConfig(name: "ORDERS", subjects: ["orders.>"], storage: .file, replicas: 1, duplicateWindow: .seconds(30))
        let created = try await js.createStream(config)
        #expect(created.config.name == "ORDERS")
        #expect(created.config.subjects == ["orders.>"])
        #expect(created.config.duplicateWindowNanos == 30_000_000_000)
        #expect(created.config.storage == .file)
        #expect(created.state.messages == 0)
        // Creating the identical stream again is fine; a different one with the same name is not.
        _ = try await js.createStream(config)
        var other = config
        other.subjects = ["else.>"]
        let conflict = await natsError("conflicting stream") { try await js.createStream(other) }
        guard case .jetStream(let e) = conflict else { Issue.record("got \(String(describing: conflict))"); return }
        #expect(e.code == 400)
        _ = try await js.publish("orders.1", payload: "a".bytes)
        let info = try await js.streamInfo("ORDERS")
        #expect(info.state.messages == 1)
        #expect(info.state.lastSeq == 1)
        try await js.deleteStream("ORDERS")
        let missing = await natsError("deleted stream") { try await js.streamInfo("ORDERS") }
        #expect(missing == .jetStream(JetStreamAPIError(code: 404, errCode: JetStreamAPIError.streamNotFound, description: "stream not found")))
        let badName = await natsError("stream name with a dot") { try await js.streamInfo("a.b") }
        guard case .invalidArgument = badName else { Issue.record("got \(String(describing: badName))"); return }
        await nc.close()
    }

    @Test func publishWithAckDeduplicatesByMessageID() async throws {
        let server = try NATSServerProcess.start()
        defer { server.stop() }
        let nc = try await server.connect()
        let js = JetStreamContext(connection: nc)
        try await js.createStream(StreamConfig(name: "W", subjects: ["w.>"]))
        let first = try await js.publish("w.shard0", payload: "upsert 1".bytes, messageID: "writer-a-1")
        #expect(first == PubAck(stream: "W", seq: 1, duplicate: nil))
        #expect(!(first.isDuplicate))
        let second = try await js.publish("w.shard0", payload: "upsert 2".bytes, messageID: "writer-a-2")
        #expect(second.seq == 2)
        let repeated = try await js.publish("w.shard0", payload: "upsert 1 (retry)".bytes, messageID: "writer-a-1")
        #expect(repeated.isDuplicate)
        #expect(repeated.seq == 1)
        let third = try await js.publish("w.shard1", payload: "other".bytes)
        #expect(third.seq == 3)
        let storedCount = try await js.streamInfo("W").state.messages
        #expect(storedCount == 3)
        // Expected last subject sequence: a conflict is a specific error, the match is stored.
        let conflict = await natsError("stale expectation") {
            try await js.publish("w.shard0", payload: "x".bytes, expectedLastSubjectSequence: 1)
        }
        #expect(conflict?.isWrongLastSequence == true, "got \(String(describing: conflict))")
        let matched = try await js.publish("w.shard0", payload: "y".bytes, expectedLastSubjectSequence: 2)
        #expect(matched.seq == 4)
        // A subject no stream holds: no responders, not a hang.
        let orphan = await natsError("subject outside streams") { try await js.publish("nostream.x", payload: []) }
        #expect(orphan == .noResponders(subject: "nostream.x"))
        await nc.close()
    }

    @Test func durablePullConsumerFetchAckAndResume() async throws {
        let server = try NATSServerProcess.start()
        defer { server.stop() }
        var nc = try await server.connect()
        var js = JetStreamContext(connection: nc)
        try await js.createStream(StreamConfig(name: "LOG", subjects: ["log.>"]))
        for i in 1...10 { _ = try await js.publish("log.s0", payload: "m\(i)".bytes, messageID: "id-\(i)") }
        let created = try await js.createDurableConsumer(
            stream: "LOG", config: ConsumerConfig(durableName: "replica-a", deliverPolicy: .byStartSequence, optStartSeq: 1, ackPolicy: .explicit))
        #expect(created.numPending == 10)
        #expect(created.config.ackPolicy == .explicit)

        let batch = try await js.fetch(stream: "LOG", consumer: "replica-a", batch: 4, expires: .seconds(2))
        #expect(batch.map(\.metadata.streamSequence) == [1, 2, 3, 4])
        #expect(batch.map(\.payload) == ["m1", "m2", "m3", "m4"].map(\.bytes))
        #expect(batch.first?.headers?["Nats-Msg-Id"] == "id-1")
        #expect(batch.map(\.metadata.stream) == Array(repeating: "LOG", count: 4))
        #expect(batch.map(\.metadata.consumer) == Array(repeating: "replica-a", count: 4))
        #expect(batch.map(\.metadata.delivered) == [1, 1, 1, 1])
        #expect(batch.last?.metadata.pending == 6)
        for message in batch { try await js.ack(message, wait: true) }
        var info = try await js.consumerInfo(stream: "LOG", consumer: "replica-a")
        #expect(info.ackFloor.streamSeq == 4)

        // A new connection (the replica restarted) resumes the durable after its ack floor.
        await nc.close()
        nc = try await server.connect()
        js = JetStreamContext(connection: nc)
        let rest = try await js.fetch(stream: "LOG", consumer: "replica-a", batch: 100, expires: .milliseconds(500))
        #expect(rest.map(\.metadata.streamSequence) == [5, 6, 7, 8, 9, 10])
        for message in rest { try await js.ack(message, wait: true) }
        info = try await js.consumerInfo(stream: "LOG", consumer: "replica-a")
        #expect(info.ackFloor.streamSeq == 10)
        #expect(info.numPending == 0)

        // Nothing left: no_wait answers at once with nothing; expires waits about that long.
        var start = ContinuousClock.now
        let none = try await js.fetch(stream: "LOG", consumer: "replica-a", batch: 5, noWait: true)
        #expect(none.count == 0)
        #expect(ContinuousClock.now - start < .milliseconds(900))
        start = ContinuousClock.now
        let waited = try await js.fetch(stream: "LOG", consumer: "replica-a", batch: 5, expires: .milliseconds(400))
        #expect(waited.count == 0)
        #expect(ContinuousClock.now - start >= .milliseconds(350))

        // A pull waiting with expires gets a message published meanwhile.
        let puller = js
        async let late = puller.fetch(stream: "LOG", consumer: "replica-a", batch: 1, expires: .seconds(3))
        try await Task.sleep(for: .milliseconds(200))
        _ = try await js.publish("log.s0", payload: "m11".bytes)
        let got = try await late
        #expect(got.map(\.metadata.streamSequence) == [11])

        // A replica that stored "applied through 7" starts a consumer at 8.
        try await js.createDurableConsumer(
            stream: "LOG", config: ConsumerConfig(durableName: "replica-b", deliverPolicy: .byStartSequence, optStartSeq: 8, ackPolicy: .explicit))
        let resumed = try await js.fetch(stream: "LOG", consumer: "replica-b", batch: 10, expires: .milliseconds(500))
        #expect(resumed.map(\.metadata.streamSequence) == [8, 9, 10, 11])

        // An unacked message is redelivered after a nak, with delivered = 2.
        let one = try await js.fetch(stream: "LOG", consumer: "replica-b", batch: 1, noWait: true)
        #expect(one.count == 0)
        try await js.ack(resumed[0], .nak, wait: true)
        let redelivered = try await js.fetch(stream: "LOG", consumer: "replica-b", batch: 1, expires: .seconds(2))
        #expect(redelivered.first?.metadata.streamSequence == 8)
        #expect(redelivered.first?.metadata.delivered == 2)

        let missing = await natsError("fetch from a missing consumer") {
            try await js.fetch(stream: "LOG", consumer: "nobody", batch: 1, noWait: true)
        }
        guard case .timeout = missing else { Issue.record("got \(String(describing: missing))"); return }
        try await js.deleteConsumer(stream: "LOG", consumer: "replica-b")
        let gone = await natsError("deleted consumer") { try await js.consumerInfo(stream: "LOG", consumer: "replica-b") }
        guard case .jetStream(let e) = gone else { Issue.record("got \(String(describing: gone))"); return }
        #expect(e.errCode == JetStreamAPIError.consumerNotFound)
        await nc.close()
    }

    @Test func ackSubjectMetadata() {
        let v1 = JetStreamMetadata(ackSubject: "$JS.ACK.S1.d1.2.17.5.1796622878742085212.3")
        #expect(v1?.stream == "S1")
        #expect(v1?.consumer == "d1")
        #expect(v1?.delivered == 2)
        #expect(v1?.streamSequence == 17)
        #expect(v1?.consumerSequence == 5)
        #expect(v1?.timestampNanos == 1_796_622_878_742_085_212)
        #expect(v1?.pending == 3)
        let v2 = JetStreamMetadata(ackSubject: "$JS.ACK.hub.ACCHASH.S1.d1.1.9.8.1796622878742085212.0.rnd")
        #expect(v2?.stream == "S1")
        #expect(v2?.streamSequence == 9)
        #expect(v2?.consumerSequence == 8)
        for bad in ["", "$JS.ACK", "$JS.ACK.S1.d1.x.1.1.1.0", "$JS.NAK.S1.d1.1.1.1.1.0", "$JS.ACK.S1.d1.1.1.1.1", "$JS.ACK..d1.1.1.1.1.0",
                    "$JS.ACK.S1.d1.1.99999999999999999999999.1.1.0", "$JS.ACK.S1.d1.-1.1.1.1.0"] {
            #expect(JetStreamMetadata(ackSubject: bad) == nil, "\(bad)")
        }
    }

    /// Three servers on loopback, an R=3 stream; the stream leader is killed with SIGKILL, and writes
    /// (retried with the same message ids) and reads go on through the two that remain; the killed
    /// node restarts and catches up.
    @Test func clusterR3StreamSurvivesKilledNode() async throws {
        let cluster = try NATSCluster()
        defer { cluster.stop() }
        var options = NATSConnectOptions()
        options.requestTimeout = .seconds(2)
        let config = StreamConfig(name: "SHARD0", subjects: ["steer.c.shard.0"], storage: .file, replicas: 3)
        // The meta leader needs a few seconds after startup; creation answers 503/10008 meanwhile.
        let info = try await eventually(seconds: 30) {
            let nc = try await cluster.nodes[0].connect(options: options)
            defer { Task { await nc.close() } }
            return try await JetStreamContext(connection: nc).createStream(config)
        }
        #expect(info.config.numReplicas == 3)
        let leaderName = try await eventually(seconds: 20) {
            let nc = try await cluster.nodes[0].connect(options: options)
            defer { Task { await nc.close() } }
            let current = try await JetStreamContext(connection: nc).streamInfo("SHARD0")
            guard let leader = current.cluster?.leader, current.cluster?.replicas?.count == 2 else { throw NATSTestError("no leader yet") }
            return leader
        }
        let leader = try #require(cluster.node(named: leaderName))
        let survivor = try #require(cluster.nodes.first { $0.name != leaderName })
        let nc = try await survivor.connect(options: options)
        let js = JetStreamContext(connection: nc, timeout: .seconds(2))
        for i in 1...20 {
            let ack = try await js.publish("steer.c.shard.0", payload: "w\(i)".bytes, messageID: "w\(i)")
            #expect(ack.seq == UInt64(i))
        }
        leader.kill()
        // Writes continue once the two survivors elect a leader; retries reuse message ids, so a write
        // stored before its ack got lost is not stored twice.
        for i in 21...40 {
            let ack = try await eventually(seconds: 30) {
                try await js.publish("steer.c.shard.0", payload: "w\(i)".bytes, messageID: "w\(i)")
            }
            #expect(ack.seq == UInt64(i))
        }
        _ = try await eventually(seconds: 30) {
            try await js.createDurableConsumer(
                stream: "SHARD0", config: ConsumerConfig(durableName: "reader", deliverPolicy: .byStartSequence, optStartSeq: 1))
        }
        var read: [JetStreamMessage] = []
        while read.count < 40 {
            let batch = try await eventually(seconds: 30) {
                try await js.fetch(stream: "SHARD0", consumer: "reader", batch: 40 - read.count, expires: .seconds(1))
            }
            for message in batch { try await js.ack(message, wait: true) }
            read += batch
        }
        #expect(read.map(\.metadata.streamSequence) == (1...40).map { UInt64($0) })
        #expect(read.map(\.payload) == (1...40).map { "w\($0)".bytes })
        // The killed node restarts from its store and catches up with the stream.
        try leader.restart()
        let restartedState = try await eventually(seconds: 30) {
            let direct = try await leader.connect(options: options)
            defer { Task { await direct.close() } }
            let current = try await JetStreamContext(connection: direct).streamInfo("SHARD0")
            guard current.state.lastSeq == 40, current.cluster?.replicas?.allSatisfy({ $0.current }) == true else {
                throw NATSTestError("not caught up: \(current.state), \(String(describing: current.cluster))")
            }
            return current.state
        }
        #expect(restartedState.messages == 40)
        await nc.close()
    }
}
