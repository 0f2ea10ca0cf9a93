import SteerCore

/// Writes `Request` values as request lines (without the newline): the protocol's one request encoder.
/// SteerClient's `RequestLine` builders and the router's shard lines both go through it, so what a
/// client sends and what the router forwards are the lines `RequestDecoder` reads back as the same
/// request (`RequestEncoderTests` checks encode → decode for every op).
///
/// Layout: `{"id":…,"op":…,<the op's fields>,"collection":…,"token":…,"timeout_ms":…,"fair_queue":…,"min_sequence":…,"min_sequences":[…]}`;
/// optional fields are left out when nil (or, for a filter, empty), and values equal to the decoder's
/// defaults (`exclude_history: true`, `constraints: soft`) are left out too. Strings go through
/// `JSONWriter.string`, so a hostile token or tag stays one JSON string.
public enum RequestEncoder {
    /// How vectors are written: `base64` (`vector_b64`, base64 strings in `vectors`; cheap to write and
    /// to parse, exact) or `json` (arrays of numbers).
    public enum VectorEncoding: Sendable {
        case json
        case base64
    }

    /// The request line of `request`.
    public static func encode(_ request: Request, vectors: VectorEncoding = .base64) -> [UInt8] {
        var writer = JSONWriter(capacity: estimatedBytes(request.operation))
        writer.raw("{")
        writer.requestIDField(request.id)
        writer.raw("\"op\":")
        writer.string(request.operation.name)
        writeFields(request.operation, vectors: vectors, &writer)
        if let collection = request.collection {
            writer.raw(",\"collection\":")
            writer.string(collection)
        }
        if let token = request.token {
            writer.raw(",\"token\":")
            writer.string(token)
        }
        if let timeoutMillis = request.timeoutMillis {
            writer.raw(",\"timeout_ms\":")
            writer.int(timeoutMillis)
        }
        if let fairQueue = request.fairQueue {
            writer.raw(",\"fair_queue\":")
            writer.int(Int64(bitPattern: fairQueue & UInt64(Int64.max)))
        }
        if let minSequence = request.minSequence {
            writer.raw(",\"min_sequence\":")
            writer.int(Int64(bitPattern: minSequence & UInt64(Int64.max)))
        }
        if let minSequences = request.minSequences {
            writer.raw(",\"min_sequences\":[")
            for (index, sequence) in minSequences.enumerated() {
                if index > 0 { writer.raw(",") }
                writer.int(Int64(bitPattern: sequence & UInt64(Int64.max)))
            }
            writer.raw("]")
        }
        writer.raw("}")
        return writer.bytes
    }

    /// `line` (a JSON object this encoder wrote) with `token`, `timeout_ms` and `fair_queue` appended: the
    /// router re-sends one encoded line to many shards with each shard's credential and remaining deadline.
    /// The line is returned unchanged when all three are nil or it does not end in `}`.
    public static func appendingCommonFields(to line: [UInt8], token: String?, timeoutMillis: Int?, fairQueue: UInt64? = nil) -> [UInt8] {
        guard token != nil || timeoutMillis != nil || fairQueue != nil, line.last == UInt8(ascii: "}") else { return line }
        var writer = JSONWriter(capacity: line.count + 96 + (token?.utf8.count ?? 0))
        writer.bytes.append(contentsOf: line.dropLast())
        var first = line.count == 2
        func field(_ name: StaticString) {
            writer.raw(first ? "" : ",")
            writer.raw(name)
            first = false
        }
        if let token {
            field("\"token\":")
            writer.string(token)
        }
        if let timeoutMillis {
            field("\"timeout_ms\":")
            writer.int(timeoutMillis)
        }
        if let fairQueue {
            field("\"fair_queue\":")
            writer.int(Int64(bitPattern: fairQueue & UInt64(Int64.max)))
        }
        writer.raw("}")
        return writer.bytes
    }

    /// The `items` array element of one upsert item.
    public static func writeItem(_ item: ItemInput, vectors: VectorEncoding, _ writer: inout JSONWriter) {
        writer.raw("{\"id\":")
        writer.itemID(item.id)
        writeVector(item.vector, json: "vector", base64: "vector_b64", vectors: vectors, &writer)
        if let title = item.title {
            writer.raw(",\"title\":")
            writer.string(title)
        }
        if !item.tags.isEmpty {
            writer.raw(",\"tags\":")
            writer.strings(item.tags)
        }
        if let attributes = item.attributesJSON {
            writer.raw(",\"attributes\":")
            writer.bytes.append(contentsOf: attributes.utf8)
        }
        writer.raw("}")
    }

    /// `,"filter":{…}` when `filter` is not empty; nothing otherwise: the tag lists, then the fields of
    /// the expression's root node in the same object (docs/protocol.md, "Filter expressions").
    public static func writeFilter(_ filter: TagFilter, _ writer: inout JSONWriter) {
        guard !filter.isEmpty else { return }
        writer.raw(",\"filter\":{")
        var first = true
        func key(_ name: StaticString) {
            if !first { writer.raw(",") }
            first = false
            writer.raw(name)
        }
        if !filter.tagsAny.isEmpty {
            key("\"tags_any\":")
            writer.strings(filter.tagsAny)
        }
        if !filter.tagsNone.isEmpty {
            key("\"tags_none\":")
            writer.strings(filter.tagsNone)
        }
        if !filter.tagGroups.isEmpty {
            key("\"tag_groups\":[")
            for (index, group) in filter.tagGroups.enumerated() {
                if index > 0 { writer.raw(",") }
                writer.strings(group)
            }
            writer.raw("]")
        }
        if let expression = filter.expression, case .object(let node) = expression.jsonValue {
            for field in node.fields {
                if !first { writer.raw(",") }
                first = false
                writer.string(field.key)
                writer.raw(":")
                writer.value(field.value)
            }
        }
        writer.raw("}")
    }

    // MARK: - Private

    private static func estimatedBytes(_ operation: Request.Operation) -> Int {
        switch operation {
        case .upsert(let items): return 64 + items.reduce(0) { $0 + 48 + $1.vector.count * 12 + ($1.attributesJSON?.utf8.count ?? 0) }
        case .search(let queries, _, _): return 96 + queries.count * ((queries.first?.count ?? 0) * 12 + 8)
        case .get(let ids), .delete(let ids): return 48 + ids.count * 12
        case .recommend(let request), .encode(let request): return 128 + request.history.count * 12 + (request.prompt?.utf8.count ?? 0)
        default: return 96
        }
    }

    private static func writeVector(_ vector: [Float], json: StaticString, base64: StaticString, vectors: VectorEncoding,
                                    _ writer: inout JSONWriter) {
        writer.raw(",\"")
        switch vectors {
        case .json:
            writer.raw(json)
            writer.raw("\":")
            writer.floats(vector)
        case .base64:
            writer.raw(base64)
            writer.raw("\":")
            writer.string(Base64Floats.encode(vector))
        }
    }

    private static func writeIDs(_ name: StaticString, _ ids: [ItemID], _ writer: inout JSONWriter) {
        writer.raw(",\"")
        writer.raw(name)
        writer.raw("\":[")
        for (index, id) in ids.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.itemID(id)
        }
        writer.raw("]")
    }

    private static func writeKnobs(k: Int?, nprobe: Int?, efSearch: Int?, filter: TagFilter, explain: Bool, oversample: Int?,
                                   _ writer: inout JSONWriter) {
        if explain { writer.raw(",\"explain\":true") }
        if let oversample {
            writer.raw(",\"oversample\":")
            writer.int(oversample)
        }
        if let k {
            writer.raw(",\"k\":")
            writer.int(k)
        }
        if let nprobe {
            writer.raw(",\"nprobe\":")
            writer.int(nprobe)
        }
        if let efSearch {
            writer.raw(",\"ef_search\":")
            writer.int(efSearch)
        }
        writeFilter(filter, &writer)
    }

    private static func writeFields(_ operation: Request.Operation, vectors: VectorEncoding, _ writer: inout JSONWriter) {
        switch operation {
        case .ping, .stats:
            break
        case .upsert(let items):
            writer.raw(",\"items\":[")
            for (index, item) in items.enumerated() {
                if index > 0 { writer.raw(",") }
                writeItem(item, vectors: vectors, &writer)
            }
            writer.raw("]")
        case .delete(let ids), .get(let ids):
            writeIDs("ids", ids, &writer)
        case .search(let queries, let options, let batch):
            if batch {
                writer.raw(",\"vectors\":[")
                for (index, query) in queries.enumerated() {
                    if index > 0 { writer.raw(",") }
                    switch vectors {
                    case .json: writer.floats(query)
                    case .base64: writer.string(Base64Floats.encode(query))
                    }
                }
                writer.raw("]")
            } else {
                writeVector(queries.first ?? [], json: "vector", base64: "vector_b64", vectors: vectors, &writer)
            }
            writeKnobs(k: options.k, nprobe: options.nprobe, efSearch: options.efSearch, filter: options.filter,
                       explain: options.explain, oversample: options.oversample, &writer)
        case .recommend(let request), .encode(let request):
            writeIDs("history", request.history, &writer)
            writeHistorySource(request, &writer)
            if let prompt = request.prompt {
                writer.raw(",\"prompt\":")
                writer.string(prompt)
            }
            if !request.excludeHistory {
                writer.raw(",\"exclude_history\":false")
            }
            if request.constraints != .soft {
                writer.raw(",\"constraints\":")
                writer.string(request.constraints.rawValue)
            }
            writeKnobs(k: request.k, nprobe: request.nprobe, efSearch: request.efSearch, filter: request.filter,
                       explain: request.explain, oversample: request.oversample, &writer)
        case .declareIndex(let attribute, let kind):
            writer.raw(",\"attr\":")
            writer.string(attribute)
            writer.raw(",\"kind\":")
            writer.string(kind.name)
        case .swap(let generation, let checkpoint), .prepare(let generation, let checkpoint):
            writer.raw(",\"generation\":")
            writer.string(generation)
            if let checkpoint {
                writer.raw(",\"checkpoint\":")
                writer.string(checkpoint)
            }
        case .event, .getUser, .deleteUser, .ingestVectors:
            writeHistoryFields(operation, vectors: vectors, &writer)
        case .createCollection(let settings):
            writer.raw(",\"name\":")
            writer.string(settings.name)
            if let dimension = settings.dimension {
                writer.raw(",\"dimension\":")
                writer.int(dimension)
            }
            if let metric = settings.metric {
                writer.raw(",\"metric\":")
                writer.string(metric.rawValue)
            }
            if let indexSpec = settings.indexSpec {
                writer.raw(",\"index_spec\":")
                writer.string(indexSpec)
            }
            if let embeddingVersion = settings.embeddingVersion {
                writer.raw(",\"embedding_version\":")
                writer.string(embeddingVersion)
            }
            if let checkpoint = settings.checkpoint {
                writer.raw(",\"checkpoint\":")
                writer.string(checkpoint)
            }
        case .listCollections:
            break
        case .describeCollection(let name), .dropCollection(let name):
            writer.raw(",\"name\":")
            writer.string(name)
        case .alias(let alias, let collection):
            writer.raw(",\"alias\":")
            writer.string(alias)
            writer.raw(",\"collection\":")
            writer.string(collection)
        case .activate(let generation):
            writer.raw(",\"generation\":")
            writer.string(generation)
        case .snapshot(let name):
            writer.raw(",\"name\":")
            writer.string(name)
        case .deleteAlias(let alias):
            writer.raw(",\"alias\":")
            writer.string(alias)
        }
    }
}
