import Foundation
import SteerCore
import SteerData
import SteerIndex
import SteerModel

/// A generation `RetrievalEngine.prepare` loaded and checked but does not serve yet: the index (caught
/// up with the store through `caughtUpSequence`), its encoder, and the directory `steer.json` will
/// record once `activate` switches to it.
public struct StagedGeneration: Sendable {
    /// What serves once activated.
    public let generation: Generation
    /// The resolved generation directory (inside `DIR/generations/`).
    public let directory: String
    /// The store sequence the index holds every write up to.
    var caughtUpSequence: UInt64
    /// Store writes replayed into it so far (added + removed).
    var replayed: Int
}

/// Swapping in two steps, for a cluster-wide swap (docs/scaling.md "Cluster-wide swap"): `prepare`
/// does everything of `swap` that may take long or fail (load with every check, pick the encoder,
/// catch up with the store) and keeps the result in one staged slot; `activate` does the rest (the
/// final catch-up under the write lock, `steer.json`, the switch). `swap` is `prepare`'s work followed
/// by `activate`'s, without the slot.
///
/// Invariants: at most one generation is staged (`stagedSlot`); `prepare` drops the staged one before it
/// loads, so the engine holds at most the serving generation and one more, as during `swap`. A staged
/// generation is in memory only: a restart forgets it (and serves what `steer.json` records). Writes
/// between `prepare` and `activate` go to the serving generation and the store; `activate` replays the
/// store's changes since `caughtUpSequence` into the staged index before it serves, so it loses none.
/// The change log it replays from is kept: `saveIndex` trims only up to the oldest manifest under
/// `DIR/generations/`, and a staged generation is one of them.
///
/// Threading: `prepare`, `activate`, `dropStaged` and `swap` are serialised by `swapLock`; reads and
/// writes go on meanwhile (writes wait only for `activate`'s last step, under `writeLock`).
extension RetrievalEngine {
    /// The id of the staged generation, nil when none is.
    public var stagedGenerationID: String? { stagedSlot.get()?.generation.id }

    /// Loads `reference` as `swap` does, without serving it, and stages it in place of any staged
    /// generation (that one is dropped first, before loading). Paths and checks as in `swap`.
    ///
    /// - Returns: the staged generation's id and the store writes replayed into it so far.
    /// - Throws: what `swap` throws before it switches; on any error nothing is staged.
    @discardableResult
    public func prepare(_ reference: String, checkpoint: String? = nil) throws(SteerError) -> (generation: String, replayed: Int) {
        try requireOpen()
        swapLock.lock()
        defer { swapLock.unlock() }
        stagedSlot.withLock { $0 = nil }
        let staged = try stageLocked(reference, checkpoint: checkpoint)
        stagedSlot.withLock { $0 = staged }
        return (staged.generation.id, staged.replayed)
    }

    /// Switches to the staged generation `id`: replays the store writes made since `prepare` (outside
    /// the write lock while much is left, then once more holding it), records it in `steer.json` and
    /// serves it; the slot is then empty. When nothing is staged and `id` serves already, nothing
    /// changes (`replayed` 0, `previous` = `id`): activating twice is harmless.
    ///
    /// - Throws: `.notFound` when `id` is neither staged nor serving (the staged one, if any, stays);
    ///   `.io` when `steer.json` cannot be written (the generation stays staged); `.unavailable` once closed.
    @discardableResult
    public func activate(_ id: String) throws(SteerError) -> SwapResult {
        try requireOpen()
        swapLock.lock()
        defer { swapLock.unlock() }
        guard let staged = stagedSlot.get(), staged.generation.id == id else {
            let serving = generation
            if serving.id == id {
                return SwapResult(generation: id, previous: id, replayed: 0, directory: serving.directory ?? "")
            }
            let other = stagedSlot.get().map { " (staged: \($0.generation.id))" } ?? " (nothing is staged)"
            throw SteerError.notFound("generation \(id) is not staged on this server\(other); prepare it first")
        }
        let result = try activateLocked(staged)
        stagedSlot.withLock { $0 = nil }
        return result
    }

    /// Drops the staged generation when it is `id` (any with nil).
    ///
    /// - Returns: whether one was dropped.
    @discardableResult
    public func dropStaged(_ id: String? = nil) -> Bool {
        swapLock.lock()
        defer { swapLock.unlock() }
        return stagedSlot.withLock { slot in
            guard let staged = slot, id == nil || staged.generation.id == id else { return false }
            slot = nil
            return true
        }
    }

    /// `swap`'s steps before the write lock: resolve, load, check, pick the encoder, catch up while much
    /// is left. Call holding `swapLock`.
    func stageLocked(_ reference: String, checkpoint: String?) throws(SteerError) -> StagedGeneration {
        let directory = try PathRoot(generationsDirectory).resolve(reference, field: "generation")
        let checkpoint = try checkpoint.map { (given) throws(SteerError) -> String in
            guard let root = configuration.checkpointRoot else {
                throw SteerError.invalid("checkpoint swaps are off: the server has no checkpoint root (start it with --checkpoint-root DIR or --checkpoint)")
            }
            return try PathRoot(root).resolve(given, field: "checkpoint")
        }
        let old = generation
        let loaded = try IndexGeneration.load(directory: directory)
        try Self.checkServable(loaded, store: store, dimension: old.dimension, metric: old.metric)
        let version = loaded.manifest.embeddingVersion
        let encoder: (any QueryEncoder)?
        if let checkpoint {
            let hash = try CheckpointHash.compute(directory: checkpoint)
            if let built = loaded.manifest.checkpointHash, built != hash {
                throw SteerError.invalid("generation \(loaded.generationID) was built from checkpoint \(built), '\(checkpoint)' is \(hash)")
            }
            let expected = CheckpointHash.versionName(for: hash)
            guard version == expected else {
                throw SteerError.invalid("generation \(loaded.generationID) indexes embedding version '\(version)', checkpoint '\(checkpoint)' has version '\(expected)'")
            }
            let model = try DPRModel.load(checkpoint: checkpoint, minilm: configuration.miniLMDirectory ?? "models/all-MiniLM-L6-v2")
            guard model.config.indexDimension == old.dimension else {
                throw SteerError(.dimensionMismatch, "checkpoint '\(checkpoint)' produces \(model.config.indexDimension)-d queries, the data directory holds \(old.dimension)-d vectors")
            }
            encoder = DPRQueryEncoder(model: model)
        } else if version == old.embeddingVersion {
            encoder = old.encoder
        } else if old.encoder == nil {
            encoder = nil
        } else if old.encoder is MeanHistoryEncoder {
            encoder = MeanHistoryEncoder(store: store, embeddingVersion: version, dimension: old.dimension)
        } else {
            throw SteerError.invalid("generation \(loaded.generationID) indexes embedding version '\(version)' but the \(String(describing: type(of: old.encoder!))) serving now encodes queries for '\(old.embeddingVersion)': give the checkpoint of '\(version)' in field 'checkpoint'")
        }
        let caughtUp = try GenerationCatchUp.replay(store: store, into: loaded)
        var staged = StagedGeneration(
            generation: Generation(id: loaded.generationID, embeddingVersion: version, dimension: old.dimension, metric: old.metric,
                                   index: loaded, encoder: encoder, builtAtSequence: loaded.manifest.storeSequence),
            directory: directory, caughtUpSequence: caughtUp.sequence, replayed: caughtUp.added + caughtUp.removed)
        try catchUpWhileMuchIsLeft(&staged, lastRound: caughtUp.added + caughtUp.removed)
        return staged
    }

    /// Replays store writes into the staged index while a round replayed more than `indexChunk`
    /// (at most 4 more rounds), outside the write lock.
    private func catchUpWhileMuchIsLeft(_ staged: inout StagedGeneration, lastRound: Int) throws(SteerError) {
        var last = lastRound
        var rounds = 0
        while last > Self.indexChunk && rounds < 4 {
            let caughtUp = try GenerationCatchUp.replay(store: store, into: staged.generation.index, since: staged.caughtUpSequence)
            staged.caughtUpSequence = caughtUp.sequence
            last = caughtUp.added + caughtUp.removed
            staged.replayed += last
            rounds += 1
        }
    }

    /// `swap`'s steps from the write lock on: one catch-up round outside it (writes made since the
    /// staging), the last one holding it, `steer.json`, the switch. Call holding `swapLock`.
    func activateLocked(_ staged: StagedGeneration) throws(SteerError) -> SwapResult {
        var staged = staged
        let first = try GenerationCatchUp.replay(store: store, into: staged.generation.index, since: staged.caughtUpSequence)
        staged.caughtUpSequence = first.sequence
        staged.replayed += first.added + first.removed
        try catchUpWhileMuchIsLeft(&staged, lastRound: first.added + first.removed)
        let next = staged.generation
        writeLock.lock()
        defer { writeLock.unlock() }
        try requireOpen()
        let last = try GenerationCatchUp.replay(store: store, into: next.index, since: staged.caughtUpSequence)
        staged.replayed += last.added + last.removed
        var config = directoryConfig.get()
        config.embeddingVersion = next.embeddingVersion
        config.generation = next.id
        config.generationDirectory = staged.directory
        try Self.writeConfig(config, directory: configuration.dataDirectory)
        directoryConfig.withLock { $0 = config }
        indexLag.withLock { $0 = nil }
        let previous = current.withLock { value in
            let was = value
            value = next
            return was
        }
        // The new index serves with its own defaults until its calibration (in the background) ends.
        recallCalibrator.calibrateIfDue(next, store: store)
        return SwapResult(generation: next.id, previous: previous.id, replayed: staged.replayed, directory: config.generationDirectory ?? staged.directory)
    }
}
