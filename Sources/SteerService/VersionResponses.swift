import SteerCore
import SteerEngine
import SteerProtocol

/// The answer of `ingest_vectors` (docs/protocol.md).
extension RequestHandler {
    /// Runs one `ingest_vectors` chunk: `written`, `total`, `complete`, `sequence`.
    ///
    /// - Throws: the engine's errors; `.invalidRequest` on a server that follows a write log.
    func runIngestVectors(version: String, dimension: Int, checkpointHash: String, items: [VersionItem], complete: Bool,
                          engine: RetrievalEngine, _ writer: inout JSONWriter) throws(SteerError) {
        if writeLog != nil {
            throw SteerError.invalid("ingest_vectors is not available on a server that follows a write log (steer serve --follow)")
        }
        let result = try engine.ingestVectors(version: version, dimension: dimension, checkpointHash: checkpointHash, items: items,
                                              complete: complete)
        writer.raw(",\"version\":")
        writer.string(version)
        writer.raw(",\"written\":")
        writer.int(result.written)
        writer.raw(",\"total\":")
        writer.int(result.total)
        writer.raw(",\"complete\":")
        writer.bool(result.complete)
        writer.raw(",\"sequence\":")
        writer.int(Int64(clamping: result.sequence))
    }
}
