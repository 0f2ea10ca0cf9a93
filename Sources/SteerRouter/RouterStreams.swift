import Dispatch
import NIOCore
import SteerCore
import SteerProtocol
import SteerWriteLog

/// `steer route --follow` (docs/scaling.md, "Through a router"): the shards' replicas follow one NATS
/// JetStream stream per shard, so the router writes to the streams, not to the replicas.
///
/// - **Writes**: an `upsert`/`delete` is split by `Sharding`; each shard's part is appended to that
///   shard's stream (`ShardLog.append`: the message body and `Nats-Msg-Id` of `WriteLogMessage` /
///   `StreamPublisher`, the same a replica publishes) and the answer comes after every part's PubAck, with
///   `sequences` (one entry per shard: the part's stream sequence, 0 where the write had no part) and, for
///   a one-shard cluster, `sequence`. The count (`upserted`/`deleted`) is the number of items or ids
///   appended: what each replica makes of them (which ids existed) is decided when it applies the message.
///   Vectors of the wrong dimension (or all zeros under cosine) are refused here when a health check told
///   the router the shards' dimension and metric, so that an acknowledged write is never one every replica
///   then refuses.
/// - **Reads** with `min_sequences` (or `min_sequence` with one shard) send each shard's entry as
///   `min_sequence` to a replica that reported it applied (health checks read `applied_sequence`); one
///   answering `unavailable` (not applied in its share of the deadline) or timing out is passed over for
///   the next replica; the last gets what is left of the deadline. When no replica of a shard applied it in
///   time, the request is `unavailable` (never a partial answer without that shard).
extension Router {
    /// What a health check's `stats` answer says about a shard replica: the write-log sequence it applied,
    /// its dimension and metric.
    static func recordShardFacts(_ answer: JSONObject, into state: inout ReplicaHealth) {
        if case .int(let applied)? = answer["applied_sequence"], applied >= 0 { state.appliedSequence = UInt64(applied) }
        if case .int(let dimension)? = answer["dimension"], dimension > 0, dimension <= Int64(Int32.max) { state.dimension = Int(dimension) }
        if case .string(let metric)? = answer["metric"] { state.cosine = metric == "cosine" }
    }

    /// Refuses `min_sequence`/`min_sequences` this router cannot honour.
    ///
    /// - Throws: `.invalidRequest` for `min_sequences` without streams or of the wrong length, both fields
    ///   at once, or `min_sequence` on a router of several shards with streams (each shard's stream has
    ///   its own sequences).
    func checkSequences(_ request: Request) throws(SteerError) {
        if let sequences = request.minSequences {
            guard shardLog != nil else {
                throw SteerError.invalid("min_sequences needs a router whose shards follow streams (steer route --follow)")
            }
            guard request.minSequence == nil else { throw SteerError.invalid("give min_sequence or min_sequences, not both") }
            guard sequences.count == replicas.count else {
                throw SteerError.invalid("min_sequences has \(sequences.count) entries; this router has \(replicas.count) shard\(replicas.count == 1 ? "" : "s") (one entry per shard, 0 for none: the 'sequences' a write answered)")
            }
        } else if request.minSequence != nil, shardLog != nil, replicas.count > 1 {
            throw SteerError.invalid("min_sequence is one stream's sequence, and each of this router's \(replicas.count) shards has its own stream: pass min_sequences (the 'sequences' a write answered)")
        }
    }

    // MARK: Writes

    /// Appends each shard's part of a write to its stream and writes the answer's fields.
    ///
    /// - Throws: `.dimensionMismatch`/`.invalidRequest` for vectors the shards would refuse; the first
    ///   part's failure otherwise (`.tooLarge`, else `.unavailable`), naming the shards that did append
    ///   their part and its sequence (writes are not atomic across shards; retrying is safe).
    func appendToStreams(_ operation: WriteOperation, collection: String?, countField: StaticString, deadline: Deadline,
                         _ writer: inout JSONWriter) async throws {
        guard let shardLog else { throw SteerError.internalError("no shard log") }
        // Items go to the shard of their id, events and a user's deletion to the shard of the user (as
        // without --follow: RouterHistories.swift).
        let keys: [ItemID]
        switch operation {
        case .upsert(let items):
            if collection == nil { try checkVectors(items) }
            keys = items.map(\.id)
        case .delete(let ids):
            keys = ids
        case .events(let events):
            keys = events.map(\.user)
        case .deleteUser(let user):
            keys = [user]
        }
        var parts: [(shard: Int, operation: WriteOperation)] = []
        for (shard, indices) in byShard(keys).sorted(by: { $0.key < $1.key }) {
            switch operation {
            case .upsert(let items): parts.append((shard, .upsert(indices.map { items[$0] })))
            case .delete(let ids): parts.append((shard, .delete(indices.map { ids[$0] })))
            case .events(let events): parts.append((shard, .events(indices.map { events[$0] })))
            case .deleteUser: parts.append((shard, operation))
            }
        }
        let deadlineNanos = deadline.uptimeNanos
        var results: [Int: Result<UInt64, SteerError>] = [:]
        await withTaskGroup(of: (Int, Result<UInt64, SteerError>).self) { tasks in
            for part in parts {
                // The result is set in the do/catch and returned once, after it: a `return` of the tuple
                // from inside a typed-throws do/catch in this child task came back with a garbage shard
                // in release builds (Swift 6.3.1 -O), so every write through the router failed
                // "no outcome for shard 0".
                let shard = part.shard
                let operation = part.operation
                tasks.addTask {
                    let result: Result<UInt64, SteerError>
                    do throws(SteerError) {
                        result = .success(try await shardLog.append(operation, collection: collection, shard: shard, deadlineNanos: deadlineNanos))
                    } catch {
                        result = .failure(error)
                    }
                    return (shard, result)
                }
            }
            for await (shard, result) in tasks { results[shard] = result }
        }
        var sequences = [UInt64](repeating: 0, count: replicas.count)
        var failures: [(shard: Int, error: SteerError)] = []
        for part in parts {
            switch results[part.shard] {
            case .success(let sequence)?: sequences[part.shard] = sequence
            case .failure(let error)?: failures.append((part.shard, error))
            case nil: failures.append((part.shard, SteerError.internalError("no outcome for shard \(part.shard)")))
            }
        }
        let appended = parts.filter { sequences[$0.shard] > 0 }.map(\.shard)
        counters.withLock { $0.appendedWrites += appended.count }
        if let first = failures.first(where: { $0.error.code == .tooLarge }) ?? failures.first {
            let done = appended.map { "\($0) (sequence \(sequences[$0]))" }.joined(separator: ", ")
            logger.warning("a write's part was not appended", metadata: ["steer.shard": "\(first.shard)", "steer.error": "\(first.error)"])
            throw SteerError(first.error.code, "shard \(first.shard): \(first.error.message)"
                + (appended.isEmpty ? "" : "; shard\(appended.count == 1 ? "" : "s") \(done) appended their part (writes are not atomic across shards; retrying is safe)"))
        }
        writer.raw(",\"")
        writer.raw(countField)
        writer.raw("\":")
        writer.int(keys.count)
        writer.raw(",\"sequences\":[")
        for (index, sequence) in sequences.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.int(Int64(clamping: sequence))
        }
        writer.raw("]")
        if sequences.count == 1 {
            writer.raw(",\"sequence\":")
            writer.int(Int64(clamping: sequences[0]))
        }
    }

    /// Refuses vectors every replica would refuse (the dimension and metric a health check reported); the
    /// stream would otherwise hold an acknowledged write that no replica applies.
    ///
    /// - Throws: `.dimensionMismatch`, or `.invalidRequest` for an all-zero vector under cosine.
    func checkVectors(_ items: [ItemInput]) throws(SteerError) {
        var dimension: Int?
        var cosine = false
        for replica in replicas.joined() {
            let health = replica.health.get()
            if let known = health.dimension {
                dimension = known
                cosine = health.cosine
                break
            }
        }
        guard let dimension else { return }
        for (position, item) in items.enumerated() {
            guard item.vector.count == dimension else {
                throw SteerError.dimension(expected: dimension, got: item.vector.count, field: "items[\(position)].vector")
            }
            if cosine && item.vector.allSatisfy({ $0 == 0 }) {
                throw SteerError.invalid("items[\(position)].vector is all zeros, which has no direction for the cosine metric")
            }
        }
    }

    // MARK: Reads with min_sequence

    /// A read of `shard` answered by a replica that applied `wanted` (see the type's "Reads").
    func readApplied(_ wanted: UInt64, shard: Int, line: [UInt8], token: String?, deadline: Deadline) async -> ShardAnswer {
        let candidates = readable(shard)
        guard !candidates.isEmpty else { return .missing }
        // Replicas known to have applied `wanted` (a health check or an earlier answer said so) first, then
        // the others; each group in the rotation's order, so that load spreads over the replicas.
        let ready = candidates.map { $0.health.get().appliedSequence >= wanted }
        let order = candidates.indices.filter { ready[$0] } + candidates.indices.filter { !ready[$0] }
        let sequenced = Self.withMinSequence(line, wanted)
        var lastRefusal = "no replica answered"
        for (position, index) in order.enumerated() {
            let replica = candidates[index]
            guard let left = deadline.remainingMillis else { return .refused(deadline.exceeded("shard \(shard)")) }
            let last = position == order.count - 1
            // Each replica waits its share of what is left; the last one waits for all of it.
            let share = last ? left : max(1, left / (order.count - position))
            let wait = last ? left : min(left, share + Self.minSequenceGraceMillis)
            do {
                let answer = try await replica.request(Self.shardLine(sequenced, token: token, timeoutMillis: share, fairQueue: deadline.fairQueue),
                                                       timeout: .milliseconds(Int64(wait)))
                guard servesRouterGeneration(replica, answer) else { continue }
                replica.health.withLock { $0.appliedSequence = max($0.appliedSequence, wanted) }
                return .answer(answer)
            } catch let failure as ReplicaFailure where failure.kind == .timeout && !last {
                lastRefusal = failure.message
                counters.withLock { $0.replicaRetries += 1 }
            } catch {
                if let failure = error as? ReplicaFailure { lastRefusal = failure.message }
                if let answer = readFailure(error, replica: replica, deadline: deadline) { return answer }
            }
        }
        return .refused(SteerError(.unavailable, "no replica of shard \(shard) applied sequence \(wanted) of its stream within the deadline (last: \(lastRefusal))"))
    }

    /// Extra time past a replica's share of the deadline before the router stops waiting for it (its own
    /// `unavailable` answer comes a little before its `timeout_ms`).
    static let minSequenceGraceMillis = 50

    /// `line` (a JSON object the router wrote) with `"min_sequence": wanted` added.
    static func withMinSequence(_ line: [UInt8], _ wanted: UInt64) -> [UInt8] {
        guard line.last == UInt8(ascii: "}") else { return line }
        var writer = JSONWriter(capacity: line.count + 40)
        writer.bytes.append(contentsOf: line.dropLast())
        writer.raw(line.count == 2 ? "\"min_sequence\":" : ",\"min_sequence\":")
        writer.int(Int64(clamping: wanted))
        writer.raw("}")
        return writer.bytes
    }
}
