import SteerCore

/// Limits the protocol enforces (the server adds connection-level ones). Every limit is documented in
/// docs/protocol.md and docs/security.md and tested at its boundary.
///
/// The cost model: a line costs O(its bytes) to parse and validate (bounded by `maxLineBytes`); the engine
/// work a request may ask for is bounded by `maxQueryCost` work units, where one query costs
/// `max(k × oversample, ef_search, nprobe)` units (HNSW visits about ef_search candidates, IVF scans nprobe
/// lists, every hit is hydrated and written, every oversampled candidate rescored), plus `filterNodeUnits` per node of a filter expression; a prompt
/// is cut to 8 clauses of at most 256 tokens each by the model, and filters to `maxFilterTerms` distinct
/// tags, `maxFilterDepth` levels and `maxFilterNodes` nodes.
public struct ProtocolLimits: Sendable {
    /// Longest request line, newline excluded; longer lines get `too_large` and are skipped.
    public var maxLineBytes: Int
    /// Largest `k`.
    public var maxK: Int
    /// Most query vectors per `search`, items per `upsert`, ids per `get`/`delete`.
    public var maxBatch: Int
    /// Longest `prompt`, in UTF-8 bytes.
    public var maxPromptBytes: Int
    /// Most ids in a `history`.
    public var maxHistory: Int
    /// Most ids in each of `recommend`'s `positive` and `negative`.
    public var maxExamples: Int
    /// Largest `ef_search`.
    public var maxEfSearch: Int
    /// Largest `nprobe`.
    public var maxNprobe: Int
    /// Most work units one request may ask for: the sum over its queries of `max(k, ef_search, nprobe)`.
    public var maxQueryCost: Int
    /// Most distinct tags in one `filter` (over `tags_any`, `tags_none`, `tag_groups` and the tag leaves
    /// of its expression together).
    public var maxFilterTerms: Int
    /// Largest `oversample` (candidates fetched per result from a quantized index, then rescored).
    public var maxOversample: Int
    /// Deepest nesting of a filter expression, in nodes from its root (the root is level 1).
    public var maxFilterDepth: Int
    /// Most nodes in a filter expression (each `in`/`nin` value counts as one; see `FilterParser`).
    public var maxFilterNodes: Int
    /// Largest `timeout_ms` a request may ask for, in milliseconds.
    public var maxTimeoutMillis: Int
    /// Longest answer line, in bytes; a request whose answer would be longer gets `too_large` instead
    /// (hits carry titles and tags, `get` carries whole items).
    public var maxResponseBytes: Int

    public init(maxLineBytes: Int = 1 << 20, maxK: Int = 1000, maxBatch: Int = 1024, maxPromptBytes: Int = 4096, maxHistory: Int = 1000,
                maxEfSearch: Int = 4096, maxNprobe: Int = 4096, maxQueryCost: Int = 262_144, maxFilterTerms: Int = 64,
                maxTimeoutMillis: Int = 60_000, maxResponseBytes: Int = 16 << 20, maxFilterDepth: Int = 16, maxFilterNodes: Int = 256, maxOversample: Int = 64,
                maxExamples: Int = 64) {
        self.maxExamples = maxExamples
        self.maxOversample = maxOversample
        self.maxFilterDepth = maxFilterDepth
        self.maxFilterNodes = maxFilterNodes
        self.maxLineBytes = maxLineBytes
        self.maxK = maxK
        self.maxBatch = maxBatch
        self.maxPromptBytes = maxPromptBytes
        self.maxHistory = maxHistory
        self.maxEfSearch = maxEfSearch
        self.maxNprobe = maxNprobe
        self.maxQueryCost = maxQueryCost
        self.maxFilterTerms = maxFilterTerms
        self.maxTimeoutMillis = maxTimeoutMillis
        self.maxResponseBytes = maxResponseBytes
    }

    /// Work units per node of a filter expression: resolving a node reads one posting list, or tests one
    /// attribute of every item the filter reads (docs/security.md).
    public static let filterNodeUnits = 64

    /// Work units of `queries` searches with these knobs and a filter expression of `filterNodes` nodes
    /// (see the type's cost model).
    public static func cost(queries: Int, k: Int, efSearch: Int?, nprobe: Int?, filterNodes: Int = 0) -> Int {
        queries * max(k, efSearch ?? 0, nprobe ?? 0) + filterNodes * filterNodeUnits
    }
}

/// The request id, echoed in the response.
public enum RequestID: Sendable, Hashable {
    case int(Int64)
    case string(String)
}

/// A validated request.
public struct Request: Sendable {
    public enum Operation: Sendable {
        case ping
        case stats
        case upsert([ItemInput])
        case delete([ItemID])
        case get([ItemID])
        /// `batch`: the request used `vectors` (the response then carries `results`).
        case search(queries: [[Float]], options: SearchOptions, batch: Bool)
        case recommend(RecommendRequest)
        case encode(RecommendRequest)
        /// A generation (a name or path inside `DIR/generations/`) and an optional checkpoint directory
        /// (inside the checkpoint root); the engine resolves both with `PathRoot`.
        case swap(generation: String, checkpoint: String?)
        /// The first half of `swap` (`prepare`): load and check the generation, keep it staged, serve the
        /// old one; for a cluster-wide swap (docs/scaling.md "Cluster-wide swap"). Default collection only.
        case prepare(generation: String, checkpoint: String?)
        /// The second half (`activate`): serve the staged generation `generation` (a no-op when it serves).
        case activate(generation: String)
        /// Events for users' histories (`event`; one or a batch), timestamps filled in.
        case event([UserEvent])
        /// A user's stored history (`get_user`): the most recent `limit` events, or all.
        case getUser(UserID, limit: Int?)
        /// Deletes a user's history (`delete_user`).
        case deleteUser(UserID)
        /// One chunk of a new embedding version (`ingest_vectors`; `RetrievalEngine.ingestVectors`).
        case ingestVectors(version: String, dimension: Int, checkpointHash: String, items: [VersionItem], complete: Bool)
        /// Collections and aliases (docs/protocol.md "Collections and aliases").
        case createCollection(CollectionSettings)
        case listCollections
        case describeCollection(String)
        case dropCollection(String)
        case alias(alias: String, collection: String)
        case deleteAlias(String)
        /// Declares a payload index on an attribute path and builds it over the existing items.
        case declareIndex(attribute: String, kind: PayloadKind)
        /// A snapshot of the running server's default collection into its snapshot directory, under
        /// `name` (`snapshot`; validated by `Request.validateSnapshotName`).
        case snapshot(name: String)

        public var name: String {
            switch self {
            case .ping: return "ping"
            case .stats: return "stats"
            case .upsert: return "upsert"
            case .delete: return "delete"
            case .get: return "get"
            case .search: return "search"
            case .recommend: return "recommend"
            case .encode: return "encode"
            case .swap: return "swap"
            case .prepare: return "prepare"
            case .activate: return "activate"
            case .event: return "event"
            case .getUser: return "get_user"
            case .deleteUser: return "delete_user"
            case .ingestVectors: return "ingest_vectors"
            case .createCollection: return "create_collection"
            case .listCollections: return "list_collections"
            case .describeCollection: return "describe_collection"
            case .dropCollection: return "drop_collection"
            case .alias: return "alias"
            case .deleteAlias: return "delete_alias"
            case .declareIndex: return "declare_index"
            case .snapshot: return "snapshot"
            }
        }

        /// Whether the op writes (the server runs it alone in its connection's lane and never abandons it
        /// once started); `requiredScope` says which key it needs.
        public var isAdmin: Bool {
            switch self {
            case .upsert, .delete, .swap, .prepare, .activate, .event, .deleteUser, .ingestVectors, .createCollection, .dropCollection, .alias, .deleteAlias,
                 .declareIndex, .snapshot: return true
            default: return false
            }
        }
    }

    public var id: RequestID?
    public var operation: Operation
    public var token: String?
    /// The request's own deadline (`timeout_ms`), in milliseconds from its arrival; nil: the server's default.
    public var timeoutMillis: Int?
    /// `fair_queue`: the worker-pool queue within the connection, for a router that forwards many clients'
    /// requests over few connections (an admin key is required; see `AccessKeys.authorize`).
    public var fairQueue: UInt64?
    /// `min_sequence`: run only once the server applied this write-log sequence (read-your-writes on a
    /// server that follows a stream; docs/scaling.md); past the deadline the answer is `unavailable`.
    public var minSequence: UInt64?
    /// `min_sequences`: `min_sequence` per shard, for a router whose shards follow streams (`steer route
    /// --follow`): entry `i` is for shard `i`'s stream, 0 for none (docs/scaling.md). Only a router takes it.
    public var minSequences: [UInt64]?
    /// Most entries of `min_sequences`.
    public static let maxShardSequences = 4096
    /// `collection`: the collection or alias an item, search or generation op addresses; nil: the
    /// server's default collection (validated by `CollectionName.validate`; ops in
    /// `Request.collectionOperations` only).
    public var collection: String?

    public init(id: RequestID? = nil, operation: Operation, token: String? = nil, timeoutMillis: Int? = nil, fairQueue: UInt64? = nil,
                minSequence: UInt64? = nil, collection: String? = nil, minSequences: [UInt64]? = nil) {
        self.id = id
        self.operation = operation
        self.token = token
        self.timeoutMillis = timeoutMillis
        self.fairQueue = fairQueue
        self.minSequence = minSequence
        self.collection = collection
        self.minSequences = minSequences
    }

    /// Longest `snapshot` name, in bytes.
    public static let maxSnapshotNameBytes = 64

    /// Checks a `snapshot` name: it becomes a directory name inside the server's snapshot directory, so
    /// it is 1-64 ASCII letters, digits, '-', '_' or '.', not starting with '.' (no separator, no `..`,
    /// no hidden name).
    ///
    /// - Throws: `.invalidRequest` naming the rule.
    public static func validateSnapshotName(_ name: String) throws(SteerError) {
        let bytes = Array(name.utf8)
        guard (1...maxSnapshotNameBytes).contains(bytes.count), bytes.first != UInt8(ascii: "."),
              bytes.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A)
                  || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") })
        else {
            throw SteerError.invalid("snapshot name must be 1-\(maxSnapshotNameBytes) letters, digits, '-', '_' or '.', not starting with '.'")
        }
    }

    /// The ops that take an optional `collection`.
    public static let collectionOperations: Set<String> = ["stats", "upsert", "delete", "get", "search", "recommend", "encode", "swap",
                                                           "event", "get_user", "delete_user", "ingest_vectors"]
}

/// Every op the protocol knows, in documentation order.
public let knownOperations = ["ping", "upsert", "delete", "get", "search", "recommend", "encode", "stats", "swap", "prepare", "activate",
                              "create_collection", "list_collections", "describe_collection", "drop_collection", "alias", "delete_alias",
                              "declare_index", "event", "get_user", "delete_user", "ingest_vectors", "snapshot"]

// MARK: - Decoding

/// Decodes and validates request lines.
public struct RequestDecoder: Sendable {
    public let limits: ProtocolLimits

    public init(limits: ProtocolLimits) { self.limits = limits }

    /// The id of a request object, when it has a valid one (used to answer requests that fail later).
    public static func requestID(of root: JSONValue) -> RequestID? {
        guard case .object(let object) = root, let value = object["id"] else { return nil }
        switch value {
        case .int(let number): return .int(number)
        case .string(let text): return .string(text)
        default: return nil
        }
    }

    /// Validates a parsed line.
    ///
    /// - Throws: `.invalidRequest`, `.unknownOp`, `.tooLarge` with a message naming the field.
    public func decode(_ root: JSONValue) throws(SteerError) -> Request {
        guard case .object(let object) = root else {
            throw SteerError.invalid("request must be a JSON object, got \(root.typeName)")
        }
        var id: RequestID?
        if let value = object["id"] {
            switch value {
            case .int(let number): id = .int(number)
            case .string(let text): id = .string(text)
            default: throw SteerError.invalid("id must be a string or an integer, got \(value.typeName)")
            }
        }
        guard let opValue = object["op"] else { throw SteerError.invalid("missing field 'op'") }
        guard case .string(let op) = opValue else { throw SteerError.invalid("op must be a string, got \(opValue.typeName)") }
        var token: String?
        if let value = object["token"] {
            guard case .string(let text) = value else { throw SteerError.invalid("token must be a string, got \(value.typeName)") }
            token = text
        }
        let fields = Fields(object: object, op: op)
        var timeoutMillis: Int?
        if let value = try fields.int("timeout_ms") {
            guard value >= 1 else { throw SteerError.invalid("timeout_ms must be at least 1, got \(value)") }
            guard value <= limits.maxTimeoutMillis else {
                throw SteerError(.tooLarge, "timeout_ms is \(value), limit is \(limits.maxTimeoutMillis) (maxTimeoutMillis)")
            }
            timeoutMillis = value
        }
        var fairQueue: UInt64?
        if let value = try fields.int("fair_queue") {
            guard value >= 0 else { throw SteerError.invalid("fair_queue must be at least 0, got \(value)") }
            fairQueue = UInt64(value)
        }
        var minSequence: UInt64?
        if let value = try fields.int("min_sequence") {
            guard value >= 0 else { throw SteerError.invalid("min_sequence must be at least 0, got \(value)") }
            minSequence = UInt64(value)
        }
        let minSequences = try Self.decodeSequences(object["min_sequences"])
        var collection: String?
        if let name = try fields.string("collection") {
            guard Request.collectionOperations.contains(op) || op == "alias" else {
                throw SteerError.invalid("op '\(op)' takes no 'collection' (it is taken by \(Request.collectionOperations.sorted().joined(separator: ", ")))")
            }
            try CollectionName.validate(name, field: "collection")
            collection = name
        }
        let operation: Request.Operation
        switch op {
        case "ping":
            try fields.allow([])
            operation = .ping
        case "stats":
            try fields.allow([])
            operation = .stats
        case "upsert":
            try fields.allow(["items"])
            operation = .upsert(try decodeItems(fields))
        case "delete":
            try fields.allow(["ids"])
            operation = .delete(Self.unique(try decodeIDs(fields, "ids")))
        case "get":
            try fields.allow(["ids"])
            operation = .get(Self.unique(try decodeIDs(fields, "ids")))
        case "search":
            try fields.allow(["vector", "vector_b64", "vectors", "k", "nprobe", "ef_search", "filter", "explain", "oversample"])
            operation = try decodeSearch(fields)
        case "recommend", "encode":
            let examples: Set<String> = op == "recommend" ? ["positive", "negative", "strategy"] : []
            try fields.allow(examples.union(["history", "user", "max_history", "prompt", "k", "exclude_history", "constraints", "filter", "nprobe",
                                             "ef_search", "explain", "oversample"]))
            let request = try decodeRecommend(fields, needsK: op == "recommend")
            operation = op == "recommend" ? .recommend(request) : .encode(request)
        case "swap":
            try fields.allow(["generation", "checkpoint"])
            guard let generation = try fields.string("generation") else { throw SteerError.invalid("swap: missing field 'generation'") }
            guard !generation.isEmpty else { throw SteerError.invalid("swap: 'generation' is empty") }
            operation = .swap(generation: generation, checkpoint: try fields.string("checkpoint"))
        case "prepare", "activate":
            try fields.allow(op == "prepare" ? ["generation", "checkpoint"] : ["generation"])
            guard let generation = try fields.string("generation") else { throw SteerError.invalid("\(op): missing field 'generation'") }
            guard !generation.isEmpty else { throw SteerError.invalid("\(op): 'generation' is empty") }
            operation = op == "prepare" ? .prepare(generation: generation, checkpoint: try fields.string("checkpoint")) : .activate(generation: generation)
        case "event":
            try fields.allow(["user", "item", "kind", "ts", "events"])
            operation = .event(try decodeEvents(fields))
        case "get_user":
            try fields.allow(["user", "limit"])
            operation = .getUser(try decodeUser(fields, required: true)!,
                                 limit: try decodePositive(fields, "limit", limit: UserEvent.maxEventsPerUserLimit, limitName: "the largest per-user cap"))
        case "delete_user":
            try fields.allow(["user"])
            operation = .deleteUser(try decodeUser(fields, required: true)!)
        case "snapshot":
            try fields.allow(["name"])
            guard let name = try fields.string("name") else { throw SteerError.invalid("snapshot: missing field 'name'") }
            try Request.validateSnapshotName(name)
            operation = .snapshot(name: name)
        case "ingest_vectors":
            try fields.allow(["version", "dimension", "checkpoint_hash", "items", "complete"])
            operation = try decodeIngestVectors(fields)
        case "create_collection":
            try fields.allow(["name", "dimension", "metric", "index_spec", "embedding_version", "checkpoint"])
            operation = .createCollection(try decodeCollectionSettings(fields))
        case "list_collections":
            try fields.allow([])
            operation = .listCollections
        case "describe_collection", "drop_collection":
            try fields.allow(["name"])
            let name = try requiredName(fields, "name")
            operation = op == "drop_collection" ? .dropCollection(name) : .describeCollection(name)
        case "alias":
            try fields.allow(["alias", "collection"])
            let alias = try requiredName(fields, "alias")
            guard let target = collection else { throw SteerError.invalid("alias: missing field 'collection'") }
            collection = nil
            operation = .alias(alias: alias, collection: target)
        case "delete_alias":
            try fields.allow(["alias"])
            operation = .deleteAlias(try requiredName(fields, "alias"))
        case "declare_index":
            try fields.allow(["attr", "kind"])
            guard let attribute = try fields.string("attr") else { throw SteerError.invalid("declare_index: missing field 'attr'") }
            guard let kind = try fields.string("kind") else { throw SteerError.invalid("declare_index: missing field 'kind'") }
            operation = .declareIndex(attribute: attribute, kind: try PayloadKind(parsing: kind))
        default:
            throw SteerError(.unknownOp, "unknown op '\(op)' (known: \(knownOperations.joined(separator: ", ")))")
        }
        return Request(id: id, operation: operation, token: token, timeoutMillis: timeoutMillis, fairQueue: fairQueue,
                       minSequence: minSequence, collection: collection, minSequences: minSequences)
    }

    /// `min_sequences`: an array of 1...`Request.maxShardSequences` integers ≥ 0; nil when absent or null.
    static func decodeSequences(_ value: JSONValue?) throws(SteerError) -> [UInt64]? {
        guard let value, value != .null else { return nil }
        guard case .array(let elements) = value else {
            throw SteerError.invalid("min_sequences must be an array of integers (one per shard), got \(value.typeName)")
        }
        guard !elements.isEmpty else { throw SteerError.invalid("min_sequences must not be empty") }
        guard elements.count <= Request.maxShardSequences else {
            throw SteerError(.tooLarge, "min_sequences has \(elements.count) entries, limit is \(Request.maxShardSequences)")
        }
        var sequences: [UInt64] = []
        sequences.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            guard case .int(let number) = element, number >= 0 else {
                throw SteerError.invalid("min_sequences[\(index)] must be an integer at least 0")
            }
            sequences.append(UInt64(number))
        }
        return sequences
    }

    /// Longest `index_spec` or `embedding_version` of `create_collection`, in bytes.
    public static let maxCollectionSettingBytes = 256

    /// A required collection or alias name field.
    private func requiredName(_ fields: Fields, _ name: String) throws(SteerError) -> String {
        guard let value = try fields.string(name) else { throw SteerError.invalid("\(fields.op): missing field '\(name)'") }
        try CollectionName.validate(value, field: name)
        return value
    }

    private func decodeCollectionSettings(_ fields: Fields) throws(SteerError) -> CollectionSettings {
        let name = try requiredName(fields, "name")
        guard name != CollectionName.defaultName else {
            throw SteerError.invalid("'\(name)' is the default collection's name and cannot be created")
        }
        var checkpoint: String?
        if let text = try fields.string("checkpoint") {
            guard !text.isEmpty, text.utf8.count <= PathRoot.maxReferenceBytes else {
                throw SteerError.invalid("checkpoint must be 1 to \(PathRoot.maxReferenceBytes) bytes")
            }
            checkpoint = text
        }
        let dimension = try fields.int("dimension")
        if dimension == nil, checkpoint == nil { throw SteerError.invalid("create_collection: missing field 'dimension' (or 'checkpoint')") }
        if let dimension, !(1...65536).contains(dimension) { throw SteerError.invalid("dimension must be 1 to 65536, got \(dimension)") }
        var metric: Metric?
        if let text = try fields.string("metric") {
            guard text.utf8.count <= 16 else { throw SteerError.invalid("metric must be 'ip', 'l2' or 'cosine'") }
            metric = try Metric(parsing: text)
        }
        func bounded(_ field: String) throws(SteerError) -> String? {
            guard let text = try fields.string(field) else { return nil }
            guard !text.isEmpty else { throw SteerError.invalid("\(field) must not be empty") }
            guard text.utf8.count <= Self.maxCollectionSettingBytes else {
                throw SteerError(.tooLarge, "\(field) is \(text.utf8.count) bytes, limit is \(Self.maxCollectionSettingBytes)")
            }
            return text
        }
        return CollectionSettings(name: name, dimension: dimension, metric: metric, indexSpec: try bounded("index_spec"),
                                  embeddingVersion: try bounded("embedding_version"), checkpoint: checkpoint)
    }

    private func decodeK(_ fields: Fields, required: Bool) throws(SteerError) -> Int {
        guard let k = try fields.int("k") else {
            if required { throw SteerError.invalid("\(fields.op): missing field 'k'") }
            return 10
        }
        guard k >= 1 else { throw SteerError.invalid("k must be at least 1, got \(k)") }
        guard k <= limits.maxK else { throw SteerError(.tooLarge, "k is \(k), limit is \(limits.maxK)") }
        return k
    }

    private func decodePositive(_ fields: Fields, _ name: String, limit: Int, limitName: String) throws(SteerError) -> Int? {
        guard let value = try fields.int(name) else { return nil }
        guard value >= 1 else { throw SteerError.invalid("\(name) must be at least 1, got \(value)") }
        guard value <= limit else { throw SteerError(.tooLarge, "\(name) is \(value), limit is \(limit) (\(limitName))") }
        return value
    }

    private func decodeEfSearch(_ fields: Fields) throws(SteerError) -> Int? {
        try decodePositive(fields, "ef_search", limit: limits.maxEfSearch, limitName: "maxEfSearch")
    }

    private func decodeNprobe(_ fields: Fields) throws(SteerError) -> Int? {
        try decodePositive(fields, "nprobe", limit: limits.maxNprobe, limitName: "maxNprobe")
    }

    /// Refuses a request whose engine work exceeds `maxQueryCost` (before any of it runs).
    private func requireAffordable(queries: Int, k: Int, efSearch: Int?, nprobe: Int?, filter: TagFilter) throws(SteerError) {
        let nodes = filter.expression?.nodeCount ?? 0
        let cost = ProtocolLimits.cost(queries: queries, k: k, efSearch: efSearch, nprobe: nprobe, filterNodes: nodes)
        guard cost <= limits.maxQueryCost else {
            let filterPart = nodes > 0 ? " + \(nodes) filter nodes × \(ProtocolLimits.filterNodeUnits)" : ""
            throw SteerError(.tooLarge, "the request costs \(cost) work units (\(queries) queries × max(k \(k), ef_search \(efSearch ?? 0), nprobe \(nprobe ?? 0))\(filterPart)), limit is \(limits.maxQueryCost) (maxQueryCost)")
        }
    }

    /// `ids` without repeats, first occurrences in order (a repeated id would be fetched and written again).
    static func unique(_ ids: [ItemID]) -> [ItemID] {
        var seen = Set<ItemID>(minimumCapacity: ids.count)
        return ids.filter { seen.insert($0).inserted }
    }

    private func decodeFilter(_ fields: Fields) throws(SteerError) -> TagFilter {
        guard let value = fields.object["filter"] else { return TagFilter() }
        guard case .object(let filter) = value else { throw SteerError.invalid("filter must be an object, got \(value.typeName)") }
        // Fields other than the tag lists form the expression node (docs/protocol.md, "Filter expressions").
        let tagLists: Set<String> = ["tags_any", "tags_none", "tag_groups"]
        let nodeFields = filter.fields.filter { !tagLists.contains($0.key) }
        var expression: FilterExpression?
        if !nodeFields.isEmpty {
            guard nodeFields.contains(where: { FilterParser.nodeKeys.contains($0.key) }) else {
                throw SteerError.invalid("unknown field 'filter.\(nodeFields[0].key)' (known: tags_any, tags_none, tag_groups, and, or, not, tag, attr)")
            }
            expression = try FilterParser(maxDepth: limits.maxFilterDepth, maxNodes: limits.maxFilterNodes)
                .parse(JSONObject(nodeFields), path: "filter").0
        }
        func tags(_ name: String, _ given: JSONValue? = nil) throws(SteerError) -> [String] {
            guard let value = given ?? filter[name] else { return [] }
            guard case .array(let elements) = value else { throw SteerError.invalid("filter.\(name) must be an array of strings, got \(value.typeName)") }
            guard elements.count <= limits.maxBatch else {
                throw SteerError(.tooLarge, "filter.\(name) has \(elements.count) tags, limit is \(limits.maxBatch)")
            }
            var result: [String] = []
            for (index, element) in elements.enumerated() {
                guard case .string(let tag) = element else {
                    throw SteerError.invalid("filter.\(name)[\(index)] must be a string, got \(element.typeName)")
                }
                guard !tag.isEmpty else { throw SteerError.invalid("filter.\(name)[\(index)] must not be empty") }
                result.append(tag)
            }
            return result
        }
        var groups: [[String]] = []
        if let value = filter["tag_groups"] {
            guard case .array(let elements) = value else {
                throw SteerError.invalid("filter.tag_groups must be an array of arrays of strings, got \(value.typeName)")
            }
            guard elements.count <= limits.maxBatch else {
                throw SteerError(.tooLarge, "filter.tag_groups has \(elements.count) groups, limit is \(limits.maxBatch)")
            }
            for (index, element) in elements.enumerated() {
                let group = try tags("tag_groups[\(index)]", element)
                guard !group.isEmpty else { throw SteerError.invalid("filter.tag_groups[\(index)] must not be empty") }
                groups.append(group)
            }
        }
        let result = TagFilter(tagsAny: Self.uniqueTags(try tags("tags_any")), tagsNone: Self.uniqueTags(try tags("tags_none")),
                               tagGroups: groups.map(Self.uniqueTags), expression: expression)
        var distinct = expression?.tags ?? []
        distinct.formUnion(result.tagsAny)
        distinct.formUnion(result.tagsNone)
        for group in result.tagGroups { distinct.formUnion(group) }
        guard distinct.count <= limits.maxFilterTerms else {
            throw SteerError(.tooLarge, "filter names \(distinct.count) distinct tags, limit is \(limits.maxFilterTerms) (maxFilterTerms)")
        }
        return result
    }

    private static func uniqueTags(_ tags: [String]) -> [String] {
        var seen = Set<String>(minimumCapacity: tags.count)
        return tags.filter { seen.insert($0).inserted }
    }

    /// An item's vector: exactly one of `vector` (a JSON array) or `vector_b64` (a base64 string);
    /// errors name the field under `prefix` (`items[3].vector_b64`).
    static func itemVector(_ object: JSONObject, prefix: String) throws(SteerError) -> [Float] {
        switch (object["vector"], object["vector_b64"]) {
        case (let json?, nil): return try vector(json, field: "\(prefix).vector")
        case (nil, let b64?):
            guard case .string(let text) = b64 else { throw SteerError.invalid("\(prefix).vector_b64 must be a string, got \(b64.typeName)") }
            return try Base64Floats.decode(text, field: "\(prefix).vector_b64")
        case (nil, nil): throw SteerError.invalid("\(prefix): missing field 'vector' (or 'vector_b64')")
        case (_?, _?): throw SteerError.invalid("\(prefix): give 'vector' or 'vector_b64', not both")
        }
    }

    /// A vector from a JSON array of numbers or a base64 string.
    static func vector(_ value: JSONValue, field: String) throws(SteerError) -> [Float] {
        switch value {
        case .floats(let values):
            return values
        case .array(let elements):
            guard !elements.isEmpty else { throw SteerError.invalid("\(field) must not be empty") }
            var values: [Float] = []
            values.reserveCapacity(elements.count)
            for (index, element) in elements.enumerated() {
                switch element {
                case .int(let number): values.append(Float(number))
                case .double(let number): values.append(Float(number))
                default: throw SteerError.invalid("\(field)[\(index)] must be a number, got \(element.typeName)")
                }
            }
            return values
        default:
            throw SteerError.invalid("\(field) must be an array of numbers, got \(value.typeName)")
        }
    }

    private func decodeSearch(_ fields: Fields) throws(SteerError) -> Request.Operation {
        let object = fields.object
        let given = ["vector", "vector_b64", "vectors"].filter { object[$0] != nil }
        guard given.count == 1 else {
            if given.isEmpty { throw SteerError.invalid("search needs one of 'vector', 'vector_b64' or 'vectors'") }
            throw SteerError.invalid("search takes only one of 'vector', 'vector_b64' or 'vectors', got \(given.joined(separator: " and "))")
        }
        var queries: [[Float]] = []
        var batch = false
        if let value = object["vector"] {
            queries = [try Self.vector(value, field: "vector")]
        } else if let value = object["vector_b64"] {
            guard case .string(let text) = value else { throw SteerError.invalid("vector_b64 must be a string, got \(value.typeName)") }
            queries = [try Base64Floats.decode(text, field: "vector_b64")]
        } else if let value = object["vectors"] {
            batch = true
            guard case .array(let elements) = value else {
                throw SteerError.invalid("vectors must be an array of vectors (arrays or base64 strings), got \(value.typeName)")
            }
            guard !elements.isEmpty else { throw SteerError.invalid("vectors must not be empty") }
            guard elements.count <= limits.maxBatch else {
                throw SteerError(.tooLarge, "vectors has \(elements.count) queries, limit is \(limits.maxBatch)")
            }
            queries.reserveCapacity(elements.count)
            for (index, element) in elements.enumerated() {
                if case .string(let text) = element {
                    queries.append(try Base64Floats.decode(text, field: "vectors[\(index)]"))
                } else {
                    queries.append(try Self.vector(element, field: "vectors[\(index)]"))
                }
            }
        }
        for (index, query) in queries.enumerated() {
            let field = batch ? "vectors[\(index)]" : (object["vector"] != nil ? "vector" : "vector_b64")
            try Vectors.requireFinite(query, field: field)
        }
        let options = SearchOptions(k: try decodeK(fields, required: true), nprobe: try decodeNprobe(fields),
                                    efSearch: try decodeEfSearch(fields), filter: try decodeFilter(fields),
                                    explain: try fields.bool("explain") ?? false)
        var searchOptions = options
        searchOptions.oversample = try decodePositive(fields, "oversample", limit: limits.maxOversample, limitName: "maxOversample")
        try requireAffordable(queries: queries.count, k: options.k * (searchOptions.oversample ?? 1), efSearch: options.efSearch,
                              nprobe: options.nprobe, filter: options.filter)
        return .search(queries: queries, options: searchOptions, batch: batch)
    }

    private func decodeRecommend(_ fields: Fields, needsK: Bool) throws(SteerError) -> RecommendRequest {
        let user = try decodeUser(fields, required: false)
        let hasExamples = fields.object["positive"] != nil || fields.object["negative"] != nil
        guard fields.object["history"] != nil || user != nil || hasExamples else {
            throw SteerError.invalid("\(fields.op): missing field 'history' (or 'user', 'positive', 'negative')")
        }
        // An empty history is the encoder's call: DPR answers a prompt alone (h = 0), the mean encoder cannot.
        let history = fields.object["history"] == nil ? [] : try decodeIDs(fields, "history", limit: limits.maxHistory, allowEmpty: true)
        let maxHistory = try decodePositive(fields, "max_history", limit: limits.maxHistory, limitName: "maxHistory")
        if maxHistory != nil && user == nil { throw SteerError.invalid("\(fields.op): max_history needs 'user'") }
        var prompt: String?
        if let text = try fields.string("prompt") {
            guard text.utf8.count <= limits.maxPromptBytes else {
                throw SteerError(.tooLarge, "prompt is \(text.utf8.count) bytes, limit is \(limits.maxPromptBytes)")
            }
            if !text.allSatisfy(\.isWhitespace) { prompt = text }
        }
        var constraints = ConstraintMode.soft
        if let text = try fields.string("constraints") {
            guard let mode = ConstraintMode(rawValue: text) else {
                throw SteerError.invalid("constraints must be 'soft', 'hybrid' or 'hard', got '\(text)'")
            }
            constraints = mode
        }
        var request = RecommendRequest(history: history, prompt: prompt, k: try decodeK(fields, required: false),
                                       excludeHistory: try fields.bool("exclude_history") ?? true, constraints: constraints,
                                       filter: try decodeFilter(fields), nprobe: try decodeNprobe(fields),
                                       efSearch: try decodeEfSearch(fields))
        request.explain = try fields.bool("explain") ?? false
        request.oversample = try decodePositive(fields, "oversample", limit: limits.maxOversample, limitName: "maxOversample")
        request.user = user
        request.maxHistory = maxHistory ?? RecommendRequest.defaultMaxHistory
        if fields.object["strategy"] != nil && !hasExamples { throw SteerError.invalid("\(fields.op): strategy needs 'positive' or 'negative'") }
        if hasExamples {
            request.positive = fields.object["positive"] == nil ? [] : try decodeIDs(fields, "positive", limit: limits.maxExamples, allowEmpty: true)
            request.negative = fields.object["negative"] == nil ? [] : try decodeIDs(fields, "negative", limit: limits.maxExamples, allowEmpty: true)
            if let text = try fields.string("strategy") {
                guard let strategy = ExampleStrategy(rawValue: text) else {
                    throw SteerError.invalid("strategy must be 'average_vector' or 'best_score', got '\(text)'")
                }
                request.strategy = strategy
            }
            if request.strategy == .bestScore {
                // Every positive (and the encoded query) searches bestScoreCandidates items, each rescored against every example.
                let positives = request.positive.count + 1
                let examples = request.positive.count + request.negative.count + 1
                let fetch = ExampleStrategy.bestScoreCandidates(k: request.k)
                try requireAffordable(queries: positives, k: fetch * examples * (request.oversample ?? 1), efSearch: request.efSearch,
                                      nprobe: request.nprobe, filter: request.filter)
                return request
            }
        }
        try requireAffordable(queries: 1, k: request.k * (request.oversample ?? 1), efSearch: request.efSearch, nprobe: request.nprobe,
                              filter: request.filter)
        return request
    }

    static func itemID(_ value: JSONValue, field: String) throws(SteerError) -> ItemID {
        let id: ItemID
        switch value {
        case .int(let number): id = .int(number)
        case .string(let text): id = .string(text)
        default: throw SteerError.invalid("\(field) must be a string or an integer, got \(value.typeName)")
        }
        do {
            try id.validate()
        } catch {
            throw SteerError(error.code, "\(field): \(error.message)")
        }
        return id
    }

    private func decodeIDs(_ fields: Fields, _ name: String, limit: Int? = nil, allowEmpty: Bool = false) throws(SteerError) -> [ItemID] {
        guard let value = fields.object[name] else { throw SteerError.invalid("\(fields.op): missing field '\(name)'") }
        let elements: [JSONValue]
        switch value {
        case .array(let list): elements = list
        case .floats: throw SteerError.invalid("\(name) must be an array of string or integer ids; fractional numbers are not ids")
        default: throw SteerError.invalid("\(name) must be an array of ids, got \(value.typeName)")
        }
        guard allowEmpty || !elements.isEmpty else { throw SteerError.invalid("\(name) must not be empty") }
        let limit = limit ?? limits.maxBatch
        guard elements.count <= limit else { throw SteerError(.tooLarge, "\(name) has \(elements.count) ids, limit is \(limit)") }
        var ids: [ItemID] = []
        ids.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            ids.append(try Self.itemID(element, field: "\(name)[\(index)]"))
        }
        return ids
    }

    private func decodeItems(_ fields: Fields) throws(SteerError) -> [ItemInput] {
        guard let value = fields.object["items"] else { throw SteerError.invalid("upsert: missing field 'items'") }
        guard case .array(let elements) = value else { throw SteerError.invalid("items must be an array of objects, got \(value.typeName)") }
        guard !elements.isEmpty else { throw SteerError.invalid("items must not be empty") }
        guard elements.count <= limits.maxBatch else {
            throw SteerError(.tooLarge, "items has \(elements.count) items, limit is \(limits.maxBatch)")
        }
        var items: [ItemInput] = []
        items.reserveCapacity(elements.count)
        var seen: [ItemID: Int] = [:]
        for (index, element) in elements.enumerated() {
            let prefix = "items[\(index)]"
            guard case .object(let object) = element else { throw SteerError.invalid("\(prefix) must be an object, got \(element.typeName)") }
            for field in object.fields where !["id", "vector", "vector_b64", "tags", "title", "attributes"].contains(field.key) {
                throw SteerError.invalid("unknown field '\(prefix).\(field.key)' (known: id, vector, vector_b64, tags, title, attributes)")
            }
            guard let idValue = object["id"] else { throw SteerError.invalid("\(prefix): missing field 'id'") }
            let id = try Self.itemID(idValue, field: "\(prefix).id")
            if let first = seen.updateValue(index, forKey: id) {
                throw SteerError.invalid("\(prefix).id \(id) duplicates items[\(first)].id")
            }
            let vector = try Self.itemVector(object, prefix: prefix)
            try Vectors.requireFinite(vector, field: "\(prefix).vector")
            var tags: [String] = []
            if let value = object["tags"] {
                guard case .array(let list) = value else { throw SteerError.invalid("\(prefix).tags must be an array of strings, got \(value.typeName)") }
                for (tagIndex, tag) in list.enumerated() {
                    guard case .string(let text) = tag else {
                        throw SteerError.invalid("\(prefix).tags[\(tagIndex)] must be a string, got \(tag.typeName)")
                    }
                    tags.append(text)
                }
            }
            var title: String?
            if let value = object["title"] {
                switch value {
                case .string(let text): title = text
                case .null: title = nil
                default: throw SteerError.invalid("\(prefix).title must be a string, got \(value.typeName)")
                }
            }
            var attributes: String?
            if let value = object["attributes"] {
                switch value {
                case .object:
                    var writer = JSONWriter()
                    writer.value(value)
                    attributes = String(decoding: writer.bytes, as: UTF8.self)
                case .null: attributes = nil
                default: throw SteerError.invalid("\(prefix).attributes must be an object, got \(value.typeName)")
                }
            }
            items.append(ItemInput(id: id, vector: vector, title: title, tags: tags, attributesJSON: attributes))
        }
        return items
    }
}

/// Typed access to a request's fields with messages that name them.
struct Fields {
    let object: JSONObject
    let op: String

    /// Fields every op accepts.
    static let common: Set<String> = ["id", "op", "token", "timeout_ms", "fair_queue", "min_sequence", "min_sequences"]

    func allow(_ names: Set<String>) throws(SteerError) {
        for field in object.fields where !names.contains(field.key) && !Self.common.contains(field.key)
            && !(field.key == "collection" && Request.collectionOperations.contains(op)) {
            let known = names.isEmpty ? "none besides id, op, token, timeout_ms, fair_queue, min_sequence, min_sequences" : names.sorted().joined(separator: ", ")
            throw SteerError.invalid("unknown field '\(field.key)' for op '\(op)' (known: \(known))")
        }
    }

    func int(_ name: String) throws(SteerError) -> Int? {
        guard let value = object[name] else { return nil }
        switch value {
        case .int(let number):
            guard let exact = Int(exactly: number) else { throw SteerError.invalid("\(name) is out of range") }
            return exact
        case .null:
            return nil
        case .double(let number):
            throw SteerError.invalid("\(name) must be an integer, got \(number)")
        default:
            throw SteerError.invalid("\(name) must be an integer, got \(value.typeName)")
        }
    }

    func string(_ name: String) throws(SteerError) -> String? {
        guard let value = object[name] else { return nil }
        switch value {
        case .string(let text): return text
        case .null: return nil
        default: throw SteerError.invalid("\(name) must be a string, got \(value.typeName)")
        }
    }

    func bool(_ name: String) throws(SteerError) -> Bool? {
        guard let value = object[name] else { return nil }
        switch value {
        case .bool(let flag): return flag
        case .null: return nil
        default: throw SteerError.invalid("\(name) must be true or false, got \(value.typeName)")
        }
    }
}
