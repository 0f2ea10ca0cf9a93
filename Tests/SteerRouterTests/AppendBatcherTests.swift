import Dispatch
import SteerCore
import SteerProtocol
import SteerWriteLog
import Testing

/// A publish that records each body, answers increasing sequences, holds every publish until `release`
/// while `gated`, and fails the publishes whose number is in `failing`.
private final class GatedLog: Sendable {
    let bodies = Locked<[[UInt8]]>([])
    let gated = Locked(true)
    let failing: Set<Int>

    init(failing: Set<Int> = []) { self.failing = failing }

    func publish(_ body: [UInt8]) async throws(SteerError) -> UInt64 {
        let number = bodies.withLock { bodies -> Int in
            bodies.append(body)
            return bodies.count
        }
        while gated.get() { try? await Task.sleep(for: .milliseconds(2)) }
        if failing.contains(number) { throw SteerError(.unavailable, "publish \(number) failed") }
        return UInt64(number)
    }

    func release() { gated.withLock { $0 = false } }

    /// Waits until `count` publishes started.
    func waitForPublishes(_ count: Int) async {
        while bodies.get().count < count { try? await Task.sleep(for: .milliseconds(2)) }
    }
}

private func body(_ id: Int) -> [UInt8] {
    WriteLogMessage.encode(.delete([.int(Int64(id))]))
}

private let farDeadline = DispatchTime.now().uptimeNanoseconds + 60_000_000_000

/// Group commit of writes into a shard's stream (AppendBatcher.swift), with an in-memory publish.
@Suite struct AppendBatcherTests {
    @Test func writesQueuedBehindAPublish_goOutAsOneBatchMessage_inOrder_eachAnsweredWithItsSequence() async throws {
        let log = GatedLog()
        let batcher = AppendBatcher(shards: 1, maxInFlight: 1, maxPayloadBytes: { 1 << 20 }) { _, body, _ throws(SteerError) in
            try await log.publish(body)
        }
        async let first = batcher.append(body(0), shard: 0, deadlineNanos: farDeadline)
        await log.waitForPublishes(1)
        // Nine more while the first is in flight: queued, then published together.
        var queued: [Task<UInt64, any Error>] = []
        for id in 1...9 {
            queued.append(Task { try await batcher.append(body(id), shard: 0, deadlineNanos: farDeadline) })
            try await Task.sleep(for: .milliseconds(5))
        }
        log.release()
        #expect(try await first == 1)
        var sequences: [UInt64] = []
        for task in queued { sequences.append(try await task.value) }
        #expect(sequences == Array(repeating: 2, count: 9))
        let bodies = log.bodies.get()
        #expect(bodies.count == 2)
        #expect(bodies[0] == body(0))
        #expect(bodies[1] == WriteLogMessage.encodeBatch((1...9).map(body)))
        // The batch reads back as its nine writes, in order.
        let parts = WriteLogMessage.decodeParts(bodies[1], decoder: RequestDecoder(limits: ProtocolLimits()))
        let ids = parts.map { part -> ItemID? in
            guard case .success(.write(let entry)) = part, case .delete(let ids) = entry.operation else { return nil }
            return ids.first
        }
        #expect(ids == (1...9).map { ItemID.int(Int64($0)) })
    }

    @Test func aBatchStaysWithinThePayloadLimit_andAnOversizedWriteGoesAlone() async throws {
        let log = GatedLog()
        let one = body(1).count
        // Room for three bodies and their separators, not four.
        let limit = AppendBatcher.headerReserveBytes + 3 * one + 2
        let batcher = AppendBatcher(shards: 1, maxInFlight: 1, maxPayloadBytes: { limit }) { _, body, _ throws(SteerError) in
            try await log.publish(body)
        }
        let big = WriteLogMessage.encode(.delete((0..<200).map { ItemID.int(Int64($0)) }))
        async let first = batcher.append(body(0), shard: 0, deadlineNanos: farDeadline)
        await log.waitForPublishes(1)
        var queued: [Task<UInt64, any Error>] = []
        for id in 1...7 {
            queued.append(Task { try await batcher.append(body(id), shard: 0, deadlineNanos: farDeadline) })
            try await Task.sleep(for: .milliseconds(5))
        }
        queued.append(Task { try await batcher.append(big, shard: 0, deadlineNanos: farDeadline) })
        try await Task.sleep(for: .milliseconds(5))
        log.release()
        _ = try await first
        for task in queued { _ = try await task.value }
        let bodies = log.bodies.get()
        #expect(bodies == [
            body(0), WriteLogMessage.encodeBatch([body(1), body(2), body(3)]), WriteLogMessage.encodeBatch([body(4), body(5), body(6)]),
            body(7), big,
        ])
        #expect(bodies.dropLast().allSatisfy { $0.count <= limit - AppendBatcher.headerReserveBytes })
    }

    @Test func aFailedPublish_failsTheWritesOfItsBatchOnly() async throws {
        let log = GatedLog(failing: [2])
        let batcher = AppendBatcher(shards: 2, maxInFlight: 1, maxPayloadBytes: { 1 << 20 }) { _, body, _ throws(SteerError) in
            try await log.publish(body)
        }
        async let first = batcher.append(body(0), shard: 0, deadlineNanos: farDeadline)
        await log.waitForPublishes(1)
        let queued = [
            Task { try await batcher.append(body(1), shard: 0, deadlineNanos: farDeadline) },
            Task { try await batcher.append(body(2), shard: 0, deadlineNanos: farDeadline) },
        ]
        try await Task.sleep(for: .milliseconds(20))
        log.release()
        #expect(try await first == 1)
        for task in queued {
            await #expect(throws: SteerError.self) { _ = try await task.value }
        }
        // A write whose deadline passes while it queues is answered alone and not published; the write
        // queued beside it still is.
        let gate = GatedLog()
        let gated = AppendBatcher(shards: 1, maxInFlight: 1, maxPayloadBytes: { 1 << 20 }) { _, body, _ throws(SteerError) in
            try await gate.publish(body)
        }
        async let head = gated.append(body(10), shard: 0, deadlineNanos: farDeadline)
        await gate.waitForPublishes(1)
        // The deadline is fixed before the task starts: on a loaded machine the task may start late, and a
        // deadline counted from then could still be ahead when the batch forms.
        let soon = DispatchTime.now().uptimeNanoseconds + 5_000_000
        let expiring = Task { try await gated.append(body(11), shard: 0, deadlineNanos: soon) }
        let patient = Task { try await gated.append(body(12), shard: 0, deadlineNanos: farDeadline) }
        try await Task.sleep(for: .milliseconds(50))
        gate.release()
        _ = try await head
        await #expect(throws: SteerError.self) { _ = try await expiring.value }
        #expect(try await patient.value == 2)
        #expect(gate.bodies.get() == [body(10), body(12)])
        // The shard goes on: the next write is published and answered.
        #expect(try await batcher.append(body(3), shard: 0, deadlineNanos: farDeadline) == 3)
        await #expect(throws: SteerError.self) { _ = try await batcher.append(body(4), shard: 5, deadlineNanos: farDeadline) }
    }
}
