// TEMPORARY stand-in for SteerIndex (notes/index-api.md) while that module is written on branch `index`.
// Declarations here shadow SteerIndex's; this file is deleted when `index` is merged. Brute force only.
import Foundation
import SteerCore

public struct IndexSpec: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable, Hashable {
        case flat
        case hnsw(m: Int, efConstruction: Int)
        case ivfFlat(lists: Int)
        case ivfPQ(lists: Int, subquantizers: Int, bits: Int)
        case ivfSQ8(lists: Int)
    }
    public let family: Family
    public init(parsing factory: String) throws(SteerError) {
        guard factory.lowercased() == "flat" else { throw SteerError.invalid("index spec '\(factory)': only Flat in the stand-in") }
        family = .flat
    }
    public var factoryString: String { "Flat" }
    public var description: String { factoryString }
    public var needsTraining: Bool { false }
    public var isExact: Bool { true }
}

public struct AllowedLabels: Sendable {
    private let labels: Set<Int64>
    public init(sortedLabels: [Int64]) { labels = Set(sortedLabels) }
    public init(_ labels: some Sequence<Int64>) { self.labels = Set(labels) }
    public var count: Int { labels.count }
    public func contains(_ label: Int64) -> Bool { labels.contains(label) }
}

public struct SearchParameters: Sendable {
    public var nprobe: Int?
    public var efSearch: Int?
    public var allowed: AllowedLabels?
    public init(nprobe: Int? = nil, efSearch: Int? = nil, allowed: AllowedLabels? = nil) {
        self.nprobe = nprobe
        self.efSearch = efSearch
        self.allowed = allowed
    }
}

public final class VectorIndex: @unchecked Sendable {
    public static let maxK = 10_000
    public let spec: IndexSpec
    public let dimension: Int
    public let metric: Metric
    public var defaultNprobe = 1
    public var defaultEfSearch = 16
    private let lock = NSLock()
    private var rows: [Int64: [Float]] = [:]

    public init(spec: IndexSpec, dimension: Int, metric: Metric) throws(SteerError) {
        self.spec = spec
        self.dimension = dimension
        self.metric = metric
    }

    public static func load(path: String, memoryMapped: Bool = false) throws(SteerError) -> VectorIndex {
        throw SteerError.notFound("stand-in index cannot load '\(path)'")
    }

    public func save(to path: String) throws(SteerError) {}

    public var count: Int { lock.withLock { rows.count } }
    public var tombstoneCount: Int { 0 }
    public var isTrained: Bool { true }
    public func train(_ vectors: [Float]) throws(SteerError) {}

    public func add(_ vectors: [Float], labels: [Int64]) throws(SteerError) {
        guard vectors.count == labels.count * dimension else { throw SteerError.dimension(expected: dimension, got: vectors.count) }
        lock.withLock {
            for (row, label) in labels.enumerated() {
                var vector = Array(vectors[(row * dimension)..<((row + 1) * dimension)])
                if metric == .cosine { Vectors.normalizeRows(&vector, dimension: dimension) }
                rows[label] = vector
            }
        }
    }

    @discardableResult
    public func remove(labels: [Int64]) throws(SteerError) -> Int {
        lock.withLock { labels.reduce(0) { $0 + (rows.removeValue(forKey: $1) == nil ? 0 : 1) } }
    }

    public func contains(label: Int64) -> Bool { lock.withLock { rows[label] != nil } }

    public func search(_ queries: [Float], k: Int, parameters: SearchParameters = .init()) throws(SteerError) -> [[ScoredLabel]] {
        guard k > 0 && k <= Self.maxK else { throw SteerError.invalid("k must be 1 to \(Self.maxK)") }
        guard queries.count % dimension == 0 else { throw SteerError.dimension(expected: dimension, got: queries.count) }
        let snapshot = lock.withLock { rows }
        let labels = Array(snapshot.keys)
        var base: [Float] = []
        base.reserveCapacity(labels.count * dimension)
        for label in labels { base.append(contentsOf: snapshot[label]!) }
        var results: [[ScoredLabel]] = []
        for start in stride(from: 0, to: queries.count, by: dimension) {
            var query = Array(queries[start..<(start + dimension)])
            if metric == .cosine { Vectors.normalizeRows(&query, dimension: dimension) }
            let allowed = parameters.allowed
            results.append(ExactSearch.topK(query: query, base: base, dimension: dimension, labels: labels, k: k, metric: metric,
                                            allowed: allowed.map { set in { set.contains($0) } }))
        }
        return results
    }

    public func compact() throws(SteerError) {}
    public func reset() { lock.withLock { rows = [:] } }
}

public enum FaissInfo {
    public static var version: String { "stand-in" }
    public static var openMPMaxThreads: Int { 1 }
}
