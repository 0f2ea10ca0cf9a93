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
    static func run(server: String, token: String?, collection: String?, checkpoint: String, version: String?, batchSize: Int,
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
            var items: [VersionItem] = []
            items.reserveCapacity(end - start)
            for row in start..<end {
                let item = contents.rows[row]
                items.append(VersionItem(id: item.id, vector: Array(contents.embeddings[(row * dimension)..<((row + 1) * dimension)]),
                                         title: item.title, tags: item.tags))
            }
            let line = RequestEncoder.encode(Request(operation: .ingestVectors(version: contents.version, dimension: dimension,
                                                                               checkpointHash: contents.checkpointHash, items: items,
                                                                               complete: end == contents.rows.count),
                                                     token: token, collection: collection))
            let answer: JSONObject
            do {
                answer = try SteerClient.check(try connection.roundTrip(line))
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

