import Dispatch
import Logging
import NIOCore
import NIOPosix
import SteerClient
import SteerCore
import SteerEngine
import SteerProtocol
import SteerService
import SteerServer
import SteerWriteLog

/// Writes without streams (`upsert`, `delete`): sent to every live replica of each owning shard. A
/// replica that fails while a peer applied the write may lack it and is marked diverged (it serves
/// nothing until re-seeded, docs/scaling.md); writes are not atomic across shards. With streams
/// (`steer route --follow`) writes go through `RouterStreams.swift` instead.
extension Router {
    // MARK: upsert and delete

    /// Outcome of a write on one replica.
    enum WriteOutcome: Sendable {
        /// The count the replica answered and the collection it wrote to (an alias resolved).
        case applied(Int, collection: String?)
        case refused(SteerError)
        case failed(ReplicaFailure)
    }

    /// Sends a write to every live replica of each owning shard.
    ///
    /// - Parameters:
    ///   - keys: the ids that choose the shards.
    ///   - writer: gets `"collection"`, the collection the replicas wrote to (an alias resolved).
    ///   - operation: the shard's part of the write, for the given positions of `keys`.
    /// - Returns: the sum over shards of the count the replicas answered.
    /// - Throws: a replica's refusal (the request's fault); `.unavailable` naming the shards without a live
    ///   replica that applied the write (the other shards applied it: writes are not atomic across shards).
    func write(op: StaticString, countField: String, token: String?, deadline: Deadline, keys: [ItemID], _ writer: inout JSONWriter,
               operation: ([Int]) -> Request.Operation) async throws -> Int {
        guard let left = deadline.remainingMillis else { throw deadline.exceeded("\(op): no shard") }
        let timeout = TimeAmount.milliseconds(Int64(left))
        let shardToken = shardToken(token)
        var lines: [Int: [UInt8]] = [:]
        for (shard, indices) in byShard(keys) {
            let line = RequestEncoder.encode(Request(operation: operation(indices), token: shardToken, timeoutMillis: left,
                                                     fairQueue: deadline.fairQueue, collection: deadline.collection))
            lines[shard] = line
        }
        var results: [Int: [(Replica, WriteOutcome)]] = [:]
        await withTaskGroup(of: (Int, Replica, WriteOutcome).self) { tasks in
            for (shard, line) in lines {
                for replica in replicas[shard] {
                    let health = replica.health.get()
                    guard health.up, !health.diverged else { continue }
                    tasks.addTask {
                        do {
                            let answer = try await replica.request(line, timeout: timeout)
                            guard case .int(let count)? = answer[countField] else {
                                return (shard, replica, .failed(ReplicaFailure(.transport, message: "\(replica.endpoint) answered \(op) without '\(countField)'")))
                            }
                            var collection: String?
                            if case .string(let name)? = answer["collection"] { collection = name }
                            return (shard, replica, .applied(Int(count), collection: collection))
                        } catch let error as SteerError {
                            return (shard, replica, .refused(error))
                        } catch {
                            return (shard, replica, .failed(error as? ReplicaFailure ?? ReplicaFailure(.transport, message: Self.describe(error))))
                        }
                    }
                }
            }
            for await (shard, replica, outcome) in tasks { results[shard, default: []].append((replica, outcome)) }
        }
        var total = 0
        var failedShards: [Int] = []
        var timedOut = false
        var refusal: SteerError?
        var wroteTo: [String: Set<Int>] = [:]
        for shard in lines.keys.sorted() {
            let outcomes = results[shard] ?? []
            var applied: Int?
            for (_, outcome) in outcomes {
                switch outcome {
                case .applied(let count, let collection):
                    applied = max(applied ?? 0, count)
                    if let collection { wroteTo[collection, default: []].insert(shard) }
                case .refused(let error): if refusal == nil { refusal = error }
                case .failed: break
                }
            }
            for (replica, outcome) in outcomes {
                guard case .failed(let failure) = outcome else { continue }
                // Only a transport failure says the replica is down; any failure while a peer applied
                // the write means it may lack it.
                if failure.kind == .transport { replica.markDown(failure.message) }
                if failure.kind == .timeout { timedOut = true }
                if applied != nil { markDiverged(replica, because: failure.message) }
            }
            if applied != nil {
                // Replicas that were down missed the write their peers took.
                let reached = Set(outcomes.map { ObjectIdentifier($0.0) })
                for replica in replicas[shard] where !reached.contains(ObjectIdentifier(replica)) {
                    markDiverged(replica, because: "down during a write")
                }
            }
            if let applied { total += applied } else { failedShards.append(shard) }
        }
        let applied = lines.keys.sorted().filter { !failedShards.contains($0) && !(results[$0] ?? []).contains { if case .refused = $0.1 { true } else { false } } }
        if let refusal {
            guard !applied.isEmpty else { throw refusal }
            throw SteerError(refusal.code, refusal.message + " (shard\(applied.count == 1 ? "" : "s") \(applied.map(String.init).joined(separator: ", ")) applied their part: writes are not atomic across shards)")
        }
        if !failedShards.isEmpty, timedOut {
            throw SteerError(.deadlineExceeded, "\(op): shard\(failedShards.count == 1 ? "" : "s") \(failedShards.map(String.init).joined(separator: ", ")) did not answer within the request's deadline of \(deadline.budgetMillis) ms; the write may or may not have been applied there (retrying is safe)")
        }
        if !failedShards.isEmpty {
            throw SteerError(.unavailable, "\(op): no live replica of shard\(failedShards.count == 1 ? "" : "s") \(failedShards.map(String.init).joined(separator: ", ")) applied it"
                + (applied.isEmpty ? "" : "; shard\(applied.count == 1 ? "" : "s") \(applied.map(String.init).joined(separator: ", ")) did (writes are not atomic across shards; retrying is safe)"))
        }
        // An alias moved while the write ran: its parts landed in different collections.
        guard wroteTo.count <= 1 else {
            let parts = wroteTo.sorted { $0.key < $1.key }.map { "'\($0.key)' on shard\($0.value.count == 1 ? "" : "s") \($0.value.sorted().map(String.init).joined(separator: ", "))" }
            throw SteerError(.unavailable, "\(op): the shards wrote to different collections (\(parts.joined(separator: "; "))): an alias moved during the write; retry it once the move has finished (retrying is safe)")
        }
        writer.raw(",\"collection\":")
        writer.string(wroteTo.keys.first ?? deadline.collection ?? CollectionName.defaultName)
        return total
    }

    /// Takes a replica that missed a write its peers applied out of reads and writes until the router
    /// restarts (after an operator re-seeded it).
    func markDiverged(_ replica: Replica, because reason: String) {
        let already = replica.health.withLock { health -> Bool in
            defer { health.diverged = true }
            return health.diverged
        }
        guard !already else { return }
        counters.withLock { $0.divergedReplicas += 1 }
        logger.error("replica missed a write and no longer serves until re-seeded (docs/scaling.md)", metadata: [
            "steer.replica": "\(replica.endpoint)", "steer.shard": "\(replica.shard)", "steer.reason": "\(reason)",
        ])
    }
}
