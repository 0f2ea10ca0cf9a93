import Foundation
import SteerCore

/// Which checkpoint each ingested embedding version came from, and whether its ingest finished:
/// `steer-versions.json` in the store directory (RocksDB leaves files it does not recognise alone).
///
/// `steer ingest` marks a version `in_progress` before its first write and `complete` after its last, so
/// a version left half-written by a crash is never mistaken for a whole one: `steer-index build` refuses
/// an `in_progress` version. Versions written by other means (the server's `upsert`) have no entry.
/// Written atomically (temp file, fsync, rename).
public struct VersionRegistry: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public enum Status: String, Codable, Sendable {
            case inProgress = "in_progress"
            case complete
        }

        public var status: Status
        /// `CheckpointHash` of the source checkpoint.
        public var checkpointHash: String
        public var dimension: Int
        /// Rows of the checkpoint (items written or already present).
        public var rows: Int
        /// The checkpoint directory it was read from (informational).
        public var source: String
        public var startedAt: String
        public var completedAt: String?
        /// The store sequence after the last write of the ingest.
        public var sequence: UInt64?

        public init(status: Status, checkpointHash: String, dimension: Int, rows: Int, source: String,
                    startedAt: String, completedAt: String? = nil, sequence: UInt64? = nil) {
            self.status = status
            self.checkpointHash = checkpointHash
            self.dimension = dimension
            self.rows = rows
            self.source = source
            self.startedAt = startedAt
            self.completedAt = completedAt
            self.sequence = sequence
        }

        enum CodingKeys: String, CodingKey {
            case status
            case checkpointHash = "checkpoint_hash"
            case dimension, rows, source
            case startedAt = "started_at"
            case completedAt = "completed_at"
            case sequence
        }
    }

    public static let fileName = "steer-versions.json"

    public var versions: [String: Entry]

    public init(versions: [String: Entry] = [:]) { self.versions = versions }

    /// Reads the registry of a store directory; an empty registry when the file does not exist.
    ///
    /// - Throws: `.corrupt` naming the file when it is not a valid registry.
    public static func read(storePath: String) throws(SteerError) -> VersionRegistry {
        let path = (storePath as NSString).appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: path) else { return VersionRegistry() }
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            return try JSONDecoder().decode(VersionRegistry.self, from: data)
        } catch {
            throw SteerError(.corrupt, "'\(path)' is not a valid version registry: \(error)")
        }
    }

    /// Writes the registry into a store directory atomically.
    public func write(storePath: String) throws(SteerError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do {
            data = try encoder.encode(self)
        } catch {
            throw SteerError.internalError("cannot encode the version registry: \(error)")
        }
        try AtomicFile.write([UInt8](data), to: (storePath as NSString).appendingPathComponent(Self.fileName))
    }
}
