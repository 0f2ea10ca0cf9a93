import Foundation
import SteerBenchKit
import SteerCore
import SteerModel

/// A benchmark data set on disk, in the layout steer-index-bench and the Python peers read:
/// `base.f32` (count × dimension little-endian float32), `queries.f32`, `truth.i64` (queries × truth_k
/// row indices, best first, from exact search), `meta.json`, and for checkpoint sets `ids.json` (the
/// external item id of every base row, as the server returns them).
struct DataSet: Sendable {
    var meta: DataSetMeta
    /// Row-major, `meta.count * meta.dimension` floats.
    var base: [Float]
    /// Row-major, `meta.queries * meta.dimension` floats.
    var queries: [Float]
    /// `meta.queries * meta.truthK` row indices.
    var truth: [Int64]
    /// The external id of each base row (nil: the row index as an integer id).
    var ids: [ItemID]?

    var dimension: Int { meta.dimension }
    var count: Int { meta.count }
    var queryCount: Int { meta.queries }

    func baseRow(_ row: Int) -> [Float] { Array(base[(row * dimension)..<((row + 1) * dimension)]) }
    func query(_ index: Int) -> [Float] { Array(queries[(index * dimension)..<((index + 1) * dimension)]) }
    func itemID(row: Int) -> ItemID { ids?[row] ?? .int(Int64(row)) }

    /// The true top `k` rows of query `index` (k ≤ truth_k).
    func truth(_ index: Int, k: Int) -> ArraySlice<Int64> {
        truth[(index * meta.truthK)..<(index * meta.truthK + k)]
    }

    // MARK: Files

    /// A directory in this layout, or an ann-benchmarks HDF5 file (a regular file named *.hdf5 or *.h5).
    static func load(_ path: String) throws(SteerError) -> DataSet {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        if exists && !isDirectory.boolValue || path.hasSuffix(".hdf5") || path.hasSuffix(".h5") {
            return try annBenchmarks(path: path)
        }
        return try read(directory: path)
    }

    /// An ann-benchmarks file (`train`, `test`, `neighbors`, the `distance` attribute; ANNBenchmarksFile
    /// checks shapes and bounds). `angular` sets are L2-normalised here and searched by inner product
    /// (the same order as the file's cosine distance); `euclidean` sets are searched with the l2 metric.
    /// The file's `neighbors` are the ground truth.
    static func annBenchmarks(path: String) throws(SteerError) -> DataSet {
        let file = try ANNBenchmarksFile.read(path: path)
        var train = file.train, test = file.test
        let metric: String
        switch file.metric {
        case .cosine:
            normalize(&train, dimension: file.dimension)
            normalize(&test, dimension: file.dimension)
            metric = "ip"
        case .l2: metric = "l2"
        case .innerProduct: metric = "ip"
        }
        let meta = DataSetMeta(count: file.count, dimension: file.dimension, queries: file.queries, truthK: file.truthK, metric: metric,
                               normalized: file.metric == .cosine, source: "hdf5", clusters: nil, spread: nil, seed: nil, checkpoint: nil,
                               historyLength: nil, file: path, distance: file.distance)
        return DataSet(meta: meta, base: train, queries: test, truth: file.neighbors, ids: nil)
    }

    /// Scales every row to unit length (zero rows stay zero).
    static func normalize(_ values: inout [Float], dimension: Int) {
        for row in 0..<(values.count / dimension) {
            var sum: Float = 0
            for i in (row * dimension)..<((row + 1) * dimension) { sum += values[i] * values[i] }
            guard sum > 0 else { continue }
            let scale = 1 / sum.squareRoot()
            for i in (row * dimension)..<((row + 1) * dimension) { values[i] *= scale }
        }
    }

    static func read(directory: String) throws(SteerError) -> DataSet {
        let metaPath = directory + "/meta.json"
        let meta: DataSetMeta
        do {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            meta = try decoder.decode(DataSetMeta.self, from: try Data(contentsOf: URL(fileURLWithPath: metaPath)))
        } catch {
            throw SteerError(.notFound, "\(metaPath): cannot read the data set's meta.json (\(error)); make one with `steer-bench generate`")
        }
        guard meta.count > 0, meta.dimension > 0, meta.queries > 0, meta.truthK > 0 else {
            throw SteerError(.corrupt, "\(metaPath): count, dimension, queries and truth_k must be positive")
        }
        let base: [Float] = try readArray(directory + "/base.f32", expected: meta.count * meta.dimension)
        let queries: [Float] = try readArray(directory + "/queries.f32", expected: meta.queries * meta.dimension)
        let truth: [Int64] = try readArray(directory + "/truth.i64", expected: meta.queries * meta.truthK)
        if let bad = truth.first(where: { $0 < 0 || $0 >= Int64(meta.count) }) {
            throw SteerError(.corrupt, "\(directory)/truth.i64: row \(bad) is outside 0..<\(meta.count)")
        }
        var ids: [ItemID]?
        let idsPath = directory + "/ids.json"
        if FileManager.default.fileExists(atPath: idsPath) {
            guard let data = FileManager.default.contents(atPath: idsPath),
                  let list = try? JSONSerialization.jsonObject(with: data) as? [Any] else {
                throw SteerError(.corrupt, "\(idsPath): not a JSON array")
            }
            guard list.count == meta.count else { throw SteerError(.corrupt, "\(idsPath): \(list.count) ids, meta.json says \(meta.count)") }
            var parsed: [ItemID] = []
            parsed.reserveCapacity(list.count)
            for (row, value) in list.enumerated() {
                if let text = value as? String { parsed.append(.string(text)) }
                else if let number = value as? Int { parsed.append(.int(Int64(number))) }
                else { throw SteerError(.corrupt, "\(idsPath): entry \(row) is neither a string nor an integer") }
            }
            ids = parsed
        }
        return DataSet(meta: meta, base: base, queries: queries, truth: truth, ids: ids)
    }

    func write(directory: String) throws(SteerError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try writeArray(base, to: directory + "/base.f32")
            try writeArray(queries, to: directory + "/queries.f32")
            try writeArray(truth, to: directory + "/truth.i64")
            if let ids {
                let list: [Any] = ids.map { id -> Any in
                    switch id {
                    case .int(let value): return value
                    case .string(let text): return text
                    }
                }
                try JSONSerialization.data(withJSONObject: list).write(to: URL(fileURLWithPath: directory + "/ids.json"))
            }
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(meta).write(to: URL(fileURLWithPath: directory + "/meta.json"))
        } catch let error as SteerError {
            throw error
        } catch {
            throw SteerError(.io, "cannot write the data set to \(directory): \(error)")
        }
    }

    // MARK: Ground truth

    /// Exact top-`k` rows of every query by brute force (SteerCore's `ExactSearch`), queries spread over
    /// all cores.
    static func exactTruth(base: [Float], queries: [Float], dimension: Int, k: Int, metric: Metric) -> [Int64] {
        let queryCount = queries.count / dimension
        let truth = Locked<[Int64]>([Int64](repeating: -1, count: queryCount * k))
        let chunks = max(1, ProcessInfo.processInfo.activeProcessorCount * 4)
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            let begin = queryCount * chunk / chunks, end = queryCount * (chunk + 1) / chunks
            var local: [Int64] = []
            local.reserveCapacity((end - begin) * k)
            for q in begin..<end {
                let best = ExactSearch.topK(query: Array(queries[(q * dimension)..<((q + 1) * dimension)]), base: base,
                                            dimension: dimension, k: k, metric: metric)
                local += best.map(\.label)
                // Fewer base rows than k: pad with the last row so the file keeps its shape.
                for _ in best.count..<k { local.append(best.last?.label ?? 0) }
            }
            truth.withLock { $0.replaceSubrange((begin * k)..<(end * k), with: local) }
        }
        return truth.get()
    }

    // MARK: Generation

    /// A seeded clustered set (SteerCore's `SyntheticVectors`): base and queries come from the same
    /// centres; queries are drawn after the base rows, so they are not base rows themselves.
    static func synthetic(count: Int, dimension: Int, queries: Int, clusters: Int, spread: Float, seed: UInt64, truthK: Int) -> DataSet {
        let all = SyntheticVectors(count: count + queries, dimension: dimension, clusters: clusters, spread: spread, seed: seed)
        let base = Array(all.values[0..<(count * dimension)])
        let qs = Array(all.values[(count * dimension)...])
        let truth = exactTruth(base: base, queries: qs, dimension: dimension, k: truthK, metric: .innerProduct)
        let meta = DataSetMeta(count: count, dimension: dimension, queries: queries, truthK: truthK, metric: "ip", normalized: true,
                               source: "synthetic", clusters: clusters, spread: Double(spread), seed: Int(seed), checkpoint: nil, historyLength: nil,
                               file: nil, distance: nil)
        return DataSet(meta: meta, base: base, queries: qs, truth: truth, ids: nil)
    }

    /// Item embeddings of a trained DPR checkpoint as the base, and real no-prompt DPR query vectors
    /// (the backbone's user vector for seeded random histories of catalog items) as the queries.
    static func checkpoint(directory: String, minilm: String, queries: Int, historyLength: Int, seed: UInt64, truthK: Int) throws(SteerError) -> DataSet {
        let model = try DPRModel.load(checkpoint: directory, minilm: minilm, cacheCapacity: 0)
        let count = model.config.itemCount
        let dimension = model.config.indexDimension
        var rng = SeededGenerator(seed: seed)
        var qs: [Float] = []
        qs.reserveCapacity(queries * dimension)
        for _ in 0..<queries {
            let history = (0..<historyLength).map { _ in Int(rng.next() % UInt64(count)) }
            qs += try model.encode(historyRows: history, prompt: nil).query
        }
        let truth = exactTruth(base: model.itemEmbeddings, queries: qs, dimension: dimension, k: min(truthK, count), metric: .innerProduct)
        let meta = DataSetMeta(count: count, dimension: dimension, queries: queries, truthK: min(truthK, count), metric: "ip", normalized: false,
                               source: "checkpoint", clusters: nil, spread: nil, seed: Int(seed), checkpoint: directory, historyLength: historyLength,
                               file: nil, distance: nil)
        return DataSet(meta: meta, base: model.itemEmbeddings, queries: qs, truth: truth, ids: model.catalog.map(\.id))
    }
}

/// `meta.json`. The first keys are the ones steer-index-bench writes, so either tool reads the other's sets.
struct DataSetMeta: Codable, Sendable {
    var count: Int
    var dimension: Int
    var queries: Int
    var truthK: Int
    var metric: String
    var normalized: Bool
    var source: String?
    var clusters: Int?
    var spread: Double?
    var seed: Int?
    var checkpoint: String?
    var historyLength: Int?
    /// ann-benchmarks sets: the HDF5 file and its `distance` attribute.
    var file: String?
    var distance: String?
}

func readArray<T: BitwiseCopyable>(_ path: String, expected: Int) throws(SteerError) -> [T] {
    guard let data = FileManager.default.contents(atPath: path) else { throw SteerError(.notFound, "\(path): cannot read the file") }
    guard data.count == expected * MemoryLayout<T>.stride else {
        throw SteerError(.corrupt, "\(path): \(data.count) bytes, expected \(expected * MemoryLayout<T>.stride) (meta.json's sizes)")
    }
    return [T](unsafeUninitializedCapacity: expected) { buffer, initialized in
        data.withUnsafeBytes { raw in
            _ = raw.copyBytes(to: UnsafeMutableRawBufferPointer(buffer))
        }
        initialized = expected
    }
}

func writeArray<T>(_ values: [T], to path: String) throws {
    try values.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: path)) }
}

/// A value behind a lock, for results gathered from worker threads.
final class Locked<Value>: @unchecked Sendable {
    // @unchecked Sendable: every access to `value` holds `lock`.
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
    func get() -> Value { withLock { $0 } }
}
