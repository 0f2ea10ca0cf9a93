import SteerCore
import SteerEngine
import SteerProtocol

extension RequestHandler {
    /// `prepare` and `activate` (the two halves of `swap`, `GenerationStaging.swift`) on the default
    /// collection: `{"generation","staged":true,"replayed"}` and `{"generation","previous","replayed"}`.
    ///
    /// - Throws: what `RetrievalEngine.prepare` and `activate` throw.
    func runStagedSwap(_ operation: Request.Operation, lease: CollectionSet.Lease, _ writer: inout JSONWriter) throws(SteerError) {
        let engine = lease.engine
        switch operation {
        case .prepare(let generation, let checkpoint):
            let staged = try engine.prepare(generation, checkpoint: checkpoint)
            writer.raw(",\"generation\":")
            writer.string(staged.generation)
            writer.raw(",\"staged\":true,\"replayed\":")
            writer.int(staged.replayed)
        case .activate(let generation):
            let result = try engine.activate(generation)
            writer.raw(",\"generation\":")
            writer.string(result.generation)
            writer.raw(",\"previous\":")
            writer.string(result.previous)
            writer.raw(",\"replayed\":")
            writer.int(result.replayed)
        default:
            throw SteerError.internalError("\(operation.name) is not prepare or activate")
        }
    }
}
