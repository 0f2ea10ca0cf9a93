import ArgumentParser
import Foundation
import SteerCore
import SteerIndex
import SteerStore

/// `steer demo`: the foundation end to end on seeded synthetic data. Stores items in RocksDB, builds a
/// FAISS index from the store's embedding scan, searches it, and reports recall against exact search,
/// so a person sees every layer do real work.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the built-in demo on seeded synthetic data (store, index, search, recall)."
    )

    @Option(help: "Data directory (created; an existing demo store is reused).") var data = "demo-data"
    @Option(help: "Number of synthetic items.") var count = 50_000
    @Option(help: "Embedding dimension.") var dimension = 64
    @Option(help: "Index factory string.") var spec = "HNSW32"
    @Option(help: "Queries used to measure recall.") var queries = 500
    @Option(help: "Seed of the synthetic data.") var seed: UInt64 = 7

    static let genres = ["comedy", "drama", "horror", "sci-fi", "romance", "thriller", "animation", "documentary", "western", "musical"]
    static let moods = ["dark", "feel-good", "slow-burn", "fast-paced", "quirky"]

    func validate() throws {
        guard count > 0, count <= 5_000_000 else { throw ValidationError("--count must be between 1 and 5,000,000") }
        guard dimension > 0, dimension <= 4096 else { throw ValidationError("--dimension must be between 1 and 4096") }
        guard queries > 0 else { throw ValidationError("--queries must be positive") }
    }

    func run() throws {
        let clock = ContinuousClock()
        let started = clock.now
        func elapsed(_ since: ContinuousClock.Instant) -> String {
            let ms = Double((clock.now - since).components.attoseconds) / 1e15 + Double((clock.now - since).components.seconds) * 1000
            return String(format: "%.2f s", ms / 1000)
        }

        print("steer demo: \(count) synthetic items, \(dimension)-d, index \(spec), data in \(data)/")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let store = try ItemStore(options: .init(path: data + "/store", syncWrites: false))
        defer { store.close() }
        let version = "demo-\(dimension)d-seed\(seed)"
        try store.createVersion(version, dimension: dimension)

        // 1. Items: seeded clustered vectors; each cluster has a genre, each item a mood.
        let clusters = 50
        let all = SyntheticVectors(count: count + queries, dimension: dimension, clusters: clusters, spread: 0.8, seed: seed)
        var phase = clock.now
        if store.count < count {
            var batch: [ItemStore.ItemWrite] = []
            for row in 0..<count {
                let vector = all.row(row)
                let genre = Self.genres[row % Self.genres.count]
                let mood = Self.moods[(row / Self.genres.count) % Self.moods.count]
                batch.append(.init(id: .int(Int64(row)), title: "Item \(row)", tags: [genre, mood], attributesJSON: nil, vectors: [version: vector]))
                if batch.count == 1000 || row == count - 1 {
                    _ = try store.upsert(batch)
                    batch.removeAll(keepingCapacity: true)
                }
            }
            print("1. stored \(count) items in RocksDB in \(elapsed(phase))")
        } else {
            print("1. store already holds \(store.count) items, reusing them")
        }

        // 2. Index: built from a consistent scan of the store's embeddings.
        phase = clock.now
        let index = try VectorIndex(spec: IndexSpec(parsing: spec), dimension: dimension, metric: .innerProduct)
        var labels: [Int64] = []
        var vectors: [Float] = []
        let sequence = try store.scanVectors(version: version) { ids, values in
            labels += ids
            vectors += values
        }
        if index.spec.needsTraining { try index.train(vectors) }
        try index.add(vectors, labels: labels)
        print("2. built \(spec) over \(index.count) vectors (store sequence \(sequence)) in \(elapsed(phase))")

        // 3. Search and recall against exact search.
        phase = clock.now
        let queryVectors = Array(all.values[(count * dimension)...])
        let found = try index.search(queryVectors, k: 10, parameters: SearchParameters(nprobe: 16, efSearch: 64))
        let searchTime = elapsed(phase)
        var truth: [[Int64]] = []
        for q in 0..<queries {
            let query = Array(queryVectors[(q * dimension)..<((q + 1) * dimension)])
            truth.append(ExactSearch.topK(query: query, base: vectors, dimension: dimension, labels: labels, k: 10, metric: .innerProduct).map(\.label))
        }
        let recall = ExactSearch.recall(found: found.map { $0.map(\.label) }, truth: truth)
        print("3. searched \(queries) queries in \(searchTime): recall@10 = \(String(format: "%.3f", recall)) against exact search")

        // 4. One query, hydrated from the store, unfiltered and filtered by tag.
        let first = Array(queryVectors[0..<dimension])
        try show(title: "4. top 5 for query 0", hits: index.search(first, k: 5)[0], store: store)
        let horror = try store.internalIDs(withTag: "horror")
        let filtered = try index.search(first, k: 5, parameters: SearchParameters(efSearch: 64, allowed: AllowedLabels(sortedLabels: horror)))[0]
        try show(title: "5. top 5 for query 0 among the \(horror.count) items tagged horror", hits: filtered, store: store)
        print("done in \(elapsed(started))")
    }

    private func show(title: String, hits: [ScoredLabel], store: ItemStore) throws {
        print(title)
        let records = try store.records(internalIDs: hits.map(\.label))
        for (hit, record) in zip(hits, records) {
            let name = record?.title ?? "?"
            let tags = record?.tags.joined(separator: ", ") ?? ""
            print("   \(String(format: "%.4f", hit.score))  \(name.padding(toLength: 12, withPad: " ", startingAt: 0)) [\(tags)]")
        }
    }
}
