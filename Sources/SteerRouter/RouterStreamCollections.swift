import SteerCore
import SteerProtocol
import SteerWriteLog

/// Collection changes through `steer route --follow` (docs/scaling.md, "Collections in the stream"):
/// `create_collection` (without `checkpoint`), `drop_collection`, `alias` and `delete_alias` are appended
/// to **every** shard's stream (`ShardLog.appendChange`), not sent to the replicas: each replica applies
/// the change at its place among the writes of its stream, so every replica of a shard applies it at
/// the same stream position (writes appended before an alias move land in the old target everywhere,
/// those after it in the new one). The answer comes once every stream stored the change (PubAck), with
/// `sequences` (one per shard, as for writes); whether a replica accepted it (an `alias` to a collection
/// it lacks is refused alike by every replica and counted in its `refused_messages`) shows in
/// `list_collections` once it applied those sequences. Re-sending the same change is safe: replicas
/// treat a create of an identical collection, a drop of a missing one, an alias to its current target
/// and a deletion of a missing alias as no-ops.
///
/// Threading: called from `Router.run` on the task executor; no state of its own.
extension Router {
    /// Appends a collection change to every shard's stream and writes the answer's fields.
    ///
    /// - Throws: `.invalidRequest` for a `create_collection` with `checkpoint`; the first shard's failure
    ///   (`.unavailable`), naming the shards that did append it (retrying is safe).
    func appendChangeToStreams(_ operation: Request.Operation, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        guard let shardLog else { throw SteerError.internalError("no shard log") }
        try CollectionChange.check(operation)
        let deadlineNanos = deadline.uptimeNanos
        let shards = replicas.count
        var results: [Int: Result<UInt64, SteerError>] = [:]
        await withTaskGroup(of: (Int, Result<UInt64, SteerError>).self) { tasks in
            for shard in 0..<shards {
                // Returned after the do/catch, not from inside it (see `appendToStreams`).
                tasks.addTask {
                    let result: Result<UInt64, SteerError>
                    do throws(SteerError) {
                        result = .success(try await shardLog.appendChange(operation, shard: shard, deadlineNanos: deadlineNanos))
                    } catch {
                        result = .failure(error)
                    }
                    return (shard, result)
                }
            }
            for await (shard, result) in tasks { results[shard] = result }
        }
        var sequences = [UInt64](repeating: 0, count: shards)
        var failures: [(shard: Int, error: SteerError)] = []
        for shard in 0..<shards {
            switch results[shard] {
            case .success(let sequence)?: sequences[shard] = sequence
            case .failure(let error)?: failures.append((shard, error))
            case nil: failures.append((shard, SteerError.internalError("no outcome for shard \(shard)")))
            }
        }
        if let first = failures.first {
            let done = sequences.indices.filter { sequences[$0] > 0 }.map { "\($0) (sequence \(sequences[$0]))" }
            logger.warning("a collection change was not appended to every stream", metadata: ["steer.shard": "\(first.shard)", "steer.error": "\(first.error)"])
            throw SteerError(first.error.code, "\(operation.name): shard \(first.shard): \(first.error.message)"
                + (done.isEmpty ? "" : "; appended to shard\(done.count == 1 ? "" : "s") \(done.joined(separator: ", ")) (send the same request again: replicas that applied it treat it as a no-op)"))
        }
        switch operation {
        case .createCollection(let settings):
            writer.raw(",\"name\":")
            writer.string(settings.name)
        case .dropCollection(let name):
            writer.raw(",\"dropped\":")
            writer.string(name)
        case .alias(let alias, let collection):
            writer.raw(",\"alias\":")
            writer.string(alias)
            writer.raw(",\"collection\":")
            writer.string(collection)
        case .deleteAlias(let alias):
            writer.raw(",\"alias\":")
            writer.string(alias)
        default:
            break
        }
        writer.raw(",\"sequences\":[")
        for (index, sequence) in sequences.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.int(Int64(clamping: sequence))
        }
        writer.raw("]")
        if shards == 1 {
            writer.raw(",\"sequence\":")
            writer.int(Int64(clamping: sequences[0]))
        }
    }
}
