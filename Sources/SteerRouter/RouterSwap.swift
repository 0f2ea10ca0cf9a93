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

/// `swap`: every replica moves to one generation behind the gate that holds reads, or, when any shard
/// did not, the replicas that moved are asked to move back (rollback) and the router keeps its generation
/// (docs/scaling.md "Generations across machines"). One swap at a time (`swapping`).
extension Router {
    // MARK: swap

    enum SwapOutcome: Sendable {
        case swapped(generation: String, previous: String)
        case failed(String)
        /// The replica refused the swap as a bad request (path, generation, checkpoint, key).
        case refused(SteerError)
        case skipped
    }



    static func swapLine(generation: String, checkpoint: String?, collection: String?, token: String?) -> [UInt8] {
        RequestEncoder.encode(Request(operation: .swap(generation: generation, checkpoint: checkpoint), token: token, collection: collection))
    }

    /// Swaps every replica to `target` while reads are held; the router switches only when every shard
    /// has at least one replica on the new generation and all of them name the same one. Otherwise the
    /// replicas that swapped are asked to swap back and the router keeps its generation.
    ///
    /// With `collection` the shards swap that collection the same way (all or rolled back); the router's
    /// own generation and model (the default collection's) stay as they are.
    func swap(to target: String, checkpoint: String?, collection: String?, token: String?, _ writer: inout JSONWriter) async throws {
        try beginSwap()
        defer { swapping.withLock { $0 = false } }
        let newEncoder = collection == nil ? try await swapEncoder(checkpoint) : nil
        await gate.close()
        defer { gate.open() }
        let previousGeneration = generation.get()
        let token = shardToken(token)
        let line = Self.swapLine(generation: target, checkpoint: checkpoint, collection: collection, token: token)
        let timeout = TimeAmount.seconds(Int64(configuration.swapTimeoutSeconds))
        var outcomes: [(Replica, SwapOutcome)] = []
        await withTaskGroup(of: (Replica, SwapOutcome).self) { tasks in
            for replica in replicas.joined() {
                tasks.addTask {
                    let health = replica.health.get()
                    guard health.up, !health.diverged else { return (replica, .skipped) }
                    do {
                        let answer = try await replica.request(line, timeout: timeout)
                        guard case .string(let name)? = answer["generation"] else { return (replica, .failed("no generation in the answer")) }
                        var previous = ""
                        if case .string(let text)? = answer["previous"] { previous = text }
                        return (replica, .swapped(generation: name, previous: previous))
                    } catch let error as SteerError where Self.requestErrors.contains(error.code) {
                        return (replica, .refused(error))
                    } catch {
                        return (replica, .failed(Self.describe(error)))
                    }
                }
            }
            for await outcome in tasks { outcomes.append(outcome) }
        }
        outcomes.sort { ($0.0.shard, $0.0.endpoint.description) < ($1.0.shard, $1.0.endpoint.description) }
        var names = Set<String>()
        var shardsSwapped = Set<Int>()
        var refusal: SteerError?
        for (replica, outcome) in outcomes {
            if case .swapped(let name, _) = outcome {
                names.insert(name)
                shardsSwapped.insert(replica.shard)
                if collection == nil { replica.health.withLock { $0.generation = name } }
            }
        }
        let committed = names.count == 1 && shardsSwapped.count == replicas.count
        if committed, let name = names.first, collection != nil {
            logger.info("swapped a collection on every shard", metadata: ["steer.collection": "\(collection ?? "")", "steer.generation": "\(name)"])
        } else if committed, let name = names.first {
            generation.withLock { $0 = name }
            if let newEncoder { encoder.withLock { $0 = newEncoder } }
            counters.withLock { $0.swaps += 1 }
            logger.info("swapped every shard", metadata: ["steer.generation": "\(name)", "steer.previous": "\(previousGeneration ?? "none")"])
        } else {
            // Roll back the replicas that moved, each to the generation it left.
            for (replica, outcome) in outcomes {
                guard case .swapped(_, let previous) = outcome, !previous.isEmpty else { continue }
                do {
                    let answer = try await replica.request(Self.swapLine(generation: previous, checkpoint: nil, collection: collection, token: token), timeout: timeout)
                    if collection == nil, case .string(let name)? = answer["generation"] { replica.health.withLock { $0.generation = name } }
                } catch {
                    logger.error("swap rollback failed; the replica is not routed to until it serves the router's generation", metadata: [
                        "steer.replica": "\(replica.endpoint)", "steer.error": "\(Self.describe(error))",
                    ])
                }
            }
            let failures = outcomes.compactMap { replica, outcome -> String? in
                switch outcome {
                case .failed(let message): return "shard \(replica.shard) \(replica.endpoint): \(message)"
                case .refused(let error): return "shard \(replica.shard) \(replica.endpoint): \(error)"
                case .skipped: return "shard \(replica.shard) \(replica.endpoint): down"
                case .swapped: return nil
                }
            }
            // Every replica that answered refused the request itself: the caller gets that answer.
            let refusals = outcomes.compactMap { _, outcome -> SteerError? in
                if case .refused(let error) = outcome { return error }
                return nil
            }
            let answered = outcomes.filter { if case .skipped = $0.1 { return false } else { return true } }.count
            if !refusals.isEmpty, refusals.count == answered, Set(refusals.map(\.code)).count == 1 {
                refusal = SteerError(refusals[0].code, "swap refused by every shard: \(refusals[0].message)")
            }
            if names.count > 1 { refusal = SteerError(.unavailable, "swap: replicas named different generations (\(names.sorted().joined(separator: ", "))); rolled back") }
            throw refusal ?? SteerError(.unavailable, "swap: not every shard loaded '\(target)' (\(failures.joined(separator: "; "))); rolled back, the router keeps \(previousGeneration ?? "its generation")")
        }
        if let collection {
            writer.raw(",\"collection\":")
            writer.string(collection)
        }
        writer.raw(",\"generation\":")
        writer.string(names.first ?? target)
        writer.raw(",\"previous\":")
        if collection != nil {
            let previous = outcomes.lazy.compactMap { _, outcome -> String? in
                if case .swapped(_, let previous) = outcome { return previous }
                return nil
            }.first
            if let previous { writer.string(previous) } else { writer.raw("null") }
        } else if let previousGeneration { writer.string(previousGeneration) } else { writer.raw("null") }
        writer.raw(",\"replicas\":[")
        for (index, (replica, outcome)) in outcomes.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.raw("{\"shard\":")
            writer.int(replica.shard)
            writer.raw(",\"address\":")
            writer.string(replica.endpoint.description)
            switch outcome {
            case .swapped: writer.raw(",\"swapped\":true")
            case .failed(let message):
                writer.raw(",\"swapped\":false,\"error\":")
                writer.string(message)
            case .refused(let error):
                writer.raw(",\"swapped\":false,\"error\":")
                writer.string(error.description)
            case .skipped: writer.raw(",\"swapped\":false,\"error\":\"down\"")
            }
            writer.raw("}")
        }
        writer.raw("]")
    }

    /// Marks a swap as running (either kind: one at a time per router); the caller clears `swapping`.
    ///
    /// - Throws: `.unavailable` while another swap runs.
    func beginSwap() throws(SteerError) {
        let already = swapping.withLock { value -> Bool in
            defer { value = true }
            return value
        }
        if already { throw SteerError(.unavailable, "a swap is already in progress") }
    }

    /// The query encoder of a swap's `checkpoint` (nil without one), loaded off the event loop.
    ///
    /// - Throws: `.invalidRequest` when the router has no model to load it with; the loader's errors.
    func swapEncoder(_ checkpoint: String?) async throws -> (any QueryEncoder)? {
        guard let checkpoint else { return nil }
        guard let loadEncoder else {
            throw SteerError.invalid("swap: this router was started without a model (--checkpoint), so it cannot load checkpoint '\(checkpoint)'")
        }
        return try await pool.runIfActive { () throws -> any QueryEncoder in try loadEncoder(checkpoint) }
    }
}
