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

/// Reads (`search`, `recommend`, `encode`, `get`): one replica of every shard asked, failover to the
/// next readable replica (docs/scaling.md "Failures"), partial answers with `missing_shards`. Two paths
/// share the failover rules (`readFailure`, `servesRouterGeneration`): `read(shard:...)` on tasks and the
/// search fast path `attempt(shard:...)` with futures on the client's event loop. Every read is answered
/// by shards of one generation (the gate holds reads during a swap).
extension Router {
    // MARK: Reading from shards

    /// What one shard contributed to a read.
    enum ShardAnswer: Sendable {
        case answer(JSONObject)
        /// The shard refused the request itself (the request's fault): the whole request fails with it.
        case refused(SteerError)
        /// No replica of the shard answered.
        case missing
    }

    /// The replicas of `shard` that may serve reads now: up, not diverged, on the router's generation;
    /// rotated so that load spreads over them.
    ///
    /// Replicas that are up but were last seen on another generation come last: their answer is checked
    /// anyway, and a health check that read a replica's generation just before a swap moved it must not
    /// turn a shard into a missing one.
    func readable(_ shard: Int) -> [Replica] {
        let expected = generation.get()
        var candidates: [Replica] = []
        var lastResort: [Replica] = []
        for replica in replicas[shard] {
            let health = replica.health.get()
            guard health.up, !health.diverged else { continue }
            if expected == nil || health.generation == nil || health.generation == expected {
                candidates.append(replica)
            } else {
                lastResort.append(replica)
            }
        }
        guard candidates.count > 1 else { return candidates + lastResort }
        let start = roundRobin.withLock { table in
            defer { table[shard] &+= 1 }
            return table[shard]
        }
        let offset = start % candidates.count
        return Array(candidates[offset...] + candidates[..<offset]) + lastResort
    }

    /// Records the generation an answer names for its replica; false (the answer must not be used) when
    /// it is not the router's.
    func servesRouterGeneration(_ replica: Replica, _ answer: JSONObject) -> Bool {
        guard case .string(let served)? = answer["generation"] else { return true }
        replica.health.withLock { health in
            if health.generation != served { health.generation = served }
        }
        guard let expected = generation.get(), served != expected else { return true }
        counters.withLock { $0.generationMismatches += 1 }
        logger.warning("replica serves another generation; not routed to", metadata: [
            "steer.replica": "\(replica.endpoint)", "steer.generation": "\(served)", "steer.router_generation": "\(expected)",
        ])
        return false
    }

    /// What a failed attempt on one replica means for the read (see the type's "Failures"): nil → try
    /// the next replica (after a transport failure the replica is marked down first).
    func readFailure(_ error: any Error, replica: Replica, deadline: Deadline) -> ShardAnswer? {
        if let steer = error as? SteerError { return .refused(steer) }
        let failure = error as? ReplicaFailure ?? ReplicaFailure(.transport, message: "\(error)")
        switch failure.kind {
        case .timeout:
            return .refused(deadline.exceeded("shard \(replica.shard) (\(replica.endpoint))"))
        case .tooLarge:
            return .refused(SteerError(.tooLarge, "shard \(replica.shard)'s answer is too large: \(failure.message); ask for fewer results (k, vectors)"))
        case .transport:
            replica.markDown(failure.message)
        case .retired, .answered:
            break
        }
        counters.withLock { $0.replicaRetries += 1 }
        logger.warning("replica failed; trying another", metadata: ["steer.replica": "\(replica.endpoint)", "steer.error": "\(failure.message)"])
        return nil
    }

    /// Sends a read to one replica of `shard`, trying the next one after a transport failure, an error
    /// that blames the replica, or an answer from another generation than the router's.
    func read(shard: Int, line: [UInt8], token: String?, deadline: Deadline) async -> ShardAnswer {
        if let wanted = deadline.minSequences?[shard], wanted > 0 {
            return await readApplied(wanted, shard: shard, line: line, token: token, deadline: deadline)
        }
        for replica in readable(shard) {
            guard let left = deadline.remainingMillis else { return .refused(deadline.exceeded("shard \(shard)")) }
            do {
                let answer = try await replica.request(Self.shardLine(line, token: token, timeoutMillis: left, fairQueue: deadline.fairQueue), timeout: .milliseconds(Int64(left)))
                guard deadline.collection != nil || servesRouterGeneration(replica, answer) else { continue }
                return .answer(answer)
            } catch {
                if let answer = readFailure(error, replica: replica, deadline: deadline) { return answer }
            }
        }
        return .missing
    }

    /// Reads from several shards in parallel (each shard its own line).
    ///
    /// - Returns: the answers by shard and the shards that had no replica to answer, ascending.
    /// - Throws: the first refusal (the request's own error); `.unavailable` when no shard answered or
    ///   the answers name different generations.
    func readShards(_ lines: [Int: [UInt8]], token: String?, deadline: Deadline, allowPartial: Bool) async throws -> (answers: [Int: JSONObject], missing: [Int]) {
        var results: [(Int, ShardAnswer)] = []
        let token = shardToken(token)
        await withTaskGroup(of: (Int, ShardAnswer).self) { tasks in
            for (shard, line) in lines {
                tasks.addTask { (shard, await self.read(shard: shard, line: line, token: token, deadline: deadline)) }
            }
            for await result in tasks { results.append(result) }
        }
        return try collate(results, allowPartial: allowPartial)
    }

    /// The shards' answers to one request, checked: the first refusal is thrown; missing shards are
    /// allowed only with `allowPartial` and while some shard answered; all answers name one generation.
    func collate(_ results: [(Int, ShardAnswer)], allowPartial: Bool) throws -> (answers: [Int: JSONObject], missing: [Int]) {
        var answers: [Int: JSONObject] = [:]
        var missing: [Int] = []
        var refusal: SteerError?
        for (shard, answer) in results {
            switch answer {
            case .answer(let object): answers[shard] = object
            case .refused(let error): if refusal == nil { refusal = error }
            case .missing: missing.append(shard)
            }
        }
        if let refusal { throw refusal }
        missing.sort()
        if !missing.isEmpty {
            guard allowPartial, !answers.isEmpty else {
                throw SteerError(.unavailable, "no replica of shard\(missing.count == 1 ? "" : "s") \(missing.map(String.init).joined(separator: ", ")) is available")
            }
        }
        try Self.requireOneCollection(answers.values)
        var served = Set<String>()
        for answer in answers.values { if case .string(let name)? = answer["generation"] { served.insert(name) } }
        if served.count > 1 {
            counters.withLock { $0.generationMismatches += 1 }
            throw SteerError(.unavailable, "shards answered from different generations (\(served.sorted().joined(separator: ", "))); retry once the swap has finished")
        }
        return (answers, missing)
    }

    func writePartial(_ missing: [Int], _ writer: inout JSONWriter) {
        guard !missing.isEmpty else { return }
        counters.withLock { $0.partialResponses += 1 }
        writer.raw(",\"partial\":true,\"missing_shards\":[")
        for (index, shard) in missing.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.int(shard)
        }
        writer.raw("]")
    }

    func writeGeneration(_ answers: [Int: JSONObject], _ writer: inout JSONWriter) {
        Self.writeCollection(answers.values, &writer)
        let name: String? = answers.values.lazy.compactMap { answer -> String? in
            if case .string(let text)? = answer["generation"] { return text }
            return nil
        }.first ?? generation.get()
        guard let name else { return }
        writer.raw(",\"generation\":")
        writer.string(name)
    }

    // MARK: search

    /// A shard `search` line: base64 vectors (cheap to write and to parse), the options unchanged.
    static func searchLine(_ queries: [[Float]], k: Int, nprobe: Int?, efSearch: Int?, filter: TagFilter, batch: Bool,
                           oversample: Int? = nil, collection: String? = nil) -> [UInt8] {
        var options = SearchOptions(k: k, nprobe: nprobe, efSearch: efSearch, filter: filter)
        options.oversample = oversample
        return RequestEncoder.encode(Request(operation: .search(queries: queries, options: options, batch: batch), collection: collection))
    }

    func allShards(_ line: [UInt8]) -> [Int: [UInt8]] {
        var lines: [Int: [UInt8]] = [:]
        for shard in 0..<replicas.count { lines[shard] = line }
        return lines
    }

    func search(_ queries: [[Float]], options: SearchOptions, batch: Bool, token: String?, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        await gate.enter()
        defer { gate.leave() }
        let deadline = deadline.afterGate()
        let line = Self.searchLine(queries, k: options.k, nprobe: options.nprobe, efSearch: options.efSearch, filter: options.filter, batch: batch,
                                   oversample: options.oversample, collection: deadline.collection)
        let (answers, missing) = try await readShards(allShards(line), token: token, deadline: deadline, allowPartial: true)
        try writeSearch(answers: answers, missing: missing, queries: queries.count, k: options.k, batch: batch, &writer)
    }

    /// The search fast path: the fan-out, the shards' answers, the merge and the response all run on the
    /// client connection's event loop, over connections that live on it (no thread hops). A replica that
    /// has no connection on this loop yet connects first; failover is the same as `read(shard:line:)`.
    func searchOnLoop(_ request: Request, queries: [[Float]], options: SearchOptions, batch: Bool,
                              startedNanos: UInt64, client: UInt64, on loop: any EventLoop) -> EventLoopFuture<[UInt8]> {
        let line = Self.searchLine(queries, k: options.k, nprobe: options.nprobe, efSearch: options.efSearch, filter: options.filter, batch: batch,
                                   oversample: options.oversample, collection: request.collection)
        let deadline = Deadline(request: request, startedNanos: startedNanos, configuration: configuration, client: client)
        let token = shardToken(request.token)
        let futures = (0..<replicas.count).map { shard in
            attempt(shard: shard, line: line, token: token, deadline: deadline, candidates: readable(shard), index: 0, on: loop)
        }
        return EventLoopFuture.whenAllSucceed(futures, on: loop).map { results in
            self.gate.leave()
            var output: [UInt8]
            var failure: SteerError.Code?
            do {
                let (answers, missing) = try self.collate(results, allowPartial: true)
                var writer = JSONWriter(capacity: 512)
                writer.raw("{")
                writer.requestIDField(request.id)
                writer.raw("\"ok\":true")
                try self.writeSearch(answers: answers, missing: missing, queries: queries.count, k: options.k, batch: batch, &writer)
                writer.raw("}\n")
                try self.requireRoom(writer.bytes)
                output = writer.bytes
            } catch {
                let steer = error as? SteerError ?? SteerError.internalError(Self.describe(error))
                failure = steer.code
                output = RequestHandler.errorLine(id: request.id, steer)
            }
            let micros = Double(DispatchTime.now().uptimeNanoseconds &- startedNanos) / 1000
            self.stats.record(op: "search", micros: micros, error: failure)
            return output
        }
    }

    /// One shard's answer on `loop`: `candidates[index]`, then the next on failure (as `read`).
    func attempt(shard: Int, line: [UInt8], token: String?, deadline: Deadline, candidates: [Replica], index: Int,
                         on loop: any EventLoop) -> EventLoopFuture<(Int, ShardAnswer)> {
        guard index < candidates.count else { return loop.makeSucceededFuture((shard, .missing)) }
        guard let left = deadline.remainingMillis else { return loop.makeSucceededFuture((shard, .refused(deadline.exceeded("shard \(shard)")))) }
        let replica = candidates[index]
        let promise = loop.makePromise(of: (Int, ShardAnswer).self)
        let next: @Sendable () -> EventLoopFuture<(Int, ShardAnswer)> = {
            self.attempt(shard: shard, line: line, token: token, deadline: deadline, candidates: candidates, index: index + 1, on: loop)
        }
        replica.request(Self.shardLine(line, token: token, timeoutMillis: left, fairQueue: deadline.fairQueue), timeout: .milliseconds(Int64(left)), on: loop).whenComplete { result in
            switch result {
            case .success(let answer):
                if deadline.collection != nil || self.servesRouterGeneration(replica, answer) {
                    promise.succeed((shard, .answer(answer)))
                } else {
                    promise.completeWith(next())
                }
            case .failure(let error):
                if let answer = self.readFailure(error, replica: replica, deadline: deadline) {
                    promise.succeed((shard, answer))
                } else {
                    promise.completeWith(next())
                }
            }
        }
        return promise.futureResult
    }

    func writeSearch(answers: [Int: JSONObject], missing: [Int], queries: Int, k: Int, batch: Bool, _ writer: inout JSONWriter) throws {
        var merged: [[ShardHit]] = []
        for query in 0..<queries {
            var lists: [[ShardHit]] = []
            for (shard, answer) in answers {
                if batch {
                    guard case .array(let results)? = answer["results"], results.count == queries else {
                        throw SteerError.internalError("shard \(shard) answered a batch search without \(queries) results")
                    }
                    lists.append(try ShardHit.list(results[query], shard: shard))
                } else {
                    lists.append(try ShardHit.list(answer["hits"], shard: shard))
                }
            }
            merged.append(HitMerge.top(lists, k: k))
        }
        writeGeneration(answers, &writer)
        if batch {
            writer.raw(",\"results\":[")
            for (index, hits) in merged.enumerated() {
                if index > 0 { writer.raw(",") }
                Self.writeHits(hits, &writer)
            }
            writer.raw("]")
        } else {
            writer.raw(",\"hits\":")
            Self.writeHits(merged[0], &writer)
        }
        writePartial(missing, &writer)
    }

    static func writeHits(_ hits: [ShardHit], _ writer: inout JSONWriter) {
        writer.raw("[")
        for (index, hit) in hits.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.value(hit.object)
        }
        writer.raw("]")
    }

    // MARK: recommend and encode

    /// Encodes a history and prompt: with the router's model, or as the mean of the history items'
    /// vectors read from their shards (what `MeanHistoryEncoder` does on a single server).
    func encodeQuery(_ request: RecommendRequest, token: String?, deadline: Deadline) async throws -> EncodedQuery {
        if !request.positive.isEmpty || !request.negative.isEmpty {
            throw SteerError.invalid("'positive' and 'negative' are not supported by steer route: ask a shard server")
        }
        // The router's model is the default collection's; a named collection's query is the mean of its
        // history items' vectors (docs/scaling.md "Collections").
        if deadline.collection == nil, let encoder = encoder.get() {
            let history = request.history
            let prompt = request.prompt
            return try await pool.runIfActive { () throws -> EncodedQuery in try encoder.encode(history: history, prompt: prompt) }
        }
        guard !request.history.isEmpty else {
            throw SteerError.invalid("history must not be empty (this generation has no model that can answer a prompt alone)")
        }
        let found = try await getItems(request.history, token: token, deadline: deadline)
        var vectors: [[Float]] = []
        var unknown: [ItemID] = []
        for id in request.history {
            if let vector = found[id].flatMap({ Self.floats($0["vector"]) }) {
                vectors.append(vector)
            } else {
                unknown.append(id)
            }
        }
        let mean = try MeanHistoryEncoder.mean(of: vectors, historyCount: request.history.count)
        return EncodedQuery(vector: mean, baseVector: mean, clauses: [], unknownHistory: unknown)
    }

    /// A vector as a shard wrote it (an array of numbers); nil for anything else.
    static func floats(_ value: JSONValue?) -> [Float]? {
        switch value {
        case .floats(let values)?: return values
        case .array(let elements)?:
            var values: [Float] = []
            values.reserveCapacity(elements.count)
            for element in elements {
                switch element {
                case .int(let number): values.append(Float(number))
                case .double(let number): values.append(Float(number))
                default: return nil
                }
            }
            return values
        default: return nil
        }
    }

    func recommend(_ request: RecommendRequest, token: String?, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        await gate.enter()
        defer { gate.leave() }
        let deadline = deadline.afterGate()
        let encoded = try await encodeQuery(request, token: token, deadline: deadline)
        var filter = request.filter
        if request.constraints != .soft {
            for clause in encoded.clauses where !clause.tags.isEmpty {
                switch clause.polarity {
                case .positive: filter.tagGroups.append(clause.tags)
                case .negative: filter.tagsNone.append(contentsOf: clause.tags)
                }
            }
        }
        var excluded = Set<ItemID>()
        if request.excludeHistory {
            let unknown = Set(encoded.unknownHistory)
            for id in request.history + request.seen where !unknown.contains(id) { excluded.insert(id) }
        }
        // Each shard returns k + |history| so that k remain after the history is dropped (a single server
        // over-fetches the same way); the union of the shards' lists holds the global top.
        let fetch = min(configuration.limits.maxK, request.k + excluded.count)
        let vector = request.constraints == .hard ? encoded.baseVector : encoded.vector
        let line = Self.searchLine([vector], k: fetch, nprobe: request.nprobe, efSearch: request.efSearch, filter: filter, batch: false,
                                   oversample: request.oversample, collection: deadline.collection)
        let (answers, missing) = try await readShards(allShards(line), token: token, deadline: deadline, allowPartial: true)
        var lists: [[ShardHit]] = []
        for (shard, answer) in answers { lists.append(try ShardHit.list(answer["hits"], shard: shard)) }
        let hits = HitMerge.top(lists, k: request.k, excluding: excluded)
        writeGeneration(answers, &writer)
        writer.raw(",\"hits\":")
        Self.writeHits(hits, &writer)
        writer.clausesField(encoded.clauses)
        writer.unknownHistoryField(encoded.unknownHistory)
        writePartial(missing, &writer)
    }

    func encode(_ request: RecommendRequest, token: String?, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        await gate.enter()
        defer { gate.leave() }
        let deadline = deadline.afterGate()
        let encoded = try await encodeQuery(request, token: token, deadline: deadline)
        writer.raw(",\"collection\":")
        writer.string(deadline.collection ?? CollectionName.defaultName)
        if deadline.collection == nil, let name = generation.get() {
            writer.raw(",\"generation\":")
            writer.string(name)
        }
        writer.raw(",\"vector\":")
        writer.floats(request.constraints == .hard ? encoded.baseVector : encoded.vector)
        writer.clausesField(encoded.clauses)
        writer.unknownHistoryField(encoded.unknownHistory)
    }

    // MARK: get

    /// Positions of `keys` grouped by owning shard, in input order.
    func byShard(_ keys: [ItemID]) -> [Int: [Int]] {
        var groups: [Int: [Int]] = [:]
        for (index, id) in keys.enumerated() { groups[sharding.shard(of: id), default: []].append(index) }
        return groups
    }

    /// The items each id names, read from their shards (every shard must answer).
    func getItems(_ ids: [ItemID], token: String?, deadline: Deadline) async throws -> [ItemID: JSONObject] {
        try await getItemsNamingCollection(ids, token: token, deadline: deadline).items
    }

    /// The items each id names and the collection the shards read them from (nil when no shard was asked).
    func getItemsNamingCollection(_ ids: [ItemID], token: String?, deadline: Deadline) async throws -> (items: [ItemID: JSONObject], collection: String?) {
        var lines: [Int: [UInt8]] = [:]
        for (shard, indices) in byShard(ids) { lines[shard] = RequestEncoder.encode(Request(operation: .get(indices.map { ids[$0] }), collection: deadline.collection)) }
        let (answers, _) = try await readShards(lines, token: token, deadline: deadline, allowPartial: false)
        var found: [ItemID: JSONObject] = [:]
        for (shard, answer) in answers {
            guard case .array(let items)? = answer["items"] else {
                if case .floats(let empty)? = answer["items"], empty.isEmpty { continue }
                throw SteerError.internalError("shard \(shard) answered get without an items array")
            }
            for item in items {
                guard case .object(let object) = item else { continue }
                switch object["id"] {
                case .int(let number)?: found[.int(number)] = object
                case .string(let text)?: found[.string(text)] = object
                default: continue
                }
            }
        }
        return (found, Self.collectionName(answers.values))
    }

    func get(_ ids: [ItemID], token: String?, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        let (found, collection) = try await getItemsNamingCollection(ids, token: token, deadline: deadline)
        writer.raw(",\"collection\":")
        writer.string(collection ?? deadline.collection ?? CollectionName.defaultName)
        writer.raw(",\"items\":[")
        var first = true
        for id in ids {
            guard let item = found[id] else { continue }
            if !first { writer.raw(",") }
            first = false
            writer.value(.object(item))
        }
        writer.raw("],\"missing\":[")
        first = true
        for id in ids where found[id] == nil {
            if !first { writer.raw(",") }
            first = false
            writer.itemID(id)
        }
        writer.raw("]")
    }
}
