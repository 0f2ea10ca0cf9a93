import SteerCore
import SteerStore

/// What a `QueryEncoder` produces for one history and prompt.
public struct EncodedQuery: Sendable {
    /// The (steered) query vector, `dimension` floats.
    public var vector: [Float]
    /// The vector without the prompt (`q = h`); `constraints: hard` searches with it.
    public var baseVector: [Float]
    /// The vector `constraints: hybrid` searches with (inside its filters): `vector` unless the encoder blends
    /// (DPR with a tuned hybrid blend β: `h⁺ + β · (vector − h⁺)`).
    public var hybridVector: [Float]
    /// The prompt's clauses (empty without a prompt or for encoders that ignore prompts).
    public var clauses: [QueryClause]
    /// History ids the encoder did not know; they were skipped.
    public var unknownHistory: [ItemID]

    public init(vector: [Float], baseVector: [Float], hybridVector: [Float]? = nil, clauses: [QueryClause] = [],
                unknownHistory: [ItemID] = []) {
        self.vector = vector
        self.baseVector = baseVector
        self.hybridVector = hybridVector ?? vector
        self.clauses = clauses
        self.unknownHistory = unknownHistory
    }
}

/// Turns a user's history (item ids, oldest first) and an optional prompt into a query vector in the
/// generation's embedding space. The DPR model plugs in through an adapter conforming to this.
///
/// Implementations are called concurrently from the engine's worker threads.
public protocol QueryEncoder: Sendable {
    /// Floats per produced vector; must equal the generation's dimension.
    var dimension: Int { get }
    /// - Throws: `.notFound` when no history id is known; `.invalidRequest` for an unusable prompt.
    func encode(history: [ItemID], prompt: String?) throws(SteerError) -> EncodedQuery
    /// Counters the encoder wants `stats` to show (for example its prompt cache's hits), in a stable order.
    var statistics: [(name: String, value: Int)] { get }
}

extension QueryEncoder {
    public var statistics: [(name: String, value: Int)] { [] }
}

/// The simplest real encoder: the mean of the history items' stored vectors. It ignores the prompt
/// (no clauses), so `recommend` works without a trained model.
public struct MeanHistoryEncoder: QueryEncoder {
    public let store: ItemStore
    public let embeddingVersion: String
    public let dimension: Int

    /// - Parameters:
    ///   - store: where history items' vectors are read.
    ///   - embeddingVersion: the version whose vectors are averaged.
    ///   - dimension: that version's dimension.
    public init(store: ItemStore, embeddingVersion: String, dimension: Int) {
        self.store = store
        self.embeddingVersion = embeddingVersion
        self.dimension = dimension
    }

    public func encode(history: [ItemID], prompt: String?) throws(SteerError) -> EncodedQuery {
        guard !history.isEmpty else { throw SteerError.invalid("history must not be empty (this generation has no model that can answer a prompt alone)") }
        let records = try store.get(history)
        var internalIDs: [Int64] = []
        var unknown: [ItemID] = []
        for (id, record) in zip(history, records) {
            if let record { internalIDs.append(record.internalID) } else { unknown.append(id) }
        }
        var known: [[Float]] = []
        if !internalIDs.isEmpty {
            let vectors = try store.vectors(internalIDs: internalIDs, version: embeddingVersion)
            for (position, vector) in vectors.enumerated() {
                guard let vector, vector.count == dimension else {
                    if let record = records.compactMap({ $0 }).first(where: { $0.internalID == internalIDs[position] }) {
                        unknown.append(record.id)
                    }
                    continue
                }
                known.append(vector)
            }
        }
        let mean = try Self.mean(of: known, historyCount: history.count)
        return EncodedQuery(vector: mean, baseVector: mean, clauses: [], unknownHistory: unknown)
    }

    /// The mean of the history's known vectors, summed in history order (the router computes it the same
    /// way from vectors it reads from the shards, so both give the same floats).
    ///
    /// - Parameters:
    ///   - vectors: the known history items' vectors, in history order, all of one dimension.
    ///   - historyCount: how many ids the history had (for the message).
    /// - Throws: `.notFound` when no vector is given; `.dimensionMismatch` when they differ in length.
    public static func mean(of vectors: [[Float]], historyCount: Int) throws(SteerError) -> [Float] {
        guard let first = vectors.first else {
            throw SteerError.notFound("history: none of the \(historyCount) ids is a known item with a vector")
        }
        let dimension = first.count
        var sum = [Float](repeating: 0, count: dimension)
        for vector in vectors {
            guard vector.count == dimension else {
                throw SteerError(.dimensionMismatch, "history vectors have \(dimension) and \(vector.count) floats")
            }
            for i in 0..<dimension { sum[i] += vector[i] }
        }
        let scale = 1 / Float(vectors.count)
        for i in 0..<dimension { sum[i] *= scale }
        return sum
    }
}
