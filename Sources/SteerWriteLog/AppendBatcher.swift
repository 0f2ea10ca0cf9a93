import Dispatch
import SteerCore
import SteerProtocol

/// Group commit of item writes into a shard's stream (docs/scaling.md, "Through a router"): writes that
/// arrive for one shard while that shard already has `maxInFlight` publishes waiting for their PubAck
/// queue up, and the next publish takes every queued write at once as ONE batch message
/// (`WriteLogMessage.encodeBatch`: their parts in order, up to the stream's payload limit). Each
/// writer gets the batch message's stream sequence once JetStream acknowledged it (persisted: with R=3 a
/// quorum stored it), or the publish's error: nothing is acknowledged before it is stored, and a batch is
/// published with one fresh `Nats-Msg-Id` like any message, so a repeat is stored once. A writer alone
/// (nothing in flight) is published at once, as a message of one part: batching adds no wait.
///
/// Layout: per shard, the queued writes (body, deadline, continuation) and the number of publishes in
/// flight. A batch's publish runs with the earliest deadline of its writes (no writer waits past its own);
/// a write whose deadline passed while it queued is answered `unavailable` alone, never published.
///
/// Thread safety: the queues sit behind `Locked`; each publish runs in its own task, which takes the
/// next batch when it is done (so a shard never has more than `maxInFlight` publishes).
public final class AppendBatcher: Sendable {
    /// Publishes one message body to a shard's stream and returns its sequence.
    public typealias Publish = @Sendable (_ shard: Int, _ body: [UInt8], _ deadlineNanos: UInt64) async throws(SteerError) -> UInt64

    /// Most writes in one batch message.
    public static let maxWritesPerBatch = 4_096
    /// Bytes kept free below the payload limit for the message's headers (`Nats-Msg-Id`).
    public static let headerReserveBytes = 512

    private struct Waiter {
        var body: [UInt8]
        var deadlineNanos: UInt64
        var continuation: CheckedContinuation<Result<UInt64, SteerError>, Never>
    }
    private struct Queue {
        var waiting: [Waiter] = []
        var inFlight = 0
    }
    private let queues: Locked<[Queue]>
    private let maxInFlight: Int
    private let maxPayloadBytes: @Sendable () -> Int
    private let publish: Publish

    /// - Parameters:
    ///   - shards: the number of shards (streams).
    ///   - maxInFlight: publishes per shard waiting for their PubAck at once (at least 1).
    ///   - maxPayloadBytes: the stream's payload limit now (NATS's `max_payload`).
    ///   - publish: appends one body to a shard's stream.
    public init(shards: Int, maxInFlight: Int = 2, maxPayloadBytes: @escaping @Sendable () -> Int, publish: @escaping Publish) {
        queues = Locked([Queue](repeating: Queue(), count: max(0, shards)))
        self.maxInFlight = max(1, maxInFlight)
        self.maxPayloadBytes = maxPayloadBytes
        self.publish = publish
    }

    /// Appends one write's body (`WriteLogMessage.encode` of an `upsert` or `delete`, no newline in it) to
    /// shard `shard`'s stream, in a batch with the writes queued beside it.
    ///
    /// - Returns: the stream sequence of the message that holds it.
    /// - Throws: the publish's error (`.unavailable`, `.tooLarge`); `.internal` for a shard out of range.
    public func append(_ body: [UInt8], shard: Int, deadlineNanos: UInt64) async throws(SteerError) -> UInt64 {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<UInt64, SteerError>, Never>) in
            let start = queues.withLock { queues -> Bool? in
                guard queues.indices.contains(shard) else { return nil }
                queues[shard].waiting.append(Waiter(body: body, deadlineNanos: deadlineNanos, continuation: continuation))
                guard queues[shard].inFlight < maxInFlight else { return false }
                queues[shard].inFlight += 1
                return true
            }
            switch start {
            case nil: continuation.resume(returning: .failure(SteerError.internalError("no stream for shard \(shard)")))
            case true?: Task { await self.drain(shard) }
            case false?: break
            }
        }
        return try result.get()
    }

    /// Publishes batches of shard `shard`'s queue until it is empty; one of the shard's in-flight slots.
    private func drain(_ shard: Int) async {
        while true {
            let limit = max(1, maxPayloadBytes() - Self.headerReserveBytes)
            let batch = queues.withLock { queues -> [Waiter]? in
                guard !queues[shard].waiting.isEmpty else {
                    queues[shard].inFlight -= 1
                    return nil
                }
                var count = 0
                var bytes = 0
                for waiter in queues[shard].waiting {
                    let added = waiter.body.count + (count == 0 ? 0 : 1)
                    guard count == 0 || (bytes + added <= limit && count < Self.maxWritesPerBatch) else { break }
                    bytes += added
                    count += 1
                }
                let taken = Array(queues[shard].waiting.prefix(count))
                queues[shard].waiting.removeFirst(count)
                return taken
            }
            guard var batch else { return }
            // A write whose deadline passed while it queued is answered alone: it must not fail the others.
            let now = DispatchTime.now().uptimeNanoseconds
            for waiter in batch where waiter.deadlineNanos <= now {
                waiter.continuation.resume(returning: .failure(SteerError(.unavailable, "no time left before the deadline to append the write")))
            }
            batch.removeAll { $0.deadlineNanos <= now }
            if batch.isEmpty { continue }
            let body = batch.count == 1 ? batch[0].body : WriteLogMessage.encodeBatch(batch.map(\.body))
            let deadline = batch.map(\.deadlineNanos).min() ?? 0
            let result: Result<UInt64, SteerError>
            do throws(SteerError) {
                result = .success(try await publish(shard, body, deadline))
            } catch {
                result = .failure(error)
            }
            for waiter in batch { waiter.continuation.resume(returning: result) }
        }
    }
}
