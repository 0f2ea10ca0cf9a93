import Foundation
import SteerBuilder
import SteerClient
import SteerCore
import SteerProtocol
import SteerStore

/// `steer ingest --server`: a checkpoint's embeddings streamed into a running server as a new embedding
/// version, in `ingest_vectors` chunks (docs/operations.md, "The retraining loop").
enum RemoteIngest {
    struct Report {
        var version: String
        var checkpointHash: String
        var rows: Int
        var dimension: Int
        var sequence: Int64
    }

    /// Validates the checkpoint completely, then sends its rows in chunks of `batchSize` and a final
    /// chunk that marks the version complete. Idempotent: running it again sends every chunk again.
    ///
    /// - Throws: the checkpoint's validation errors; the server's refusal of a chunk (with its code and
    ///   the rows it covered); connection errors.
    static func run(server: String, token: String?, checkpoint: String, version: String?, batchSize: Int,
                    progress: (_ done: Int, _ total: Int) -> Void) throws(SteerError) -> Report {
        let contents = try CheckpointIngest.read(checkpoint: checkpoint, version: version, options: ItemStore.Options(path: "-"))
        let parts = server.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port), !parts[0].isEmpty else {
            throw SteerError.invalid("--server must be HOST:PORT, got '\(server)'")
        }
        let connection = try SteerConnection(host: String(parts[0]), port: port)
        let dimension = contents.dimension
        var sequence: Int64 = 0
        var start = 0
        repeat {
            let end = min(contents.rows.count, start + batchSize)
            var line = JSONWriter(capacity: 256 + (end - start) * (dimension * 6 + 96))
            line.raw("{\"op\":\"ingest_vectors\",\"version\":")
            line.string(contents.version)
            line.raw(",\"dimension\":")
            line.int(dimension)
            line.raw(",\"checkpoint_hash\":")
            line.string(contents.checkpointHash)
            if let token {
                line.raw(",\"token\":")
                line.string(token)
            }
            line.raw(",\"complete\":")
            line.bool(end == contents.rows.count)
            line.raw(",\"items\":[")
            for row in start..<end {
                if row > start { line.raw(",") }
                let item = contents.rows[row]
                line.raw("{\"id\":")
                line.itemID(item.id)
                line.raw(",\"vector_b64\":")
                line.string(Base64Floats.encode(Array(contents.embeddings[(row * dimension)..<((row + 1) * dimension)])))
                if let title = item.title {
                    line.raw(",\"title\":")
                    line.string(title)
                }
                if let tags = item.tags {
                    line.raw(",\"tags\":")
                    line.strings(tags)
                }
                line.raw("}")
            }
            line.raw("]}")
            let answer: JSONObject
            do {
                answer = try SteerClient.check(try connection.roundTrip(line.bytes))
            } catch {
                throw SteerError(error.code, "rows \(start + 1)-\(end) of '\(checkpoint)/items.jsonl': \(error.message)")
            }
            if case .int(let value)? = answer["sequence"] { sequence = value }
            progress(end, contents.rows.count)
            start = end
        } while start < contents.rows.count
        return Report(version: contents.version, checkpointHash: contents.checkpointHash, rows: contents.rows.count, dimension: dimension,
                      sequence: sequence)
    }
}

