import Foundation
import SteerCore
import SteerIndex
import SteerStore

extension CheckpointIngest {
    /// A checkpoint's catalog and item embeddings, validated as `run` validates them, for ingestion
    /// elsewhere (`steer ingest --server` streams them into a running server with `ingest_vectors`).
    public struct Contents: Sendable {
        public var checkpointHash: String
        /// `ckpt-<hash>`, or the name asked for.
        public var version: String
        public var rows: [Row]
        public var dimension: Int
        /// Row-major, `rows.count × dimension`.
        public var embeddings: [Float]
    }

    /// Reads and validates a checkpoint completely (the checks of `run`, before its first write).
    ///
    /// - Parameters:
    ///   - checkpoint: the checkpoint directory.
    ///   - version: the version name; nil derives `ckpt-<hash>`.
    ///   - options: the store limits rows are checked against (titles, tags).
    /// - Throws: as `run` does before writing: `.invalidRequest` listing bad lines, `.corrupt`,
    ///   `.notFound`, `.dimensionMismatch`.
    public static func read(checkpoint: String, version: String? = nil, options: ItemStore.Options) throws(SteerError) -> Contents {
        let hash = try CheckpointHash.compute(directory: checkpoint)
        let itemsPath = (checkpoint as NSString).appendingPathComponent("items.jsonl")
        let tensorPath = (checkpoint as NSString).appendingPathComponent("model.safetensors")
        let matrix = try readEmbeddings(path: tensorPath)
        try checkConfig(checkpoint: checkpoint, rows: matrix.rows, columns: matrix.columns)
        let rows = try readItems(path: itemsPath, options: options)
        guard rows.count == matrix.rows else {
            throw SteerError.invalid("'\(itemsPath)' has \(rows.count) rows but item_embeddings in '\(tensorPath)' has \(matrix.rows)")
        }
        try checkFinite(matrix.values, columns: matrix.columns, itemsPath: itemsPath)
        return Contents(checkpointHash: hash, version: version ?? CheckpointHash.versionName(for: hash), rows: rows,
                        dimension: matrix.columns, embeddings: matrix.values)
    }
}
