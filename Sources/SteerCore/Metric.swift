/// How similarity is scored. Steer always reports scores where higher is better.
public enum Metric: String, Sendable, Hashable, CaseIterable, Codable {
    /// Dot product. DPR scores items this way.
    case innerProduct = "ip"
    /// Euclidean distance; reported score is the negated squared distance.
    case l2
    /// Inner product of L2-normalised vectors; vectors are normalised on the way in.
    case cosine

    /// Parses `ip`, `inner_product`, `l2`, `cosine` (case-insensitive).
    public init(parsing text: String) throws(SteerError) {
        switch text.lowercased() {
        case "ip", "inner_product", "innerproduct", "dot": self = .innerProduct
        case "l2", "euclidean": self = .l2
        case "cosine", "cos": self = .cosine
        default: throw SteerError.invalid("unknown metric '\(text)' (expected ip, l2 or cosine)")
        }
    }

    /// Exact score of `a` against `b`, higher is better (used for ground truth and small exact scans).
    @inlinable
    public func score(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> Float {
        precondition(a.count == b.count, "score of vectors with different lengths")
        switch self {
        case .innerProduct, .cosine:
            var sum: Float = 0
            for i in 0..<a.count { sum += a[i] * b[i] }
            return sum
        case .l2:
            var sum: Float = 0
            for i in 0..<a.count { let d = a[i] - b[i]; sum += d * d }
            return -sum
        }
    }
}

/// Vector helpers shared by every layer.
public enum Vectors {
    /// The largest magnitude a stored or query vector component may have. Scores are Float dot
    /// products (or squared L2 distances) over at most `ItemStore.maxDimension` (65,536) components:
    /// with |x| <= 1e15 a score stays below 65,536 × (2e15)² ≈ 2.6e35 < Float's 3.4e38, so it is
    /// always finite (a larger finite value could overflow to infinity and answer `"score": null`).
    public static let maxMagnitude: Float = 1e15

    /// Throws unless every value is finite and at most `maxMagnitude` in magnitude.
    ///
    /// Every query passes here (twice: the request decoder and the engine), so the check is one pass over
    /// contiguous storage with no branch per element until a bad value turns up; the generic form was an
    /// unspecialized call across modules costing about 9 µs per 128-d search (docs/benchmarks.md "Where
    /// the server's time goes").
    ///
    /// - Throws: `invalid_request` naming `field[i]`.
    public static func requireFinite(_ values: some Collection<Float>, field: @autoclosure () -> String = "vector") throws(SteerError) {
        let clean: Bool? = values.withContiguousStorageIfAvailable { buffer in
            // `magnitude <= maxMagnitude` is false for NaN and ±infinity too: one comparison covers all three.
            for value in buffer where !(value.magnitude <= maxMagnitude) { return false }
            return true
        }
        if clean == true { return }
        var index = 0
        for value in values {
            if !value.isFinite { throw SteerError.invalid("\(field())[\(index)] is not a finite number") }
            if value.magnitude > maxMagnitude {
                throw SteerError.invalid("\(field())[\(index)] is \(value): components must be at most 1e15 in magnitude, so scores stay finite")
            }
            index += 1
        }
    }

    /// L2-normalises `count` rows of `dimension` floats in place; zero rows stay zero.
    public static func normalizeRows(_ values: inout [Float], dimension: Int) {
        precondition(dimension > 0 && values.count % dimension == 0)
        values.withUnsafeMutableBufferPointer { buffer in
            var row = 0
            while row < buffer.count {
                var norm: Float = 0
                for i in row..<(row + dimension) { norm += buffer[i] * buffer[i] }
                if norm > 0 {
                    let scale = 1 / norm.squareRoot()
                    for i in row..<(row + dimension) { buffer[i] *= scale }
                }
                row += dimension
            }
        }
    }
}
