import Foundation
import Logging
import SteerBuilder
import SteerCore
import SteerEngine
import SteerModel
import SteerStore

/// `steer serve --checkpoint DIR`: the DPR model answers `recommend` and `encode`, over the embedding
/// version ingested from the same checkpoint.
struct CheckpointServing {
    let model: DPRModel
    /// The embedding version holding this checkpoint's item table (`ckpt-<hash>`).
    let version: String
    let dimension: Int

    /// Where the MiniLM files are looked for when neither `--minilm` nor `STEER_MINILM_DIR` says.
    static let defaultMiniLM = "models/all-MiniLM-L6-v2"

    /// Loads the checkpoint and makes sure its catalog and item embeddings are in `DIR/store`: ingested
    /// on the first start (resuming an interrupted ingest); on later starts the version registry says it
    /// is complete and nothing is read again, so items deleted through the protocol stay deleted.
    static func prepare(checkpoint: String, minilm: String, dataDirectory: String, logger: Logger) throws(SteerError) -> CheckpointServing {
        let started = ContinuousClock.now
        let model = try DPRModel.load(checkpoint: checkpoint, minilm: minilm)
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        } catch {
            throw SteerError(.io, "cannot create data directory '\(dataDirectory)': \(error.localizedDescription)")
        }
        let storePath = dataDirectory + "/store"
        let store = try ItemStore(options: .init(path: storePath))
        defer { store.close() }
        let report = try CheckpointIngest.run(store: store, storePath: storePath, checkpoint: checkpoint, batchSize: 2000,
                                              onlyIfIncomplete: true)
        logger.info("checkpoint loaded", metadata: [
            "steer.checkpoint": "\(checkpoint)", "steer.backbone": "\(model.config.backbone)",
            "steer.items": "\(report.rows)", "steer.version": "\(report.version)",
            "steer.ingested": "\(report.alreadyComplete ? "already complete" : String(report.written))", "steer.seconds": "\(ContinuousClock.now - started)",
        ])
        return CheckpointServing(model: model, version: report.version, dimension: model.config.indexDimension)
    }
}
