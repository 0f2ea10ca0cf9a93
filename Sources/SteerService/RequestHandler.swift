import Foundation
import SteerCore
import SteerEngine
import SteerProtocol

/// Per-op latency and error counters for `stats`: a log-bucketed histogram (4% buckets) per op.
public final class OperationStats: Sendable {
    public struct Summary: Sendable {
        public var count: Int
        public var errors: Int
        public var p50Micros: Double
        public var p99Micros: Double
        public var meanMicros: Double
    }

    private struct Histogram {
        var buckets = [Int](repeating: 0, count: Self.bucketCount)
        var count = 0
        var errors = 0
        var totalMicros = 0.0

        static let bucketCount = 480
        static let growth = 1.04

        static func bucket(_ micros: Double) -> Int {
            guard micros > 1 else { return 0 }
            return min(bucketCount - 1, Int(log(micros) / log(growth)) + 1)
        }

        static func upperBound(_ bucket: Int) -> Double { pow(growth, Double(bucket)) }

        func quantile(_ q: Double) -> Double {
            guard count > 0 else { return 0 }
            let target = Int((Double(count) * q).rounded(.up))
            var seen = 0
            for (bucket, number) in buckets.enumerated() {
                seen += number
                if seen >= max(target, 1) { return Self.upperBound(bucket) }
            }
            return Self.upperBound(Self.bucketCount - 1)
        }
    }

    private let state = Locked<[String: Histogram]>([:])
    private let errorCodes = Locked<[String: Int]>([:])
    private let observer = Locked<(@Sendable (_ op: String?, _ micros: Double?, _ error: SteerError.Code?, _ collection: String?) -> Void)?>(nil)

    public init() {}

    /// Installs a callback that sees every record (the server feeds its metrics from it). `op` and
    /// `micros` are nil for errors that belong to no op; `collection` is the served collection the request
    /// addressed (an alias resolved, see `RequestHandler.servedCollection`), nil when it addressed none.
    public func setObserver(_ body: @escaping @Sendable (_ op: String?, _ micros: Double?, _ error: SteerError.Code?, _ collection: String?) -> Void) {
        observer.withLock { $0 = body }
    }

    /// Records one request (`collection`: see `setObserver`).
    public func record(op: String, micros: Double, error: SteerError.Code?, collection: String? = nil) {
        state.withLock { table in
            var histogram = table[op] ?? Histogram()
            histogram.buckets[Histogram.bucket(micros)] += 1
            histogram.count += 1
            histogram.totalMicros += micros
            if error != nil { histogram.errors += 1 }
            table[op] = histogram
        }
        if let error { errorCodes.withLock { $0[error.rawValue, default: 0] += 1 } }
        observer.get()?(op, micros, error, collection)
    }

    /// Counts an error that belongs to no op (unparsable lines, over-long lines).
    public func recordError(_ code: SteerError.Code) {
        errorCodes.withLock { $0[code.rawValue, default: 0] += 1 }
        observer.get()?(nil, nil, code, nil)
    }

    public func summaries() -> [String: Summary] {
        state.withLock { table in
            table.mapValues { histogram in
                Summary(count: histogram.count, errors: histogram.errors, p50Micros: histogram.quantile(0.5),
                        p99Micros: histogram.quantile(0.99), meanMicros: histogram.count == 0 ? 0 : histogram.totalMicros / Double(histogram.count))
            }
        }
    }

    public func errorCounts() -> [String: Int] { errorCodes.get() }

    /// Records `request` as failed on its deadline and returns its `deadline_exceeded` answer.
    public func deadlineExceeded(_ request: Request, startedNanos: UInt64) -> [UInt8] {
        let micros = Double(DispatchTime.now().uptimeNanoseconds &- startedNanos) / 1000
        record(op: request.operation.name, micros: micros, error: .deadlineExceeded)
        let waited = Int(micros / 1000)
        return RequestHandler.errorLine(id: request.id, SteerError(.deadlineExceeded, "\(request.operation.name) did not finish within its deadline (\(waited) ms; timeout_ms \(request.timeoutMillis.map(String.init) ?? "not given: the server's default applies"))"))
    }
}

/// Executes request lines against an engine and produces response lines. Pure (no I/O besides the
/// engine's), thread-safe, called from worker threads; the server only frames and orders.
public final class RequestHandler: Sendable {
    /// The default collection's engine (requests without `collection`).
    public let engine: RetrievalEngine
    /// Every collection served (the default one included) and the aliases (`CollectionSet`).
    public let collections: CollectionSet
    public let decoder: RequestDecoder
    public let stats = OperationStats()
    /// The keys requests must carry; nil (or none configured) → every op is open.
    public let accessKeys: AccessKeys?
    /// Where `upsert`/`delete` go when the server follows a write log; nil: straight to the engine.
    public let writeLog: (any WriteLog)?
    /// Where the admin op `snapshot` writes (`steer serve --snapshot-dir`); nil: `snapshot` is refused.
    public let snapshots: (any ServerSnapshots)?
    private let serverStats: Locked<(@Sendable () -> JSONObject)?>

    /// - Parameters:
    ///   - engine: the engine that serves requests.
    ///   - limits: protocol limits.
    ///   - accessKeys: the keys and scopes every request is checked against (`AccessKeys.authorize`).
    ///   - writeLog: the write log client writes are appended to (`steer serve --follow`); nil: none.
    ///   - collections: the collections served; nil: `engine` alone (`CollectionSet(defaultOnly:)`).
    ///   - snapshots: what the admin op `snapshot` writes with; nil: it is refused.
    public init(engine: RetrievalEngine, limits: ProtocolLimits = ProtocolLimits(), accessKeys: AccessKeys? = nil,
                writeLog: (any WriteLog)? = nil, collections: CollectionSet? = nil, snapshots: (any ServerSnapshots)? = nil) {
        self.engine = engine
        self.collections = collections ?? CollectionSet(defaultOnly: engine)
        self.decoder = RequestDecoder(limits: limits)
        self.accessKeys = accessKeys
        self.writeLog = writeLog
        self.snapshots = snapshots
        self.serverStats = Locked(nil)
    }

    /// How long before its deadline a request stops waiting for `min_sequence` or a log write, so that its
    /// own `unavailable` answer goes out before the server's `deadline_exceeded`: a tenth of what is left,
    /// at most 5 ms.
    static let waitMarginNanos: UInt64 = 5_000_000

    /// When a wait started at `now` for a request due at `deadlineNanos` gives up.
    public static func waitLimit(deadlineNanos: UInt64?, now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> UInt64 {
        guard let deadlineNanos, deadlineNanos > now else { return now }
        return deadlineNanos - min(waitMarginNanos, (deadlineNanos - now) / 10)
    }

    /// Installs a provider of extra `stats` fields (the server's connection and thread figures).
    public func setServerStats(_ provider: @escaping @Sendable () -> JSONObject) {
        serverStats.withLock { $0 = provider }
    }

    /// The outcome of `prepare`: a response that is already known (nil for a blank line, which is
    /// ignored), or a validated request to `execute`.
    public enum Prepared: Sendable {
        case done([UInt8]?)
        case request(Request, startedNanos: UInt64)
    }

    /// Parses and validates one request line (without its newline). Cheap: no index or store access, so
    /// the server may call it on an event loop to learn whether the request writes.
    public func prepare(_ line: UnsafeBufferPointer<UInt8>) -> Prepared {
        Self.prepare(line, decoder: decoder, stats: stats)
    }

    /// `prepare` for any executor of requests (the router validates lines exactly as the server does).
    public static func prepare(_ line: UnsafeBufferPointer<UInt8>, decoder: RequestDecoder, stats: OperationStats) -> Prepared {
        var end = line.count
        while end > 0, line[end - 1] == 0x0D || line[end - 1] == 0x20 || line[end - 1] == 0x09 { end -= 1 }
        if end == 0 { return .done(nil) }
        let started = DispatchTime.now().uptimeNanoseconds
        let root: JSONValue
        do {
            root = try JSONParser.parse(UnsafeBufferPointer(rebasing: line[0..<end]))
        } catch {
            stats.recordError(error.code)
            return .done(Self.errorLine(id: nil, error))
        }
        do {
            let request = try decoder.decode(root)
            if case .ping = request.operation {
                // Nothing to run: answered where it was parsed, so a ping measures the server, not the queue.
                stats.record(op: "ping", micros: Double(DispatchTime.now().uptimeNanoseconds - started) / 1000, error: nil)
                var writer = JSONWriter(capacity: 32)
                writer.raw("{")
                writer.requestIDField(request.id)
                writer.raw("\"ok\":true}\n")
                return .done(writer.bytes)
            }
            return .request(request, startedNanos: started)
        } catch {
            stats.record(op: "invalid", micros: Double(DispatchTime.now().uptimeNanoseconds - started) / 1000, error: error.code)
            return .done(Self.errorLine(id: RequestDecoder.requestID(of: root), error))
        }
    }

    /// Runs a prepared request (may block on the index and the store: call it on a worker thread).
    ///
    /// - Parameter deadlineNanos: the request's deadline (uptime nanoseconds), which bounds its wait for
    ///   `min_sequence` and for a write log; nil: no waiting (a sequence not yet applied is `unavailable`).
    /// - Returns: the response line including its `\n`.
    public func execute(_ request: Request, startedNanos: UInt64, deadlineNanos: UInt64? = nil) -> [UInt8] {
        var output: [UInt8]
        var failure: SteerError.Code?
        do {
            output = try run(request, deadlineNanos: deadlineNanos)
        } catch {
            failure = error.code
            output = Self.errorLine(id: request.id, error)
        }
        let micros = Double(DispatchTime.now().uptimeNanoseconds &- startedNanos) / 1000
        stats.record(op: request.operation.name, micros: micros, error: failure, collection: servedCollection(request))
        return output
    }

    /// Work units (see `ProtocolLimits`) one step of a `Job` may do; a request costing more is split.
    public static let unitsPerStep = 4096
    /// `ef_search` assumed for the cost of a step when a request names none (the HNSW default's order).
    static let assumedEfSearch = 64

    /// A request's work in steps, so that the worker pool can serve other connections between them: a
    /// batch search costing more than `unitsPerStep` runs a slice of its queries per step (every slice
    /// against the same pinned generation); any other request is one step.
    ///
    /// Call `step()` until it returns the answer; steps must not overlap (the server runs the next only
    /// after the previous one returned), which is why the `@unchecked Sendable` is safe.
    public final class Job: @unchecked Sendable {
        private let handler: RequestHandler
        public let request: Request
        private let startedNanos: UInt64
        private let deadlineNanos: UInt64?
        private var pinned: Generation?
        /// The collection the steps search, held from the first step to the answer.
        private var lease: CollectionSet.Lease?
        private var results: [[Hit]] = []
        private var plan: SearchPlan?
        private var next = 0

        init(handler: RequestHandler, request: Request, startedNanos: UInt64, deadlineNanos: UInt64?) {
            self.handler = handler
            self.request = request
            self.startedNanos = startedNanos
            self.deadlineNanos = deadlineNanos
        }

        /// Runs the next step; the answer line (with its `\n`) once the request is done, nil while more
        /// steps remain.
        public func step() -> [UInt8]? {
            guard case .search(let queries, let options, let batch) = request.operation else {
                return handler.execute(request, startedNanos: startedNanos, deadlineNanos: deadlineNanos)
            }
            let perQuery = max(options.k, options.efSearch ?? RequestHandler.assumedEfSearch, options.nprobe ?? 0)
            let slice = max(1, RequestHandler.unitsPerStep / perQuery)
            if next == 0 && queries.count <= slice {
                return handler.execute(request, startedNanos: startedNanos, deadlineNanos: deadlineNanos)
            }
            defer { if next >= queries.count { lease?.release() } }
            do throws(SteerError) {
                let generation: Generation
                let engine: RetrievalEngine
                if let pinned, let lease {
                    generation = pinned
                    engine = lease.engine
                } else {
                    try handler.authorizeAndWait(request, deadlineNanos: deadlineNanos)
                    let held = try handler.collections.lease(request.collection)
                    lease = held
                    engine = held.engine
                    generation = engine.generation
                    pinned = generation
                    // Dimensions are checked for the whole batch first, so an error names its real position.
                    for (position, query) in queries.enumerated() where query.count != generation.dimension {
                        throw SteerError.dimension(expected: generation.dimension, got: query.count, field: "vectors[\(position)]")
                    }
                    results.reserveCapacity(queries.count)
                }
                let end = min(queries.count, next + slice)
                let answer = try engine.searchExplained(Array(queries[next..<end]), options: options, in: generation)
                results += answer.hits
                plan = answer.plan
                next = end
                if next < queries.count { return nil }
                var writer = JSONWriter(capacity: 512)
                writer.raw("{")
                writer.requestIDField(request.id)
                writer.raw("\"ok\":true")
                RequestHandler.writeCollection(lease?.name ?? CollectionName.defaultName, &writer)
                try handler.writeSearch(results, batch: batch, generation: generation, &writer)
                if options.explain, let plan { writer.explainField(plan) }
                writer.raw("}\n")
                try handler.requireRoom(writer)
                handler.stats.record(op: request.operation.name, micros: micros, error: nil, collection: lease?.name)
                return writer.bytes
            } catch {
                next = queries.count
                handler.stats.record(op: request.operation.name, micros: micros, error: error.code, collection: handler.servedCollection(request))
                return RequestHandler.errorLine(id: request.id, error)
            }
        }

        private var micros: Double { Double(DispatchTime.now().uptimeNanoseconds &- startedNanos) / 1000 }
    }

    /// The request as a `Job` (see there); `deadlineNanos` as for `execute`.
    public func job(for request: Request, startedNanos: UInt64, deadlineNanos: UInt64? = nil) -> Job {
        Job(handler: self, request: request, startedNanos: startedNanos, deadlineNanos: deadlineNanos)
    }

    /// Answers one request line (without its newline): `prepare` then `execute`.
    ///
    /// - Returns: the response line including the trailing `\n`, or nil for a blank line (ignored).
    public func respond(to line: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        switch prepare(line) {
        case .done(let output): return output
        case .request(let request, let started): return execute(request, startedNanos: started)
        }
    }

    public func respond(to line: [UInt8]) -> [UInt8]? {
        line.withUnsafeBufferPointer { respond(to: $0) }
    }

    public func respond(to line: String) -> String? {
        respond(to: Array(line.utf8)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// `{"id":…,"ok":false,"error":{"code":…,"message":…}}\n`
    public static func errorLine(id: RequestID?, _ error: SteerError) -> [UInt8] {
        var writer = JSONWriter(capacity: 128 + error.message.utf8.count)
        writer.raw("{")
        writer.requestIDField(id)
        writer.raw("\"ok\":false,\"error\":{\"code\":")
        writer.string(error.code.rawValue)
        writer.raw(",\"message\":")
        writer.string(error.message)
        writer.raw("}}\n")
        return writer.bytes
    }

    /// For a server that follows a write log: a request whose `min_sequence` is not applied yet registers
    /// `resume` with `RetrievalEngine.whenApplied` instead of taking a worker to wait (the server's
    /// connection parks it, see `RequestService.park`), so requests waiting for sequences far ahead
    /// hold no thread. A request without a valid key is not parked: its worker refuses it at once.
    ///
    /// - Returns: the function that forgets the registration; nil when the request may start now.
    public func parkForSequence(_ request: Request, resume: @escaping @Sendable () -> Void) -> (@Sendable () -> Void)? {
        guard let wanted = request.minSequence, request.minSequences == nil, writeLog != nil else { return nil }
        if let accessKeys {
            do throws(SteerError) {
                try accessKeys.authorize(request)
            } catch {
                return nil
            }
        }
        return engine.whenApplied(wanted, resume)
    }

    /// Checks the request's key, then waits for its `min_sequence` (see `Request.minSequence`).
    ///
    /// - Throws: the key check's errors; `.unavailable` when the sequence was not applied in time.
    func authorizeAndWait(_ request: Request, deadlineNanos: UInt64?) throws(SteerError) {
        try accessKeys?.authorize(request)
        if request.minSequences != nil {
            throw SteerError.invalid("min_sequences (one sequence per shard) is for a router that follows streams (steer route --follow); a server takes min_sequence")
        }
        guard let wanted = request.minSequence else { return }
        if writeLog == nil {
            // Nothing will apply more: answer at once.
            let applied = engine.appliedSequence
            if wanted <= applied { return }
            throw SteerError(.unavailable, "min_sequence \(wanted): this server follows no write log (steer serve --follow; applied through \(applied))")
        }
        if engine.waitForApplied(wanted, deadlineNanos: Self.waitLimit(deadlineNanos: deadlineNanos)) { return }
        let applied = engine.appliedSequence
        throw SteerError(.unavailable, "min_sequence \(wanted) is not applied on this server within the deadline (applied through \(applied))")
    }

    private func run(_ request: Request, deadlineNanos: UInt64?) throws(SteerError) -> [UInt8] {
        try authorizeAndWait(request, deadlineNanos: deadlineNanos)
        var writer = JSONWriter(capacity: 512)
        writer.raw("{")
        writer.requestIDField(request.id)
        writer.raw("\"ok\":true")
        if writeLog != nil, Self.isLoggedChange(request.operation) {
            try runLoggedChange(request.operation, deadlineNanos: deadlineNanos, &writer)
            writer.raw("}\n")
            try requireRoom(writer)
            return writer.bytes
        }
        if try runCollectionAdmin(request.operation, &writer) {
            writer.raw("}\n")
            try requireRoom(writer)
            return writer.bytes
        }
        // Every other op runs on one collection, held (`CollectionSet.Lease`) until its answer is written.
        let lease = try collections.lease(request.collection)
        defer { lease.release() }
        let engine = lease.engine
        if writeLog != nil, lease.name != CollectionName.defaultName, request.operation.isAdmin, !Self.isLogged(request.operation) {
            throw SteerError.invalid("\(request.operation.name) of a named collection is not available on a server that follows a write log (only writes, events and collection changes go through the stream)")
        }
        if case .ping = request.operation {} else { Self.writeCollection(lease.name, &writer) }
        switch request.operation {
        case .ping, .createCollection, .listCollections, .describeCollection, .dropCollection, .alias, .deleteAlias:
            break
        case .stats:
            writeStats(engine, &writer)
        case .upsert(let items):
            try write(.upsert(items), countField: ",\"upserted\":", lease: lease, deadlineNanos: deadlineNanos, &writer)
        case .delete(let ids):
            try write(.delete(ids), countField: ",\"deleted\":", lease: lease, deadlineNanos: deadlineNanos, &writer)
        case .get(let ids):
            let items = try engine.get(ids)
            writer.raw(",\"items\":[")
            var first = true
            for item in items {
                guard let item else { continue }
                try requireRoom(writer)
                if !first { writer.raw(",") }
                first = false
                writer.raw("{\"id\":")
                writer.itemID(item.id)
                if let title = item.title {
                    writer.raw(",\"title\":")
                    writer.string(title)
                }
                writer.raw(",\"tags\":")
                writer.strings(item.tags)
                if let attributes = item.attributesJSON {
                    writer.raw(",\"attributes\":")
                    writer.bytes.append(contentsOf: attributes.utf8)
                }
                if let vector = item.vector {
                    writer.raw(",\"vector\":")
                    writer.floats(vector)
                }
                writer.raw("}")
            }
            writer.raw("],\"missing\":[")
            first = true
            for (id, item) in zip(ids, items) where item == nil {
                if !first { writer.raw(",") }
                first = false
                writer.itemID(id)
            }
            writer.raw("]")
        case .search(let queries, let options, let batch):
            let pinned = engine.generation
            let (results, plan) = try engine.searchExplained(queries, options: options, in: pinned)
            try writeSearch(results, batch: batch, generation: pinned, &writer)
            if options.explain { writer.explainField(plan) }
        case .recommend(let recommendRequest):
            let pinned = engine.generation
            let recommendation = try engine.recommend(recommendRequest, in: pinned)
            writeGeneration(pinned, &writer)
            writer.raw(",\"hits\":")
            try writeHits(recommendation.hits, &writer)
            writer.clausesField(recommendation.clauses)
            writer.unknownHistoryField(recommendation.unknownHistory)
            if recommendRequest.explain { writer.explainField(recommendation.plan) }
        case .encode(let recommendRequest):
            let pinned = engine.generation
            let encoded = try engine.encode(recommendRequest, in: pinned)
            writeGeneration(pinned, &writer)
            writer.raw(",\"vector\":")
            writer.floats(recommendRequest.constraints == .hard ? encoded.baseVector : encoded.vector)
            writer.clausesField(encoded.clauses)
            writer.unknownHistoryField(encoded.unknownHistory)
        case .declareIndex(let attribute, let kind):
            let entries = try engine.declarePayloadIndex(attribute, kind: kind)
            writer.raw(",\"attr\":")
            writer.string(attribute)
            writer.raw(",\"kind\":")
            writer.string(kind.name)
            writer.raw(",\"entries\":")
            writer.int(entries)
        case .swap(let generation, let checkpoint):
            let result = try engine.swap(to: generation, checkpoint: checkpoint)
            writer.raw(",\"generation\":")
            writer.string(result.generation)
            writer.raw(",\"previous\":")
            writer.string(result.previous)
            writer.raw(",\"replayed\":")
            writer.int(result.replayed)
        case .prepare, .activate:
            try runStagedSwap(request.operation, lease: lease, &writer)
        case .event, .getUser, .deleteUser:
            try runHistoryOperation(request.operation, lease: lease, deadlineNanos: deadlineNanos, &writer)
        case .snapshot(let name):
            try runSnapshot(name: name, collection: lease.name, &writer)
        case .ingestVectors(let version, let dimension, let checkpointHash, let items, let complete):
            try runIngestVectors(version: version, dimension: dimension, checkpointHash: checkpointHash, items: items, complete: complete,
                                 engine: engine, &writer)
        }
        writer.raw("}\n")
        try requireRoom(writer)
        return writer.bytes
    }

    /// `"generation":"<id>"` of the generation that answered.
    private func writeGeneration(_ generation: Generation, _ writer: inout JSONWriter) {
        writer.raw(",\"generation\":")
        writer.string(generation.id)
    }

    /// `"generation":…` and the hits of a search (`results` for a batch).
    private func writeSearch(_ results: [[Hit]], batch: Bool, generation: Generation, _ writer: inout JSONWriter) throws(SteerError) {
        writeGeneration(generation, &writer)
        if batch {
            writer.raw(",\"results\":[")
            for (index, hits) in results.enumerated() {
                if index > 0 { writer.raw(",") }
                try writeHits(hits, &writer)
            }
            writer.raw("]")
        } else {
            writer.raw(",\"hits\":")
            try writeHits(results[0], &writer)
        }
    }

    /// Stops building an answer that has grown past `maxResponseBytes`.
    func requireRoom(_ writer: JSONWriter) throws(SteerError) {
        let limit = decoder.limits.maxResponseBytes
        guard writer.bytes.count <= limit else {
            throw SteerError(.tooLarge, "the answer exceeds \(limit) bytes (maxResponseBytes); ask for fewer ids, queries or a smaller k")
        }
    }

    private func writeHits(_ hits: [Hit], _ writer: inout JSONWriter) throws(SteerError) {
        writer.raw("[")
        for (index, hit) in hits.enumerated() {
            try requireRoom(writer)
            if index > 0 { writer.raw(",") }
            writer.raw("{\"id\":")
            writer.itemID(hit.id)
            writer.raw(",\"score\":")
            writer.float(hit.score)
            if let title = hit.title {
                writer.raw(",\"title\":")
                writer.string(title)
            }
            if !hit.tags.isEmpty {
                writer.raw(",\"tags\":")
                writer.strings(hit.tags)
            }
            writer.raw("}")
        }
        writer.raw("]")
    }

    /// Runs `create_collection`, `list_collections`, `describe_collection`, `drop_collection`, `alias`
    /// and `delete_alias` (writing their fields); false for every other op.
    private func runCollectionAdmin(_ operation: Request.Operation, _ writer: inout JSONWriter) throws(SteerError) -> Bool {
        switch operation {
        case .createCollection(let settings):
            writeDescription(try collections.create(settings), &writer)
        case .listCollections:
            writer.raw(",\"collections\":[")
            for (index, description) in collections.list().enumerated() {
                if index > 0 { writer.raw(",") }
                writer.raw("{")
                writeDescription(description, &writer, leadingComma: false)
                writer.raw("}")
            }
            writer.raw("],\"aliases\":{")
            for (index, (alias, target)) in collections.aliases.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { writer.raw(",") }
                writer.string(alias)
                writer.raw(":")
                writer.string(target)
            }
            writer.raw("}")
        case .describeCollection(let name):
            writeDescription(try collections.describe(name), &writer)
        case .dropCollection(let name):
            try collections.drop(name)
            writer.raw(",\"dropped\":")
            writer.string(name)
        case .alias(let alias, let collection):
            let previous = try collections.setAlias(alias, to: collection)
            writer.raw(",\"alias\":")
            writer.string(alias)
            Self.writeCollection(collection, &writer)
            writer.raw(",\"previous\":")
            if let previous { writer.string(previous) } else { writer.raw("null") }
        case .deleteAlias(let alias):
            let target = try collections.deleteAlias(alias)
            writer.raw(",\"alias\":")
            writer.string(alias)
            Self.writeCollection(target, &writer)
        default:
            return false
        }
        return true
    }

    /// A collection's fields in `create_collection`, `list_collections` and `describe_collection` answers.
    func writeDescription(_ description: CollectionSet.Description, _ writer: inout JSONWriter, leadingComma: Bool = true) {
        let stats = description.stats
        writer.raw(leadingComma ? ",\"name\":" : "\"name\":")
        writer.string(description.name)
        writer.raw(",\"dimension\":")
        writer.int(stats.dimension)
        writer.raw(",\"metric\":")
        writer.string(stats.metric.rawValue)
        writer.raw(",\"index_spec\":")
        writer.string(stats.indexSpec)
        writer.raw(",\"embedding_version\":")
        writer.string(stats.embeddingVersion)
        writer.raw(",\"generation\":")
        writer.string(stats.generation)
        writer.raw(",\"items\":")
        writer.int(stats.items)
        writer.raw(",\"indexed\":")
        writer.int(stats.indexed)
        writer.raw(",\"aliases\":")
        writer.strings(description.aliases)
        if let createdAt = description.createdAt {
            writer.raw(",\"created_at\":")
            writer.string(createdAt)
        }
        if let checkpoint = description.checkpoint {
            writer.raw(",\"checkpoint\":")
            writer.string(checkpoint)
        }
    }

    /// An upsert or delete: through the write log when the server follows one (the answer adds the stream
    /// `sequence`), else straight to the engine; writes `countField` (`,"upserted":`) and the count.
    private func write(_ operation: WriteOperation, countField: StaticString, lease: CollectionSet.Lease, deadlineNanos: UInt64?,
                       _ writer: inout JSONWriter) throws(SteerError) {
        let count: Int
        var sequence: UInt64?
        if writeLog != nil {
            let logged = try appendToLog(operation, lease: lease, deadlineNanos: deadlineNanos)
            (count, sequence) = (logged.count, logged.sequence)
        } else {
            switch operation {
            case .upsert(let items): count = try lease.engine.upsert(items)
            case .delete(let ids): count = try lease.engine.delete(ids)
            case .events, .deleteUser: throw SteerError.internalError("a history write is not an item write")
            }
        }
        writer.raw(countField)
        writer.int(count)
        if let sequence {
            writer.raw(",\"sequence\":")
            writer.int(Int64(clamping: sequence))
        }
    }

    /// Whether `operation` goes through the write log on a server that follows one.
    static func isLogged(_ operation: Request.Operation) -> Bool {
        switch operation {
        case .upsert, .delete, .event, .deleteUser: return true
        default: return false
        }
    }

    /// Appends a write to the write log for the lease's collection (nil for the default one: the message
    /// names a collection only when it is a named one) and waits for this server to apply it.
    ///
    /// - Throws: what `WriteLog.append` throws.
    func appendToLog(_ operation: WriteOperation, lease: CollectionSet.Lease, deadlineNanos: UInt64?) throws(SteerError) -> LoggedWrite {
        guard let writeLog else { throw SteerError.internalError("no write log") }
        let collection = lease.name == CollectionName.defaultName ? nil : lease.name
        return try writeLog.append(operation, collection: collection, deadlineNanos: Self.waitLimit(deadlineNanos: deadlineNanos))
    }

    /// Adds `,"sequence":N` to a logged write's answer.
    static func writeSequence(_ sequence: UInt64, _ writer: inout JSONWriter) {
        writer.raw(",\"sequence\":")
        writer.int(Int64(clamping: sequence))
    }

    /// `,"collection":"<name>"`: the collection (an alias resolved) that produced the answer.
    static func writeCollection(_ name: String, _ writer: inout JSONWriter) {
        writer.raw(",\"collection\":")
        writer.string(name)
    }

    private func writeStats(_ engine: RetrievalEngine, _ writer: inout JSONWriter) {
        let engineStats = engine.stats()
        writer.raw(",\"generation\":")
        writer.string(engineStats.generation)
        writer.raw(",\"embedding_version\":")
        writer.string(engineStats.embeddingVersion)
        writer.raw(",\"dimension\":")
        writer.int(engineStats.dimension)
        writer.raw(",\"metric\":")
        writer.string(engineStats.metric.rawValue)
        writer.raw(",\"index_spec\":")
        writer.string(engineStats.indexSpec)
        writer.raw(",\"shards\":")
        writer.int(engineStats.shards)
        if let directory = engineStats.generationDirectory {
            writer.raw(",\"generation_directory\":")
            writer.string(directory)
        }
        if let staged = engineStats.stagedGeneration {
            writer.raw(",\"staged_generation\":")
            writer.string(staged)
        }
        writer.raw(",\"items\":")
        writer.int(engineStats.items)
        writer.raw(",\"indexed\":")
        writer.int(engineStats.indexed)
        writer.raw(",\"tombstones\":")
        writer.int(engineStats.tombstones)
        writer.raw(",\"store_sequence\":")
        writer.int(Int64(truncatingIfNeeded: engineStats.storeSequence))
        writer.raw(",\"applied_sequence\":")
        writer.int(Int64(clamping: engine.appliedSequence))
        if let writeLog {
            writer.raw(",\"refused_messages\":")
            writer.int(writeLog.refusedMessages)
        }
        writer.raw(",\"store_memtable_bytes\":")
        writer.int(engineStats.storeMemtableBytes)
        let cache = engineStats.recordCache
        writer.raw(",\"record_cache\":{\"capacity_bytes\":")
        writer.int(cache.capacityBytes)
        writer.raw(",\"bytes\":")
        writer.int(cache.bytes)
        writer.raw(",\"entries\":")
        writer.int(cache.entries)
        writer.raw(",\"hits\":")
        writer.int(cache.hits)
        writer.raw(",\"misses\":")
        writer.int(cache.misses)
        writer.raw("}")
        writer.raw(",\"built_at_sequence\":")
        writer.int(Int64(truncatingIfNeeded: engineStats.builtAtSequence))
        writer.raw(",\"encoder\":")
        if let encoder = engineStats.encoder { writer.string(encoder) } else { writer.raw("null") }
        writer.raw(",\"encoder_stats\":{")
        for (index, entry) in engineStats.encoderStatistics.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.string(entry.name)
            writer.raw(":")
            writer.int(entry.value)
        }
        writer.raw("}")
        writer.raw(",\"faiss_version\":")
        writer.string(engineStats.faissVersion)
        writer.raw(",\"omp_max_threads\":")
        writer.int(engineStats.openMPMaxThreads)
        writer.plansField(engineStats.plans)
        writer.recallCalibrationField(engineStats.recallCalibration)
        writer.recallCalibrationStateField(engineStats.recallCalibrationState)
        writer.raw(",\"index_bytes_estimate\":")
        writer.int(Int64(engineStats.indexBytesEstimate.rounded()))
        writer.raw(",\"index_bytes_per_vector_estimate\":")
        writer.value(.double((engineStats.indexBytesPerVectorEstimate * 10).rounded() / 10))
        writer.raw(",\"payload_column_bytes\":")
        writer.int(engineStats.payloadColumnBytes)
        writer.raw(",\"tag_posting_bytes\":")
        writer.int(engineStats.tagPostingBytes)
        Self.writeOperationStats(stats, &writer)
        if let provider = serverStats.get() {
            writer.raw(",\"server\":")
            writer.value(.object(provider()))
        }
    }

    /// `,"ops":{…},"errors":{…}` of `stats` (the router writes the same fields).
    public static func writeOperationStats(_ stats: OperationStats, _ writer: inout JSONWriter) {
        writer.raw(",\"ops\":{")
        for (index, (op, summary)) in stats.summaries().sorted(by: { $0.key < $1.key }).enumerated() {
            if index > 0 { writer.raw(",") }
            writer.string(op)
            writer.raw(":{\"count\":")
            writer.int(summary.count)
            writer.raw(",\"errors\":")
            writer.int(summary.errors)
            writer.raw(",\"p50_us\":")
            writer.float(Float(summary.p50Micros.rounded()))
            writer.raw(",\"p99_us\":")
            writer.float(Float(summary.p99Micros.rounded()))
            writer.raw(",\"mean_us\":")
            writer.float(Float(summary.meanMicros.rounded()))
            writer.raw("}")
        }
        writer.raw("},\"errors\":{")
        for (index, (code, count)) in stats.errorCounts().sorted(by: { $0.key < $1.key }).enumerated() {
            if index > 0 { writer.raw(",") }
            writer.string(code)
            writer.raw(":")
            writer.int(count)
        }
        writer.raw("}")
    }
}
