import Foundation
import SteerCore

/// Which sequential backbone produces the user vector.
public enum BackboneKind: String, Sendable {
    case sasrec
    case gru4rec
}

/// The hyper-parameters of a `steer-dpr` v1 checkpoint (`config.json`, docs/checkpoint-format.md).
public struct DPRConfiguration: Sendable, Equatable {
    public static let format = "steer-dpr"
    public static let version = 1

    public let backbone: BackboneKind
    /// N: catalog size, rows of `item_embeddings`.
    public let itemCount: Int
    /// d: the backbone width (user vector h).
    public let d: Int
    /// Prompt-only scoring dimensions.
    public let dAux: Int
    /// D = d + dAux: width of `item_embeddings` and of the query.
    public let indexDimension: Int
    /// Histories are cut to their last `maxLen` items.
    public let maxLen: Int
    public let layerCount: Int
    public let headCount: Int
    public let ffnWidth: Int
    public let inputScale: Float
    public let layerNormEps: Float
    public let promptDimension: Int
    public let fusionHidden: Int
    public let expertHidden: Int
    public let positiveExperts: Int
    public let negativeExperts: Int
    /// The tag vocabulary, in `tag_embeddings` row order.
    public let tags: [String]
    public let tagMatchThreshold: Float
    public let maxClauses: Int
    /// Provenance: the data set name, if given.
    public let dataset: String?

    /// Parses and validates `config.json`'s bytes; `path` names the file in errors.
    public init(json data: Data, path: String) throws(SteerError) {
        func corrupt(_ message: String) -> SteerError { SteerError(.corrupt, "\(path): \(message)") }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw corrupt("not valid JSON")
        }
        guard let object = parsed as? [String: Any] else { throw corrupt("not a JSON object") }
        func int(_ key: String, minimum: Int = 1, in table: [String: Any]? = nil, prefix: String = "") throws(SteerError) -> Int {
            guard let raw = (table ?? object)[key] else { throw corrupt("missing key '\(prefix)\(key)'") }
            guard let value = JSONValue.integer(raw) else { throw corrupt("'\(prefix)\(key)' must be an integer") }
            guard value >= minimum, value <= 1 << 30 else { throw corrupt("'\(prefix)\(key)' is \(value), must be at least \(minimum)") }
            return value
        }
        func float(_ key: String) throws(SteerError) -> Float {
            guard let raw = object[key] else { throw corrupt("missing key '\(key)'") }
            guard let value = JSONValue.double(raw), value.isFinite else { throw corrupt("'\(key)' must be a number") }
            return Float(value)
        }
        guard let format = object["format"] as? String else { throw corrupt("missing key 'format'") }
        guard format == Self.format else { throw corrupt("format is '\(format)', expected '\(Self.format)'") }
        guard let versionValue = object["version"], let version = JSONValue.integer(versionValue) else {
            throw corrupt("missing or non-integer 'version'")
        }
        guard version == Self.version else { throw corrupt("version \(version) is not supported (expected \(Self.version))") }
        guard let backboneName = object["backbone"] as? String else { throw corrupt("missing key 'backbone'") }
        guard let backbone = BackboneKind(rawValue: backboneName) else {
            throw corrupt("backbone '\(backboneName)' is not 'sasrec' or 'gru4rec'")
        }
        self.backbone = backbone
        itemCount = try int("n_items")
        d = try int("d")
        dAux = try int("d_aux", minimum: 0)
        indexDimension = try int("index_dim")
        guard indexDimension == d + dAux else { throw corrupt("index_dim \(indexDimension) != d + d_aux = \(d + dAux)") }
        maxLen = try int("max_len")
        layerCount = try int("n_layers")
        headCount = try int("n_heads")
        ffnWidth = try int("d_ff")
        if backbone == .sasrec, d % headCount != 0 { throw corrupt("d \(d) is not divisible by n_heads \(headCount)") }
        inputScale = try float("input_scale")
        layerNormEps = try float("layer_norm_eps")
        guard layerNormEps > 0 else { throw corrupt("'layer_norm_eps' must be positive") }
        promptDimension = try int("prompt_dim")
        guard promptDimension == MiniLMEncoder.dimension else {
            throw corrupt("prompt_dim \(promptDimension) is not all-MiniLM-L6-v2's \(MiniLMEncoder.dimension)")
        }
        fusionHidden = try int("fusion_hidden")
        expertHidden = try int("expert_hidden")
        guard let experts = object["n_experts"] as? [String: Any] else { throw corrupt("missing object 'n_experts'") }
        positiveExperts = try int("positive", in: experts, prefix: "n_experts.")
        negativeExperts = try int("negative", in: experts, prefix: "n_experts.")
        if let activations = object["activations"] {
            guard let table = activations as? [String: Any] else { throw corrupt("'activations' must be an object") }
            let expected = ["ffn": "relu", "fusion": "relu", "expert": "relu", "gate": "softmax"]
            for (key, value) in expected.sorted(by: { $0.key < $1.key }) {
                if let given = table[key], given as? String != value {
                    throw corrupt("activations.\(key) is \(given), only '\(value)' is supported")
                }
            }
        }
        guard let tagValues = object["tags"] as? [Any] else { throw corrupt("missing list 'tags'") }
        var tags: [String] = []
        for (i, value) in tagValues.enumerated() {
            guard let tag = value as? String else { throw corrupt("tags[\(i)] is not a string") }
            tags.append(tag)
        }
        self.tags = tags
        tagMatchThreshold = try float("tag_match_threshold")
        maxClauses = try int("max_clauses")
        dataset = object["dataset"] as? String
    }

    /// The largest `config.json` read, in bytes (a tag vocabulary of 100,000 tags is about 3 MB).
    public static let maxConfigBytes = 16 << 20

    /// Reads `directory/config.json`.
    /// - Throws: `.corrupt` for a file larger than `maxConfigBytes` or an invalid one.
    public init(directory: String) throws(SteerError) {
        let path = directory + "/config.json"
        try self.init(json: try readFile(path, maxBytes: Self.maxConfigBytes), path: path)
    }
}

/// One catalog item: its external id, title and tags, in embedding row order.
public struct CatalogItem: Sendable, Equatable {
    public let id: ItemID
    public let title: String
    public let tags: [String]

    public init(id: ItemID, title: String, tags: [String]) {
        self.id = id
        self.title = title
        self.tags = tags
    }

    /// Parses `items.jsonl` (one `{"id": str|int, "title": str, "tags": [str]}` per line; blank lines
    /// are skipped). Errors name the file and line.
    public static func parseCatalog(_ data: Data, path: String) throws(SteerError) -> [CatalogItem] {
        var items: [CatalogItem] = []
        var seen: Set<ItemID> = []
        var lineNumber = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            func corrupt(_ message: String) -> SteerError { SteerError(.corrupt, "\(path):\(lineNumber): \(message)") }
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line), options: [])) as? [String: Any] else {
                throw corrupt("not a JSON object")
            }
            let id: ItemID
            switch object["id"] {
            case let text as String: id = .string(text)
            case let value? where JSONValue.integer(value) != nil: id = .int(Int64(JSONValue.integer(value)!))
            case nil: throw corrupt("missing 'id'")
            default: throw corrupt("'id' must be a string or an integer")
            }
            do { try id.validate() } catch { throw corrupt(error.message) }
            guard seen.insert(id).inserted else { throw corrupt("duplicate item id \(id)") }
            var title = ""
            if let value = object["title"], !(value is NSNull) {
                guard let text = value as? String else { throw corrupt("'title' must be a string") }
                title = text
            }
            var tags: [String] = []
            if let value = object["tags"], !(value is NSNull) {
                guard let list = value as? [Any] else { throw corrupt("'tags' must be a list of strings") }
                for tag in list {
                    guard let text = tag as? String else { throw corrupt("'tags' must be a list of strings") }
                    tags.append(text)
                }
            }
            items.append(CatalogItem(id: id, title: title, tags: tags))
        }
        return items
    }
}

/// Reads a whole file; `.notFound` if it does not exist, `.io` if it cannot be read, `.corrupt` if it is
/// larger than `maxBytes` (checked before reading).
func readFile(_ path: String, maxBytes: Int = Int.max) throws(SteerError) -> Data {
    guard FileManager.default.fileExists(atPath: path) else { throw SteerError(.notFound, "\(path): no such file") }
    if maxBytes < Int.max {
        let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? Int.max
        guard size <= maxBytes else { throw SteerError(.corrupt, "\(path): \(size) bytes, limit is \(maxBytes)") }
    }
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw SteerError(.io, "\(path): cannot read: \(error.localizedDescription)")
    }
}
