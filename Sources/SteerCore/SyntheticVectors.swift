/// Seeded clustered vector sets for tests, the demo and benchmarks.
///
/// Points are drawn around `clusters` random centres; `spread` is the ratio of within-cluster noise to
/// the centres' scale, so larger values mean more overlap between clusters (IVF is flattered by tight,
/// well-separated clusters; see docs/dependencies.md).
public struct SyntheticVectors: Sendable {
    public let count: Int
    public let dimension: Int
    /// Row-major, `count * dimension` floats.
    public let values: [Float]

    /// - Parameters:
    ///   - count: number of vectors.
    ///   - dimension: floats per vector.
    ///   - clusters: number of generating centres (at least 1).
    ///   - spread: within-cluster standard deviation relative to the centres' (1.0 = heavy overlap).
    ///   - normalize: L2-normalise every vector (typical for inner-product retrieval).
    ///   - seed: the generator seed; the same seed gives the same vectors.
    public init(count: Int, dimension: Int, clusters: Int = 100, spread: Float = 0.5, normalize: Bool = true, seed: UInt64) {
        precondition(count >= 0 && dimension > 0 && clusters > 0)
        var rng = SeededGenerator(seed: seed)
        var centres = [Float](repeating: 0, count: clusters * dimension)
        for i in 0..<centres.count { centres[i] = rng.nextGaussian() }
        var values = [Float](repeating: 0, count: count * dimension)
        for row in 0..<count {
            let centre = Int(rng.next() % UInt64(clusters))
            for j in 0..<dimension {
                values[row * dimension + j] = centres[centre * dimension + j] + spread * rng.nextGaussian()
            }
        }
        if normalize { Vectors.normalizeRows(&values, dimension: dimension) }
        self.count = count
        self.dimension = dimension
        self.values = values
    }

    /// Row `i` as a fresh array.
    public func row(_ i: Int) -> [Float] { Array(values[(i * dimension)..<((i + 1) * dimension)]) }
}
