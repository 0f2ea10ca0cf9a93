import Foundation
import SteerCore
import SteerData
import SteerIndex
import SteerStore

/// `steer-index verify`: files against the manifest, placement and completeness against the store,
/// and recall@k against exact search over the store's vectors.
public enum GenerationVerifier {
    public struct Report: Sendable {
        public var generationID: String
        public var shards: Int
        public var count: Int
        /// Set when a store was given.
        public var storeCheck: StoreCheck?

        public struct StoreCheck: Sendable {
            /// The store sequence compared against (after replaying writes made since the build).
            public var sequence: UInt64
            public var replayedAdded: Int
            public var replayedRemoved: Int
            /// Store items of the version that no shard holds.
            public var missing: Int
            /// Store items held by a shard other than `Sharding.shard(of:)`.
            public var misplaced: Int
            /// Live vectors in the generation that the store's version does not have.
            public var extra: Int
            public var queries: Int
            public var k: Int
            public var recall: Double
        }
    }

    /// Verifies a generation directory.
    ///
    /// - Parameters:
    ///   - directory: the generation.
    ///   - store: when given, the generation is caught up with it (`GenerationCatchUp`) and compared.
    ///   - sample: query vectors drawn (seeded) from the store's version for recall@k.
    ///   - k: results per query.
    ///   - parameters: search parameters (nprobe, efSearch) for the generation.
    /// - Throws: what `IndexGeneration.load` throws for a bad generation (checksums, counts, files).
    public static func verify(directory: String, store: ItemStore?, sample: Int = 200, k: Int = 10, seed: UInt64 = 7,
                              parameters: SearchParameters = .init()) throws(SteerError) -> Report {
        let generation = try IndexGeneration.load(directory: directory)
        var report = Report(generationID: generation.generationID, shards: generation.shards.count, count: generation.count)
        guard let store else { return report }
        let replay = try GenerationCatchUp.replay(store: store, into: generation)
        let version = generation.manifest.embeddingVersion
        let dimension = generation.dimension
        var labels: [Int64] = []
        var vectors: [Float] = []
        do {
            _ = try store.scanVectors(version: version) { batchLabels, batchVectors in
                labels.append(contentsOf: batchLabels)
                vectors.append(contentsOf: batchVectors)
            }
        } catch let error as SteerError {
            throw error
        } catch {
            throw SteerError.internalError("\(error)")
        }
        var missing = 0
        var misplaced = 0
        var offset = 0
        while offset < labels.count {
            let slice = Array(labels[offset..<min(labels.count, offset + 8192)])
            let records = try store.records(internalIDs: slice)
            for (label, record) in zip(slice, records) {
                guard let record else { continue }
                let expected = generation.shard(of: record.id)
                if generation.shards[expected].contains(label: label) { continue }
                if generation.contains(label: label) { misplaced += 1 } else { missing += 1 }
            }
            offset += 8192
        }
        let extra = max(0, generation.count - (labels.count - missing))
        let rows = GenerationBuilder.seededSample(count: labels.count, size: sample, seed: seed)
        var queries: [Float] = []
        for row in rows { queries.append(contentsOf: vectors[(row * dimension)..<((row + 1) * dimension)]) }
        if generation.metric == .cosine {
            Vectors.normalizeRows(&vectors, dimension: dimension)
            if !queries.isEmpty { Vectors.normalizeRows(&queries, dimension: dimension) }
        }
        var found: [[Int64]] = []
        var truth: [[Int64]] = []
        if !rows.isEmpty {
            found = try generation.search(queries, k: k, parameters: parameters).map { $0.map(\.label) }
            for q in 0..<rows.count {
                let query = Array(queries[(q * dimension)..<((q + 1) * dimension)])
                truth.append(ExactSearch.topK(query: query, base: vectors, dimension: dimension, labels: labels, k: k, metric: generation.metric).map(\.label))
            }
        }
        report.count = generation.count
        report.storeCheck = .init(sequence: replay.sequence, replayedAdded: replay.added, replayedRemoved: replay.removed,
                                  missing: missing, misplaced: misplaced, extra: extra, queries: rows.count, k: k,
                                  recall: ExactSearch.recall(found: found, truth: truth))
        return report
    }
}
