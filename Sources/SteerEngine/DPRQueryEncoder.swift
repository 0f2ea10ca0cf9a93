import SteerCore
import SteerModel

/// The DPR model (SteerModel) as the engine's query encoder: history ids → catalog rows → the steered
/// query `q` and the no-prompt vector `h⁺`, with the prompt's clauses and their catalog tags.
///
/// The generation that uses it must serve the embedding version ingested from the same checkpoint
/// (`steer ingest`), so that `q` is searched against that model's item table and no other.
public struct DPRQueryEncoder: QueryEncoder {
    public let model: DPRModel

    public init(model: DPRModel) {
        self.model = model
    }

    public var dimension: Int { model.config.indexDimension }

    public func encode(history: [ItemID], prompt: String?) throws(SteerError) -> EncodedQuery {
        if history.isEmpty, (prompt ?? "").allSatisfy(\.isWhitespace) {
            throw SteerError.invalid("history is empty and there is no prompt: give at least one of them")
        }
        let (rows, unknown) = model.rows(for: history)
        if rows.isEmpty, !history.isEmpty {
            throw SteerError.notFound("none of the \(history.count) history ids is in the model's catalog")
        }
        let query = try model.encode(historyRows: rows, prompt: prompt)
        let clauses = query.clauses.map { clause in
            QueryClause(text: clause.text, polarity: clause.polarity == .positive ? .positive : .negative, tags: clause.tags)
        }
        return EncodedQuery(vector: query.query, baseVector: query.userVector, hybridVector: query.hybridQuery, clauses: clauses,
                            unknownHistory: unknown)
    }

    /// The clause-embedding cache's counters, reported by `stats` under `encoder_stats`.
    public var statistics: [(name: String, value: Int)] {
        let stats = model.cacheStats
        return [("clause_cache_hits", stats.hits), ("clause_cache_misses", stats.misses),
                ("clause_cache_evictions", stats.evictions), ("clause_cache_entries", stats.count),
                ("clause_cache_capacity", stats.capacity)]
    }
}
