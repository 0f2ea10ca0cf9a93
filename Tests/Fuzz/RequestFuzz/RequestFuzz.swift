// libFuzzer target for the request decoder: JSON parsing and request validation (SteerProtocol).
// Built only with STEER_FUZZ=1 (see Tests/Fuzz/run.sh). SwiftPM links an executable's entry point as
// `<module>_main`; here that hands over to libFuzzer's driver (`LLVMFuzzerRunDriver`).
//
// Beyond "no crash", every input checks:
// - a parse or validation failure carries one of the documented codes for bad input;
// - a parsed document survives write → parse with the same value (numbers compared by value);
// - a decoded request respects every limit: k, batch sizes, history and prompt lengths, non-empty
//   finite vectors, no duplicate ids in an upsert, valid collection and alias names.
import SteerCore
import SteerProtocol

private let limits = ProtocolLimits(maxLineBytes: 1 << 20, maxK: 50, maxBatch: 8, maxPromptBytes: 256, maxHistory: 16,
                                    maxEfSearch: 300, maxNprobe: 40, maxQueryCost: 200, maxFilterTerms: 6, maxTimeoutMillis: 5000)
private let decoder = RequestDecoder(limits: limits)
private let badInputCodes: Set<SteerError.Code> = [.parseError, .invalidRequest, .unknownOp, .tooLarge]

@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

@_cdecl("steer_fuzz_request_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return runDriver(&count, &arguments, fuzzRequest)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let root: JSONValue
    do {
        root = try JSONParser.parse(bytes)
    } catch {
        require(badInputCodes.contains(error.code), "parse failed with code \(error.code)")
        return 0
    }
    var writer = JSONWriter()
    writer.value(root)
    do {
        let again = try JSONParser.parse(writer.bytes)
        require(sameValue(root, again), "write → parse changed the document")
    } catch {
        require(false, "the writer's output does not parse: \(error)")
    }
    do {
        let request = try decoder.decode(root)
        checkLimits(request)
    } catch {
        require(badInputCodes.contains(error.code), "decode failed with code \(error.code)")
    }
    return 0
}

private func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz invariant broken: \(message())") }
}

/// Equal documents, numbers compared by value (the writer prints integral doubles as integers and
/// non-finite numbers as null) and float arrays by their float32 values.
private func sameValue(_ a: JSONValue, _ b: JSONValue) -> Bool {
    switch (a, b) {
    case (.null, .null): return true
    case (.double(let x), .null): return !x.isFinite
    case (.bool(let x), .bool(let y)): return x == y
    case (.string(let x), .string(let y)): return x == y
    case (.floats(let x), _): return sameFloats(x, b)
    case (.array(let x), .array(let y)):
        return x.count == y.count && zip(x, y).allSatisfy { sameValue($0, $1) }
    case (.object(let x), .object(let y)):
        return x.fields.count == y.fields.count
            && zip(x.fields, y.fields).allSatisfy { $0.key == $1.key && sameValue($0.value, $1.value) }
    default:
        guard let x = number(a), let y = number(b) else { return false }
        return x == y
    }
}

private func sameFloats(_ values: [Float], _ other: JSONValue) -> Bool {
    // A literal beyond float32's range is ±infinity in `.floats` (validation then refuses the vector);
    // the writer prints it as null.
    let parsed: [Float?]
    switch other {
    case .floats(let floats): parsed = floats
    case .array(let elements):
        var collected: [Float?] = []
        for element in elements {
            if case .null = element {
                collected.append(nil)
            } else if let value = number(element) {
                collected.append(Float(value))
            } else {
                return false
            }
        }
        parsed = collected
    default: return false
    }
    return parsed.count == values.count && zip(values, parsed).allSatisfy { value, again in
        guard let again else { return !value.isFinite }
        return value == again
    }
}

private func number(_ value: JSONValue) -> Double? {
    switch value {
    case .int(let x): return Double(x)
    case .double(let x): return x
    default: return nil
    }
}

private func checkFilter(_ filter: TagFilter) {
    var distinct = Set(filter.tagsAny)
    distinct.formUnion(filter.tagsNone)
    for group in filter.tagGroups { distinct.formUnion(group) }
    require(distinct.count <= limits.maxFilterTerms, "\(distinct.count) filter tags")
    require(Set(filter.tagsAny).count == filter.tagsAny.count && Set(filter.tagsNone).count == filter.tagsNone.count,
            "repeated filter tags were not collapsed")
    if let expression = filter.expression {
        require(expression.nodeCount <= limits.maxFilterNodes, "filter of \(expression.nodeCount) nodes")
    }
}

private func checkLimits(_ request: Request) {
    if let timeout = request.timeoutMillis { require((1...limits.maxTimeoutMillis).contains(timeout), "timeout_ms \(timeout)") }
    switch request.operation {
    case .ping, .stats: break
    case .upsert(let items):
        require((1...limits.maxBatch).contains(items.count), "upsert of \(items.count) items")
        require(Set(items.map(\.id)).count == items.count, "duplicate ids in an upsert")
        for item in items {
            require(!item.vector.isEmpty && item.vector.allSatisfy(\.isFinite), "upsert vector empty or not finite")
        }
    case .delete(let ids), .get(let ids):
        require((1...limits.maxBatch).contains(ids.count), "\(ids.count) ids")
        require(Set(ids).count == ids.count, "repeated ids were not collapsed")
    case .search(let queries, let options, _):
        require((1...limits.maxBatch).contains(queries.count), "\(queries.count) queries")
        require((1...limits.maxK).contains(options.k), "k \(options.k)")
        for query in queries {
            require(!query.isEmpty && query.allSatisfy(\.isFinite), "query vector empty or not finite")
        }
        if let nprobe = options.nprobe { require((1...limits.maxNprobe).contains(nprobe), "nprobe \(nprobe)") }
        if let ef = options.efSearch { require((1...limits.maxEfSearch).contains(ef), "ef_search \(ef)") }
        let nodes = options.filter.expression?.nodeCount ?? 0
        let cost = ProtocolLimits.cost(queries: queries.count, k: options.k * (options.oversample ?? 1), efSearch: options.efSearch,
                                       nprobe: options.nprobe, filterNodes: nodes)
        require(cost <= limits.maxQueryCost, "cost \(cost)")
        if let oversample = options.oversample { require((1...limits.maxOversample).contains(oversample), "oversample \(oversample)") }
        checkFilter(options.filter)
    case .recommend(let recommend), .encode(let recommend):
        require(recommend.history.count <= limits.maxHistory, "history of \(recommend.history.count)")
        require((recommend.prompt?.utf8.count ?? 0) <= limits.maxPromptBytes, "prompt over the limit")
        require((1...limits.maxK).contains(recommend.k), "k \(recommend.k)")
        let cost = ProtocolLimits.cost(queries: 1, k: recommend.k * (recommend.oversample ?? 1), efSearch: recommend.efSearch,
                                       nprobe: recommend.nprobe, filterNodes: recommend.filter.expression?.nodeCount ?? 0)
        require(cost <= limits.maxQueryCost, "recommend cost \(cost)")
        checkFilter(recommend.filter)
        require(recommend.positive.count <= limits.maxExamples && recommend.negative.count <= limits.maxExamples, "too many examples")
    case .swap(let generation, _), .prepare(let generation, _), .activate(let generation):
        require(!generation.isEmpty, "empty generation")
    case .declareIndex(let attribute, _):
        require(!attribute.isEmpty, "declare_index of an empty attribute path")
    case .event(let events):
        require((1...limits.maxBatch).contains(events.count), "\(events.count) events")
        for event in events {
            require((1...UserEvent.maxKindBytes).contains(event.kind.utf8.count), "event kind of \(event.kind.utf8.count) bytes")
        }
    case .getUser(_, let limit):
        if let limit { require((1...UserEvent.maxEventsPerUserLimit).contains(limit), "get_user limit \(limit)") }
    case .deleteUser:
        break
    case .ingestVectors(let version, let dimension, _, let items, _):
        require(!version.isEmpty && version.utf8.count <= VersionItem.maxVersionNameBytes, "version name")
        require((1...VersionItem.maxDimension).contains(dimension), "dimension \(dimension)")
        require(items.count <= limits.maxBatch, "\(items.count) ingest items")
        require(Set(items.map(\.id)).count == items.count, "duplicate ids in an ingest chunk")
    case .listCollections:
        break
    case .createCollection(let settings):
        requireName(settings.name)
        require(settings.name != CollectionName.defaultName, "create_collection of the default")
        require(settings.dimension != nil || settings.checkpoint != nil, "create_collection without dimension or checkpoint")
        if let dimension = settings.dimension { require((1...65536).contains(dimension), "dimension \(dimension)") }
        for text in [settings.indexSpec, settings.embeddingVersion].compactMap({ $0 }) {
            require(!text.isEmpty && text.utf8.count <= RequestDecoder.maxCollectionSettingBytes, "setting of \(text.utf8.count) bytes")
        }
    case .describeCollection(let name), .dropCollection(let name), .deleteAlias(let name):
        requireName(name)
    case .alias(let alias, let collection):
        requireName(alias)
        requireName(collection)
    case .snapshot(let name):
        // A directory name inside the snapshot directory: never a path, a hidden name or over the limit.
        let bytes = Array(name.utf8)
        require((1...Request.maxSnapshotNameBytes).contains(bytes.count), "snapshot name of \(bytes.count) bytes")
        require(bytes.first != UInt8(ascii: ".") && !bytes.contains(UInt8(ascii: "/")) && !bytes.contains(0),
                "snapshot name \(name.debugDescription)")
    }
    if let collection = request.collection {
        requireName(collection)
        require(Request.collectionOperations.contains(request.operation.name), "collection on \(request.operation.name)")
    }
}

/// A collection or alias name the decoder let through passes the name rules.
private func requireName(_ name: String) {
    do {
        try CollectionName.validate(name, field: "name")
    } catch {
        require(false, "name '\(name)' passed the decoder but breaks the name rules")
    }
}
