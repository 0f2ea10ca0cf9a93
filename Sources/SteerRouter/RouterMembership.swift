import SteerCore

/// Replica membership that changes while the router runs (docs/scaling.md, "Cluster metadata"): `steer
/// route --follow … --cluster C` without `--shard` flags reads the replicas each shard has from the
/// cluster's replicas bucket and calls `setReplicas` with what it finds.
///
/// - A replica still listed keeps its connections, health and counters; a new one starts down and
///   serves once a health check answers (started here at once, so within one check); one no longer
///   listed leaves the table and its connections are closed (a request that holds it fails over to the
///   next replica).
/// - The shard count never changes (the sharding function depends on it).
/// - `replicas` readers take a snapshot of the table, so a request sees one membership throughout.
extension Router {
    /// Replaces the replica endpoints of every shard.
    ///
    /// - Parameter endpoints: one list per shard (`replicas.count` lists); an endpoint listed under two
    ///   shards is kept under the first only.
    /// - Returns: whether anything changed.
    /// - Throws: `.invalidRequest` for a list of the wrong length.
    @discardableResult
    public func setReplicas(_ endpoints: [[ShardEndpoint]]) async throws(SteerError) -> Bool {
        let (added, removed) = try replicaTable.withLock { (table) throws(SteerError) -> ([Replica], [Replica]) in
            guard endpoints.count == table.count else {
                throw SteerError.invalid("\(endpoints.count) shard lists for \(table.count) shards")
            }
            var added: [Replica] = []
            var removed: [Replica] = []
            var seen = Set<ShardEndpoint>()
            for shard in table.indices {
                let wanted = endpoints[shard].filter { seen.insert($0).inserted }
                let kept = table[shard].filter { wanted.contains($0.endpoint) }
                removed += table[shard].filter { !wanted.contains($0.endpoint) }
                let fresh = wanted.filter { endpoint in !kept.contains { $0.endpoint == endpoint } }.map { makeReplica(shard, $0) }
                added += fresh
                table[shard] = kept + fresh
            }
            return (added, removed)
        }
        for replica in removed {
            replica.closeConnections()
            logger.info("replica left the cluster", metadata: ["steer.replica": "\(replica.endpoint)", "steer.shard": "\(replica.shard)"])
        }
        for replica in added {
            logger.info("replica joined the cluster", metadata: ["steer.replica": "\(replica.endpoint)", "steer.shard": "\(replica.shard)"])
        }
        if !added.isEmpty { await checkHealth() }
        return !added.isEmpty || !removed.isEmpty
    }
}
