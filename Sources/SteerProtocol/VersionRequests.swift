import SteerCore

/// `ingest_vectors`: one chunk of a new embedding version streamed into a running server
/// (docs/operations.md, "The retraining loop").
extension RequestDecoder {
    /// `version` (1–256 bytes), `dimension` (1–65536), `checkpoint_hash`? (1–256 bytes, default
    /// `ingest_vectors`), `items` (0..`max_batch`, each `id`, `vector` or `vector_b64`, `title`?, `tags`?),
    /// `complete`? (false). Ids must not repeat within a chunk.
    ///
    /// - Throws: `.invalidRequest` naming the field; `.tooLarge` for too many items or an over-long name.
    func decodeIngestVectors(_ fields: Fields) throws(SteerError) -> Request.Operation {
        guard let version = try fields.string("version"), !version.isEmpty else {
            throw SteerError.invalid("ingest_vectors: missing field 'version'")
        }
        guard version.utf8.count <= VersionItem.maxVersionNameBytes else {
            throw SteerError(.tooLarge, "version is \(version.utf8.count) bytes, limit is \(VersionItem.maxVersionNameBytes)")
        }
        guard let dimension = try fields.int("dimension") else { throw SteerError.invalid("ingest_vectors: missing field 'dimension'") }
        guard (1...VersionItem.maxDimension).contains(dimension) else {
            throw SteerError.invalid("dimension must be 1 to \(VersionItem.maxDimension), got \(dimension)")
        }
        let hash = try fields.string("checkpoint_hash") ?? "ingest_vectors"
        guard !hash.isEmpty, hash.utf8.count <= VersionItem.maxVersionNameBytes else {
            throw SteerError.invalid("checkpoint_hash must be 1 to \(VersionItem.maxVersionNameBytes) bytes")
        }
        let complete = try fields.bool("complete") ?? false
        guard let value = fields.object["items"] else { throw SteerError.invalid("ingest_vectors: missing field 'items'") }
        guard case .array(let elements) = value else { throw SteerError.invalid("items must be an array of objects, got \(value.typeName)") }
        guard elements.count <= limits.maxBatch else {
            throw SteerError(.tooLarge, "items has \(elements.count) items, limit is \(limits.maxBatch)")
        }
        var items: [VersionItem] = []
        items.reserveCapacity(elements.count)
        var seen: [ItemID: Int] = [:]
        for (index, element) in elements.enumerated() {
            let prefix = "items[\(index)]"
            guard case .object(let object) = element else { throw SteerError.invalid("\(prefix) must be an object, got \(element.typeName)") }
            for field in object.fields where !["id", "vector", "vector_b64", "title", "tags"].contains(field.key) {
                throw SteerError.invalid("unknown field '\(prefix).\(field.key)' (known: id, vector, vector_b64, title, tags)")
            }
            guard let idValue = object["id"] else { throw SteerError.invalid("\(prefix): missing field 'id'") }
            let id = try Self.itemID(idValue, field: "\(prefix).id")
            if let first = seen.updateValue(index, forKey: id) {
                throw SteerError.invalid("\(prefix).id \(id) duplicates items[\(first)].id")
            }
            let vector = try Self.itemVector(object, prefix: prefix)
            var title: String?
            if let value = object["title"] {
                guard case .string(let text) = value else { throw SteerError.invalid("\(prefix).title must be a string, got \(value.typeName)") }
                title = text
            }
            var tags: [String]?
            if let value = object["tags"] {
                guard case .array(let list) = value else { throw SteerError.invalid("\(prefix).tags must be an array of strings, got \(value.typeName)") }
                var parsed: [String] = []
                for (tagIndex, tag) in list.enumerated() {
                    guard case .string(let text) = tag else {
                        throw SteerError.invalid("\(prefix).tags[\(tagIndex)] must be a string, got \(tag.typeName)")
                    }
                    parsed.append(text)
                }
                tags = parsed
            }
            items.append(VersionItem(id: id, vector: vector, title: title, tags: tags))
        }
        return .ingestVectors(version: version, dimension: dimension, checkpointHash: hash, items: items, complete: complete)
    }
}
