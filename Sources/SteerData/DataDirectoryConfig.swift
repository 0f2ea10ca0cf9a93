import Foundation
import SteerCore
import SteerIndex
import SteerStore

/// The one owner of a data directory's settings file, `DIR/steer.json` (and of each named collection's
/// `DIR/collections/<name>/steer.json`): its fields, its validation and its writes. No other code parses
/// or writes the file; the engine, snapshots and the `steer` subcommands read and write it only here.
///
/// ## Fields (format 1)
/// | key | type | rule | meaning |
/// |---|---|---|---|
/// | `format` | integer | 1 (absent is read as 1) | the layout of this file |
/// | `dimension` | integer | 1 to `ItemStore.maxDimension` | floats per vector |
/// | `index_spec` | string | an `IndexSpec` factory string | the engine's own index |
/// | `metric` | string | `ip`, `l2` or `cosine` (`Metric`) | the similarity |
/// | `embedding_version` | string | 1 to `ItemStore.maxVersionNameBytes` bytes | the version served |
/// | `generation` | string | a generation id (`GenerationManifest.validateGenerationID`); absent is read as `g1` | the generation served |
/// | `generation_directory` | string | 1 to `maxPathBytes` bytes, no NUL (absent: none) | the generation directory a `swap` switched to |
///
/// ## Hostile input
/// The file is read as untrusted: at most `maxFileBytes` bytes, one JSON object, every field of the type
/// and range above. Unknown keys are refused (a misspelt key is never silently ignored; a later layout
/// changes `format`). Every refusal is `.corrupt` naming the file and the field. Whether a
/// `generation_directory` lies inside `DIR/generations` is the engine's check when it opens it (a
/// directory that is gone or outside is dropped with a warning, see `RetrievalEngine`).
///
/// Files written before this type existed (the same keys, written by `JSONSerialization` with escaped
/// slashes) read unchanged. Writes go through `AtomicFile` (temporary file, fsync, rename, directory
/// fsync): a reader sees the old file or the new one.
public struct DataDirectoryConfig: Codable, Sendable, Equatable {
    /// `steer.json`.
    public static let fileName = "steer.json"
    /// The layout this build reads and writes.
    public static let currentFormat = 1
    /// Largest `steer.json` read, in bytes (a written one is a few hundred bytes plus one path).
    public static let maxFileBytes = 64 << 10
    /// Longest `generation_directory`, in UTF-8 bytes (Linux `PATH_MAX`).
    public static let maxPathBytes = 4096
    /// The generation id of an engine's own index (no generation directory served).
    public static let ownGeneration = "g1"

    public var dimension: Int
    /// An `IndexSpec` factory string (for example `Flat`, `HNSW32`).
    public var indexSpec: String
    public var metric: Metric
    public var embeddingVersion: String
    /// The generation served: `ownGeneration`, or the id of the generation directory served.
    public var generation: String
    /// The generation directory `swap` switched to (a path or a name inside `DIR/generations`); nil while
    /// the engine serves its own index.
    public var generationDirectory: String?

    public init(dimension: Int, indexSpec: String, metric: Metric, embeddingVersion: String,
                generation: String = DataDirectoryConfig.ownGeneration, generationDirectory: String? = nil) {
        self.dimension = dimension
        self.indexSpec = indexSpec
        self.metric = metric
        self.embeddingVersion = embeddingVersion
        self.generation = generation
        self.generationDirectory = generationDirectory
    }

    /// The settings file of the data directory `dataDirectory`.
    public static func path(dataDirectory: String) -> String { dataDirectory + "/" + fileName }

    /// Whether `dataDirectory` has a settings file (is a Steer data directory).
    public static func exists(dataDirectory: String) -> Bool {
        FileManager.default.fileExists(atPath: path(dataDirectory: dataDirectory))
    }

    // MARK: Reading

    /// Reads and checks `DIR/steer.json` (see "Hostile input"); nil when the file does not exist.
    ///
    /// - Throws: `.corrupt` naming the file and the field at fault (over `maxFileBytes`, not a JSON
    ///   object, a missing, mistyped, out-of-range or unknown field, another format); `.io` when it
    ///   cannot be read.
    public static func read(dataDirectory: String) throws(SteerError) -> DataDirectoryConfig? {
        let path = path(dataDirectory: dataDirectory)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try read(file: path)
    }

    /// Reads and checks one settings file (see `read(dataDirectory:)`).
    ///
    /// - Throws: `.corrupt` naming `file` and the field at fault; `.io` when it cannot be read.
    public static func read(file path: String) throws(SteerError) -> DataDirectoryConfig {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw SteerError(.io, "cannot open '\(path)'") }
        defer { try? handle.close() }
        let data: Data
        do {
            data = try handle.read(upToCount: maxFileBytes + 1) ?? Data()
        } catch {
            throw SteerError(.io, "cannot read '\(path)': \(error.localizedDescription)")
        }
        guard data.count <= maxFileBytes else { throw SteerError(.corrupt, "'\(path)' is over \(maxFileBytes) bytes") }
        do {
            return try JSONDecoder().decode(DataDirectoryConfig.self, from: data)
        } catch let error as FieldError {
            throw SteerError(.corrupt, "'\(path)': field '\(error.field)' \(error.why)")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let field = context.codingPath.first?.stringValue
            throw SteerError(.corrupt, field.map { "'\(path)': field '\($0)' has the wrong type" } ?? "'\(path)' is not a JSON object")
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            throw SteerError(.corrupt, "'\(path)': field '\(context.codingPath[0].stringValue)' has the wrong type or range")
        } catch let DecodingError.keyNotFound(key, _) {
            throw SteerError(.corrupt, "'\(path)': field '\(key.stringValue)' is missing")
        } catch {
            throw SteerError(.corrupt, "'\(path)' is not a JSON object of a Steer data-directory config")
        }
    }

    // MARK: Writing

    /// Writes `DIR/steer.json` durably and atomically (`AtomicFile`), after checking every field.
    ///
    /// - Throws: `.invalidRequest` naming a field that breaks a rule; `.io` when the system refuses a step.
    public func write(dataDirectory: String) throws(SteerError) {
        do {
            try validate()
        } catch {
            throw SteerError.invalid("data-directory config: field '\(error.field)' \(error.why)")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do {
            data = try encoder.encode(self)
        } catch {
            throw SteerError.internalError("cannot encode the data-directory config: \(error)")
        }
        try AtomicFile.write([UInt8](data) + [0x0A], to: Self.path(dataDirectory: dataDirectory))
    }

    // MARK: Codable

    enum CodingKeys: String, CodingKey, CaseIterable {
        case format, dimension, metric, generation
        case indexSpec = "index_spec"
        case embeddingVersion = "embedding_version"
        case generationDirectory = "generation_directory"
    }

    /// A field that breaks a rule (mapped to `.corrupt` on read, `.invalidRequest` on write).
    struct FieldError: Error {
        var field: String
        var why: String
    }

    /// Any key of the object, to find unknown ones.
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: any Decoder) throws {
        let all = try decoder.container(keyedBy: AnyKey.self)
        let known = Set(CodingKeys.allCases.map(\.stringValue))
        if let unknown = all.allKeys.map(\.stringValue).sorted().first(where: { !known.contains($0) }) {
            throw FieldError(field: unknown, why: "is not a field of format \(Self.currentFormat)")
        }
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let format = try Self.integer(container, .format) ?? Self.currentFormat
        guard format == Self.currentFormat else {
            throw FieldError(field: "format", why: "is \(format); this build reads format \(Self.currentFormat)")
        }
        guard let dimension = try Self.integer(container, .dimension) else {
            throw FieldError(field: CodingKeys.dimension.stringValue, why: "is missing")
        }
        self.dimension = dimension
        indexSpec = try container.decode(String.self, forKey: .indexSpec)
        let metricText = try container.decode(String.self, forKey: .metric)
        guard let metric = try? Metric(parsing: metricText) else {
            throw FieldError(field: "metric", why: "is an unknown metric")
        }
        self.metric = metric
        embeddingVersion = try container.decode(String.self, forKey: .embeddingVersion)
        generation = try container.decodeIfPresent(String.self, forKey: .generation) ?? Self.ownGeneration
        generationDirectory = try container.decodeIfPresent(String.self, forKey: .generationDirectory)
        try validate()
    }

    /// An integer field, nil when absent. Read as a JSON number and checked here, because Foundation's
    /// decoder reports a fraction or an out-of-range integer as invalid JSON without naming the field.
    private static func integer(_ container: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> Int? {
        guard let number = try container.decodeIfPresent(Double.self, forKey: key) else { return nil }
        guard number.rounded() == number, abs(number) <= 9_007_199_254_740_992 else {
            throw FieldError(field: key.stringValue, why: "must be an integer, got \(number)")
        }
        return Int(number)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(Self.currentFormat, forKey: .format)
        try container.encode(dimension, forKey: .dimension)
        try container.encode(indexSpec, forKey: .indexSpec)
        try container.encode(metric.rawValue, forKey: .metric)
        try container.encode(embeddingVersion, forKey: .embeddingVersion)
        try container.encode(generation, forKey: .generation)
        try container.encodeIfPresent(generationDirectory, forKey: .generationDirectory)
    }

    /// Checks the rules of the field table.
    ///
    /// - Throws: `FieldError` naming the first field that breaks one.
    func validate() throws(FieldError) {
        guard (1...ItemStore.maxDimension).contains(dimension) else {
            throw FieldError(field: "dimension", why: "must be 1 to \(ItemStore.maxDimension), got \(dimension)")
        }
        guard (try? IndexSpec(parsing: indexSpec)) != nil else {
            throw FieldError(field: "index_spec", why: "is not an index spec this build supports")
        }
        guard (1...ItemStore.maxVersionNameBytes).contains(embeddingVersion.utf8.count) else {
            throw FieldError(field: "embedding_version", why: "must be 1 to \(ItemStore.maxVersionNameBytes) bytes")
        }
        guard (try? GenerationManifest.validateGenerationID(generation)) != nil else {
            throw FieldError(field: "generation", why: "must be 1 to \(GenerationManifest.maxGenerationIDBytes) letters, digits, '.', '_' or '-'")
        }
        if let generationDirectory {
            guard (1...Self.maxPathBytes).contains(generationDirectory.utf8.count), !generationDirectory.utf8.contains(0) else {
                throw FieldError(field: "generation_directory", why: "must be 1 to \(Self.maxPathBytes) bytes without NUL")
            }
        }
    }
}
