/// Names of collections and aliases (docs/protocol.md "Collections and aliases"): checked where a request
/// is decoded and again where the catalog is read, so a name is always one safe path component.
public enum CollectionName {
    /// The name of the data directory's own catalog, which answers requests that name no collection.
    /// Reserved: no collection or alias may be created with it.
    public static let defaultName = "default"
    /// Longest collection or alias name, in bytes.
    public static let maxBytes = 64

    /// Checks a collection or alias name: 1 to `maxBytes` bytes of `a-z`, `0-9`, `_` and `-`, starting
    /// with a letter or digit.
    ///
    /// - Throws: `.invalidRequest` naming `field` and the rule broken.
    public static func validate(_ name: String, field: String) throws(SteerError) {
        let bytes = Array(name.utf8.prefix(maxBytes + 1))
        guard !bytes.isEmpty else { throw SteerError.invalid("\(field) must not be empty") }
        guard bytes.count <= maxBytes else {
            throw SteerError.invalid("\(field) is over \(maxBytes) bytes")
        }
        func allowed(_ byte: UInt8) -> Bool {
            (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x5F || byte == 0x2D
        }
        guard bytes.allSatisfy(allowed), bytes[0] != 0x5F, bytes[0] != 0x2D else {
            throw SteerError.invalid("\(field) '\(name)' must be lower-case letters, digits, '_' and '-', starting with a letter or digit")
        }
    }
}

/// The settings of a new collection (`create_collection`); nil fields take the defaults of a new data
/// directory (metric `ip`, index spec `Flat`, embedding version `v1`).
public struct CollectionSettings: Sendable, Equatable {
    public var name: String
    /// Floats per vector; nil only with `checkpoint` (whose item table sets it).
    public var dimension: Int?
    public var metric: Metric?
    public var indexSpec: String?
    public var embeddingVersion: String?
    /// A DPR checkpoint directory (inside the server's checkpoint root): its items are ingested into the
    /// new collection as version `ckpt-<hash>`, and its model answers the collection's `recommend`/`encode`.
    public var checkpoint: String?

    public init(name: String, dimension: Int?, metric: Metric? = nil, indexSpec: String? = nil, embeddingVersion: String? = nil,
                checkpoint: String? = nil) {
        self.name = name
        self.dimension = dimension
        self.metric = metric
        self.indexSpec = indexSpec
        self.embeddingVersion = embeddingVersion
        self.checkpoint = checkpoint
    }
}
