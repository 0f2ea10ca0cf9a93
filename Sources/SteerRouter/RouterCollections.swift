import NIOCore
import SteerCore
import SteerProtocol

/// Collections through the router (docs/scaling.md "Collections"): the collection admin ops fanned out
/// to every replica of every shard, `list_collections`/`describe_collection` read from one live replica
/// per shard and compared, `stats` of a named collection summed over the shards, and the checks that
/// the shards' answers to one request name one collection.
///
/// - Applying (`create_collection`, `drop_collection`, `alias`, `delete_alias`): each replica answers on
///   its own; there is no cross-shard transaction. A replica where the op is already in force counts as
///   applied (`create_collection` of a collection that exists with the same settings, `drop_collection`/
///   `delete_alias` of a name that is absent there, `alias` to the target it already has), so the same
///   request can be retried until every replica applied it. When some replicas applied it and others did
///   not, the answer is `partially_applied` naming each replica that did not and why.
/// - `alias` and `delete_alias` run behind the swap gate (reads held until every replica answered), so a
///   search never merges shards that resolved the alias differently; a read that still sees two
///   collections (a `get`, a write, a move made on the shards directly) is refused `unavailable`.
/// - Threading: called from `Router.run` on the task executor; no state of its own.
extension Router {
    /// What one replica did with a collection admin op.
    enum AdminOutcome: Sendable {
        /// It applied the op; its answer.
        case applied(JSONObject)
        /// The op was already in force there (`existed`, `absent`).
        case inForce(String)
        case refused(SteerError)
        case failed(String)
    }

    /// Runs `create_collection`, `drop_collection`, `alias` or `delete_alias` on every replica of every shard.
    ///
    /// - Throws: the replicas' common refusal when none applied it; `.unavailable` when none applied it and
    ///   they failed differently; `.partiallyApplied` naming the replicas that did not apply it when others
    ///   did; `.unavailable` when a swap or another alias move is running.
    func applyCollectionAdmin(_ request: Request, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        if case .createCollection(let settings) = request.operation, settings.checkpoint != nil {
            // Each shard would ingest the checkpoint's whole item table, not its share of it.
            throw SteerError.invalid("create_collection with 'checkpoint' is not routed: every shard would ingest all of the checkpoint's items; create the collection with 'dimension' and write its items through the router (docs/scaling.md \"Collections\")")
        }
        var gated = false
        switch request.operation {
        case .alias, .deleteAlias:
            let already = swapping.withLock { value -> Bool in
                defer { value = true }
                return value
            }
            if already { throw SteerError(.unavailable, "\(request.operation.name): a swap or alias change is already in progress; retry") }
            await gate.close()
            gated = true
        default:
            break
        }
        defer {
            if gated {
                gate.open()
                swapping.withLock { $0 = false }
            }
        }
        guard let left = deadline.remainingMillis else { throw deadline.exceeded("\(request.operation.name): no shard") }
        let timeout = TimeAmount.milliseconds(Int64(left))
        let token = shardToken(request.token)
        let line = Self.shardLine(RequestEncoder.encode(Request(operation: request.operation)), token: token, timeoutMillis: left, fairQueue: deadline.fairQueue)
        // What a replica that answers `already_exists` to a create is asked next.
        var describeLine: [UInt8] = []
        if case .createCollection(let settings) = request.operation {
            describeLine = Self.shardLine(RequestEncoder.encode(Request(operation: .describeCollection(settings.name))), token: token,
                                          timeoutMillis: left, fairQueue: deadline.fairQueue)
        }
        let operation = request.operation
        var outcomes: [(Replica, AdminOutcome)] = []
        await withTaskGroup(of: (Replica, AdminOutcome).self) { tasks in
            for replica in replicas.joined() {
                tasks.addTask { [describeLine] in
                    (replica, await self.applyOn(replica, operation: operation, line: line, describeLine: describeLine, timeout: timeout))
                }
            }
            for await outcome in tasks { outcomes.append(outcome) }
        }
        outcomes.sort { ($0.0.shard, $0.0.endpoint.description) < ($1.0.shard, $1.0.endpoint.description) }
        let name = operation.name
        var firstAnswer: JSONObject?
        var inForce = 0
        var problems: [(Replica, SteerError?, String)] = []
        for (replica, outcome) in outcomes {
            switch outcome {
            case .applied(let answer): if firstAnswer == nil { firstAnswer = answer }
            case .inForce: inForce += 1
            case .refused(let error): problems.append((replica, error, error.description))
            case .failed(let message): problems.append((replica, nil, message))
            }
        }
        let listing = problems.map { replica, _, message in "shard \(replica.shard) \(replica.endpoint): \(message)" }.joined(separator: "; ")
        if firstAnswer == nil, inForce == 0 {
            // Nothing changed anywhere: the replicas' own refusal when those that answered agree on it.
            let refusals = problems.compactMap(\.1)
            if let error = refusals.first, Set(refusals.map(\.code)).count == 1 {
                let unreachable = problems.count - refusals.count
                throw SteerError(error.code, "\(name) refused by \(unreachable == 0 ? "every shard replica" : "every shard replica that answered (\(unreachable) did not)"): \(error.message)")
            }
            throw SteerError(.unavailable, "\(name) was applied by no shard replica (\(listing))")
        }
        if !problems.isEmpty {
            let applied = outcomes.filter { if case .refused = $0.1 { false } else if case .failed = $0.1 { false } else { true } }
            throw SteerError(.partiallyApplied, "\(name) was applied by \(applied.count) of \(outcomes.count) shard replicas; not by: \(listing). "
                + "Retry the same request once they are reachable (replicas where it is in force count as applied), or undo it on the others (docs/scaling.md \"Collections\")")
        }
        if firstAnswer == nil {
            switch operation {
            case .dropCollection(let target): throw SteerError.notFound("collection '\(target)' does not exist on any shard")
            case .deleteAlias(let alias): throw SteerError.notFound("alias '\(alias)' does not exist on any shard")
            default: break
            }
        }
        if let firstAnswer {
            for field in firstAnswer.fields where !["id", "ok", "items", "indexed"].contains(field.key) {
                writer.raw(",")
                writer.string(field.key)
                writer.raw(":")
                writer.value(field.value)
            }
        } else if case .createCollection(let settings) = operation {
            writer.raw(",\"name\":")
            writer.string(settings.name)
        }
        writer.raw(",\"replicas\":[")
        for (index, (replica, outcome)) in outcomes.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.raw("{\"shard\":")
            writer.int(replica.shard)
            writer.raw(",\"address\":")
            writer.string(replica.endpoint.description)
            writer.raw(",\"result\":")
            if case .inForce(let how) = outcome { writer.string(how) } else { writer.string("applied") }
            writer.raw("}")
        }
        writer.raw("]")
    }

    /// One replica's outcome of a collection admin op, with the retry rules of the type's "Applying".
    private func applyOn(_ replica: Replica, operation: Request.Operation, line: [UInt8], describeLine: [UInt8], timeout: TimeAmount) async -> AdminOutcome {
        do {
            return .applied(try await replica.request(line, timeout: timeout))
        } catch let error as SteerError {
            switch (operation, error.code) {
            case (.dropCollection, .notFound), (.deleteAlias, .notFound):
                return .inForce("absent")
            case (.createCollection(let settings), .alreadyExists):
                return await Self.sameCollection(settings, on: replica, describeLine: describeLine, timeout: timeout) ? .inForce("existed") : .refused(error)
            default:
                return .refused(error)
            }
        } catch {
            if let failure = error as? ReplicaFailure, failure.kind == .transport { replica.markDown(failure.message) }
            return .failed(Self.describe(error))
        }
    }

    /// Whether `replica` holds a collection (not an alias) named as `settings` says, with every setting
    /// the request gave; false when it cannot tell.
    private static func sameCollection(_ settings: CollectionSettings, on replica: Replica, describeLine: [UInt8], timeout: TimeAmount) async -> Bool {
        guard let answer = try? await replica.request(describeLine, timeout: timeout) else { return false }
        func text(_ key: String) -> String? {
            if case .string(let value)? = answer[key] { return value }
            return nil
        }
        guard text("name") == settings.name else { return false }
        if let dimension = settings.dimension, answer["dimension"] != .int(Int64(dimension)) { return false }
        if let metric = settings.metric, text("metric") != metric.rawValue { return false }
        if let spec = settings.indexSpec, text("index_spec") != spec { return false }
        if let version = settings.embeddingVersion, text("embedding_version") != version { return false }
        if settings.checkpoint != nil, text("checkpoint") == nil { return false }
        return true
    }

    /// `list_collections` or `describe_collection` from one live replica per shard, the shards compared.
    ///
    /// - Throws: a shard's refusal other than `not_found`; `not_found` when every shard that answered
    ///   says so; `.unavailable` when no shard answered.
    func readCollectionAdmin(_ request: Request, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        var deadline = deadline
        var describing: String?
        if case .describeCollection(let name) = request.operation {
            describing = name
            // The answer carries the collection's generation, not the router's.
            deadline.collection = name
        }
        let line = RequestEncoder.encode(Request(operation: request.operation))
        let token = shardToken(request.token)
        var results: [Int: ShardAnswer] = [:]
        await withTaskGroup(of: (Int, ShardAnswer).self) { tasks in
            for shard in 0..<replicas.count {
                tasks.addTask { [deadline] in (shard, await self.read(shard: shard, line: line, token: token, deadline: deadline)) }
            }
            for await (shard, answer) in tasks { results[shard] = answer }
        }
        var answers: [(Int, JSONObject)] = []
        var missing: [Int] = []
        var absent: [(Int, SteerError)] = []
        for shard in 0..<replicas.count {
            switch results[shard] ?? .missing {
            case .answer(let object): answers.append((shard, object))
            case .missing: missing.append(shard)
            case .refused(let error) where error.code == .notFound && describing != nil: absent.append((shard, error))
            case .refused(let error): throw error
            }
        }
        if answers.isEmpty {
            if let (_, error) = absent.first { throw error }
            throw SteerError(.unavailable, "no replica of any shard answered \(request.operation.name)")
        }
        var inconsistencies: [String] = []
        if describing != nil {
            for (shard, error) in absent { inconsistencies.append("shard \(shard): \(error.message)") }
            Self.writeMerged(answers, inconsistencies: &inconsistencies, &writer)
        } else {
            try Self.writeMergedList(answers, inconsistencies: &inconsistencies, &writer)
        }
        writer.raw(",\"consistent\":")
        writer.bool(inconsistencies.isEmpty)
        writer.raw(",\"inconsistencies\":")
        writer.strings(inconsistencies)
        writePartial(missing, &writer)
    }

    /// Fields of one collection as several shards describe it: settings from the first, `items` and
    /// `indexed` summed, `generation` when every shard names the same; differences go to `inconsistencies`.
    private static func writeMerged(_ descriptions: [(Int, JSONObject)], inconsistencies: inout [String], _ writer: inout JSONWriter) {
        guard let (firstShard, first) = descriptions.first else { return }
        let name: String
        if case .string(let text)? = first["name"] { name = text } else { name = "?" }
        for key in ["name", "dimension", "metric", "index_spec", "embedding_version", "generation", "aliases"] {
            for (shard, description) in descriptions.dropFirst() where description[key] != first[key] {
                inconsistencies.append("collection '\(name)': \(key) is \(render(description[key])) on shard \(shard), \(render(first[key])) on shard \(firstShard)")
            }
        }
        var items: Int64 = 0
        var indexed: Int64 = 0
        for (_, description) in descriptions {
            if case .int(let count)? = description["items"] { items += count }
            if case .int(let count)? = description["indexed"] { indexed += count }
        }
        for field in first.fields where !["id", "ok", "items", "indexed", "created_at"].contains(field.key) {
            writer.raw(",")
            writer.string(field.key)
            writer.raw(":")
            if field.key == "generation", descriptions.contains(where: { $0.1["generation"] != field.value }) {
                writer.raw("null")
            } else {
                writer.value(field.value)
            }
        }
        writer.raw(",\"items\":")
        writer.int(items)
        writer.raw(",\"indexed\":")
        writer.int(indexed)
    }

    /// `collections` and `aliases` of several shards' `list_collections` answers, merged by name.
    private static func writeMergedList(_ answers: [(Int, JSONObject)], inconsistencies: inout [String], _ writer: inout JSONWriter) throws {
        var byName: [String: [(Int, JSONObject)]] = [:]
        var order: [String] = []
        var aliases: [String: [(Int, JSONValue)]] = [:]
        for (shard, answer) in answers {
            guard case .array(let collections)? = answer["collections"], case .object(let pointers)? = answer["aliases"] ?? .object(JSONObject()) else {
                throw SteerError.internalError("shard \(shard) answered list_collections without 'collections' and 'aliases'")
            }
            for case .object(let description) in collections {
                guard case .string(let name)? = description["name"] else { continue }
                if byName[name] == nil { order.append(name) }
                byName[name, default: []].append((shard, description))
            }
            for field in pointers.fields { aliases[field.key, default: []].append((shard, field.value)) }
        }
        let shards = answers.map(\.0)
        writer.raw(",\"collections\":[")
        for (index, name) in order.enumerated() {
            let descriptions = byName[name] ?? []
            let lacking = shards.filter { shard in !descriptions.contains { $0.0 == shard } }
            if !lacking.isEmpty { inconsistencies.append("collection '\(name)' is missing on shard\(lacking.count == 1 ? "" : "s") \(lacking.map(String.init).joined(separator: ", "))") }
            if index > 0 { writer.raw(",") }
            // writeMerged writes ",field…": open the object with a field of our own.
            writer.raw("{\"shards\":")
            writer.int(descriptions.count)
            writeMerged(descriptions, inconsistencies: &inconsistencies, &writer)
            writer.raw("}")
        }
        writer.raw("],\"aliases\":{")
        for (index, alias) in aliases.keys.sorted().enumerated() {
            let targets = aliases[alias] ?? []
            let lacking = shards.filter { shard in !targets.contains { $0.0 == shard } }
            if !lacking.isEmpty { inconsistencies.append("alias '\(alias)' is missing on shard\(lacking.count == 1 ? "" : "s") \(lacking.map(String.init).joined(separator: ", "))") }
            if let (firstShard, first) = targets.first {
                for (shard, target) in targets.dropFirst() where target != first {
                    inconsistencies.append("alias '\(alias)' points at \(render(target)) on shard \(shard), \(render(first)) on shard \(firstShard)")
                }
                if index > 0 { writer.raw(",") }
                writer.string(alias)
                writer.raw(":")
                writer.value(first)
            }
        }
        writer.raw("}")
    }

    private static func render(_ value: JSONValue?) -> String {
        guard let value else { return "absent" }
        var writer = JSONWriter(capacity: 32)
        writer.value(value)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// `stats` of a named collection: every shard's, summed (`items`, `indexed`) with the settings of the
    /// first and each shard's counts under `shards`.
    func collectionStats(_ request: Request, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        let line = RequestEncoder.encode(Request(operation: .stats, collection: request.collection))
        var lines: [Int: [UInt8]] = [:]
        for shard in 0..<replicas.count { lines[shard] = line }
        let (answers, missing) = try await readShards(lines, token: request.token, deadline: deadline, allowPartial: true)
        let sorted = answers.sorted { $0.key < $1.key }
        Self.writeCollection(answers.values, &writer)
        var items: Int64 = 0
        var indexed: Int64 = 0
        for (_, answer) in sorted {
            if case .int(let count)? = answer["items"] { items += count }
            if case .int(let count)? = answer["indexed"] { indexed += count }
        }
        if let (_, first) = sorted.first {
            for key in ["generation", "embedding_version", "dimension", "metric", "index_spec"] {
                guard let value = first[key] else { continue }
                writer.raw(",")
                writer.string(key)
                writer.raw(":")
                writer.value(value)
            }
        }
        writer.raw(",\"items\":")
        writer.int(items)
        writer.raw(",\"indexed\":")
        writer.int(indexed)
        writer.raw(",\"shards\":[")
        for (index, (shard, answer)) in sorted.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.raw("{\"shard\":")
            writer.int(shard)
            for key in ["items", "indexed", "generation"] {
                guard let value = answer[key] else { continue }
                writer.raw(",")
                writer.string(key)
                writer.raw(":")
                writer.value(value)
            }
            writer.raw("}")
        }
        writer.raw("]")
        writePartial(missing, &writer)
    }

    /// The collection the shards' answers name (nil when none does).
    static func collectionName(_ answers: some Sequence<JSONObject>) -> String? {
        for answer in answers { if case .string(let name)? = answer["collection"] { return name } }
        return nil
    }

    /// Refuses answers to one request that name different collections (an alias moved between the
    /// shards' answers).
    ///
    /// - Throws: `.unavailable` naming the collections.
    static func requireOneCollection(_ answers: some Sequence<JSONObject>) throws(SteerError) {
        var names = Set<String>()
        for answer in answers { if case .string(let name)? = answer["collection"] { names.insert(name) } }
        guard names.count <= 1 else {
            throw SteerError(.unavailable, "shards answered from different collections (\(names.sorted().joined(separator: ", "))): an alias moved; retry once the move has finished")
        }
    }

    /// `,"collection":"<name>"` from the shards' answers, when they name one.
    static func writeCollection(_ answers: some Sequence<JSONObject>, _ writer: inout JSONWriter) {
        guard let name = collectionName(answers) else { return }
        writer.raw(",\"collection\":")
        writer.string(name)
    }
}
