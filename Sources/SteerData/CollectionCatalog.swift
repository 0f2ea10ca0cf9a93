import Foundation
import SteerCore

/// The named collections and aliases of one data directory, persisted as `DIR/collections.json`
/// (written through `AtomicFile`: a reader sees the old catalog or the new one, never a mix).
///
/// Layout of a data directory with collections:
///
/// | path | content |
/// |---|---|
/// | `DIR/steer.json`, `store/`, `index/`, `generations/` | the default collection, exactly as a data directory written before collections existed (it opens unchanged, no migration) |
/// | `DIR/collections.json` | this catalog; absent until the first collection or alias is made |
/// | `DIR/collections/<name>/` | one named collection: a data directory of the same layout (its own `steer.json`, RocksDB store, index and generations) |
///
/// Invariants (checked by `validate`, so a hostile or damaged file is refused as `corrupt`): every name
/// passes `validateName`; no alias shares a name with a collection; every alias names an existing
/// collection or the default; at most `maxCollectionsLimit` collections and as many aliases.
public struct CollectionCatalog: Sendable, Equatable {
    /// A named collection's settings, fixed when it is created (its `steer.json` holds the same and
    /// what changes later: the served generation).
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var dimension: Int
        public var metric: Metric
        /// The index spec it was created with (a factory string, for example `HNSW32`).
        public var indexSpec: String
        public var embeddingVersion: String
        /// ISO 8601, UTC.
        public var createdAt: String
        /// The DPR checkpoint (resolved path) whose items it was made from and whose model answers its
        /// `recommend`/`encode`; nil for a collection filled by `upsert`.
        public var checkpoint: String?

        public init(name: String, dimension: Int, metric: Metric, indexSpec: String, embeddingVersion: String, createdAt: String,
                    checkpoint: String? = nil) {
            self.checkpoint = checkpoint
            self.name = name
            self.dimension = dimension
            self.metric = metric
            self.indexSpec = indexSpec
            self.embeddingVersion = embeddingVersion
            self.createdAt = createdAt
        }
    }

    /// `DIR/collections.json`.
    public static let fileName = "collections.json"
    /// `DIR/collections/`, the parent of every named collection's directory.
    public static let directoryName = "collections"
    /// The data directory's own catalog (`CollectionName.defaultName`).
    public static let defaultName = CollectionName.defaultName
    /// The most collections (and, separately, aliases) a catalog may hold, whatever `--max-collections` says.
    public static let maxCollectionsLimit = 4096
    /// Largest `collections.json` read, in bytes (4096 entries of a few hundred bytes fit).
    public static let maxFileBytes = 4 << 20

    /// Named collections by name (the default collection is not listed).
    public var collections: [String: Entry]
    /// Alias → collection name (a named collection or `defaultName`).
    public var aliases: [String: String]

    public init(collections: [String: Entry] = [:], aliases: [String: String] = [:]) {
        self.collections = collections
        self.aliases = aliases
    }

    /// The directory of collection `name` inside `dataDirectory` (the data directory itself for the default).
    public static func directory(of name: String, dataDirectory: String) -> String {
        name == defaultName ? dataDirectory : "\(dataDirectory)/\(directoryName)/\(name)"
    }

    /// Checks a collection or alias name (`CollectionName.validate`).
    ///
    /// - Throws: `.invalidRequest` naming `field` and the rule broken.
    public static func validateName(_ name: String, field: String) throws(SteerError) {
        try CollectionName.validate(name, field: field)
    }

    /// What `name` (a collection or an alias) resolves to: the collection's name, or nil when it names neither.
    public func resolve(_ name: String) -> String? {
        if name == Self.defaultName || collections[name] != nil { return name }
        return aliases[name]
    }

    /// The aliases pointing at `collection`, sorted.
    public func aliases(of collection: String) -> [String] {
        aliases.filter { $0.value == collection }.map(\.key).sorted()
    }

    /// Checks the invariants listed on the type.
    ///
    /// - Throws: `.invalidRequest` naming the entry at fault.
    public func validate() throws(SteerError) {
        guard collections.count <= Self.maxCollectionsLimit, aliases.count <= Self.maxCollectionsLimit else {
            throw SteerError.invalid("more than \(Self.maxCollectionsLimit) collections or aliases")
        }
        for (name, entry) in collections {
            try Self.validateName(name, field: "collection name")
            guard name != Self.defaultName, entry.name == name else { throw SteerError.invalid("collection '\(name)' is listed under another name") }
            guard (1...65536).contains(entry.dimension) else { throw SteerError.invalid("collection '\(name)' has dimension \(entry.dimension)") }
            guard !entry.indexSpec.isEmpty, !entry.embeddingVersion.isEmpty else {
                throw SteerError.invalid("collection '\(name)' lacks its index spec or embedding version")
            }
        }
        for (alias, target) in aliases {
            try Self.validateName(alias, field: "alias name")
            guard alias != Self.defaultName, collections[alias] == nil else {
                throw SteerError.invalid("alias '\(alias)' has the name of a collection")
            }
            guard target == Self.defaultName || collections[target] != nil else {
                throw SteerError.invalid("alias '\(alias)' points to '\(target)', which is not a collection")
            }
        }
    }

    // MARK: Persistence

    /// Reads `DIR/collections.json`; an empty catalog when the file does not exist.
    ///
    /// - Throws: `.corrupt` naming the file when it is over `maxFileBytes`, not JSON of this layout, or
    ///   breaks an invariant; `.io` when it cannot be read.
    public static func read(dataDirectory: String) throws(SteerError) -> CollectionCatalog {
        let path = "\(dataDirectory)/\(fileName)"
        guard FileManager.default.fileExists(atPath: path) else { return CollectionCatalog() }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw SteerError(.io, "cannot open '\(path)'") }
        defer { try? handle.close() }
        let data: Data
        do {
            data = try handle.read(upToCount: maxFileBytes + 1) ?? Data()
        } catch {
            throw SteerError(.io, "cannot read '\(path)': \(error.localizedDescription)")
        }
        guard data.count <= maxFileBytes else { throw SteerError(.corrupt, "'\(path)' is over \(maxFileBytes) bytes") }
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: data)
        } catch {
            throw SteerError(.corrupt, "'\(path)' is not a valid collection catalog: \(error)")
        }
        guard file.format == 1 else { throw SteerError(.corrupt, "'\(path)' has format \(file.format); this build reads format 1") }
        var catalog = CollectionCatalog(aliases: file.aliases)
        for entry in file.collections {
            guard let metric = try? Metric(parsing: entry.metric) else {
                throw SteerError(.corrupt, "'\(path)': collection '\(entry.name)' has an unknown metric '\(entry.metric)'")
            }
            guard catalog.collections[entry.name] == nil else { throw SteerError(.corrupt, "'\(path)': collection '\(entry.name)' is listed twice") }
            catalog.collections[entry.name] = Entry(name: entry.name, dimension: entry.dimension, metric: metric, indexSpec: entry.indexSpec,
                                                    embeddingVersion: entry.embeddingVersion, createdAt: entry.createdAt, checkpoint: entry.checkpoint)
        }
        do {
            try catalog.validate()
        } catch {
            throw SteerError(.corrupt, "'\(path)': \(error.message)")
        }
        return catalog
    }

    /// Writes `DIR/collections.json` durably and atomically (`AtomicFile`).
    ///
    /// - Throws: `.io` when the system refuses a step.
    public func write(dataDirectory: String) throws(SteerError) {
        let file = File(format: 1, collections: collections.values.sorted { $0.name < $1.name }.map {
            File.Collection(name: $0.name, dimension: $0.dimension, metric: $0.metric.rawValue, indexSpec: $0.indexSpec,
                            embeddingVersion: $0.embeddingVersion, createdAt: $0.createdAt, checkpoint: $0.checkpoint)
        }, aliases: aliases)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do {
            data = try encoder.encode(file)
        } catch {
            throw SteerError.internalError("cannot encode the collection catalog: \(error)")
        }
        try AtomicFile.write([UInt8](data), to: "\(dataDirectory)/\(Self.fileName)")
    }

    /// The file's JSON layout.
    private struct File: Codable {
        struct Collection: Codable {
            var name: String
            var dimension: Int
            var metric: String
            var indexSpec: String
            var embeddingVersion: String
            var createdAt: String
            var checkpoint: String?

            enum CodingKeys: String, CodingKey {
                case name, dimension, metric, checkpoint
                case indexSpec = "index_spec"
                case embeddingVersion = "embedding_version"
                case createdAt = "created_at"
            }
        }

        var format: Int
        var collections: [Collection]
        var aliases: [String: String]
    }
}
