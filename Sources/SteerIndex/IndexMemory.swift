import SteerCore

/// A memory estimate of an index from its layout (faiss 1.7.3's structures plus the shim's label maps),
/// for sizing before a build (`steer-index build` prints it) and for `stats`. It is arithmetic over the
/// spec, not a measurement of resident memory; docs/index.md ("Sizing") gives the table and the terms.
public struct IndexMemoryEstimate: Sendable, Equatable {
    /// Bytes that grow with every vector (codes or floats, graph links, ids, label maps).
    public var bytesPerVector: Double
    /// Bytes that do not (IVF centroids, PQ codebooks, SQ ranges).
    public var fixedBytes: Double

    /// The total for `vectors` vectors.
    public func totalBytes(vectors: Int) -> Double { fixedBytes + bytesPerVector * Double(vectors) }

    /// Hash-map entry of a label map (`std::unordered_map`/`unordered_set` node, bucket and allocation
    /// overhead), in bytes.
    public static let labelMapEntryBytes = 40.0
}

extension IndexSpec {
    /// The layout estimate for `dimension`-float vectors (see `IndexMemoryEstimate`).
    ///
    /// - Flat: 4·d floats + 8-byte id + IndexIDMap2's reverse map entry.
    /// - HNSW<M>: 4·d floats + level-0 links (2·M × 4 bytes) + upper levels (M links with probability
    ///   1/M per level: about M/(M−1) × 4 bytes) + offsets (8) and level (4) + the shim's row label (8)
    ///   and label → row map entry.
    /// - OPQ<M>_<D>,IVF<n>,PQ<m>: as IVF-PQ in D components, plus the D × d float rotation matrix.
    /// - HNSW<M>,SQ8: the same graph over d one-byte codes instead of 4·d floats; fixed: the SQ8 ranges
    ///   (2 × 4·d).
    /// - IVF: per vector its code (4·d floats, d bytes for SQ8, m·b/8 bytes for PQ) + 8-byte id + the
    ///   shim's live-label set entry; fixed: n centroids × 4·d, SQ8 ranges 2 × 4·d, PQ codebooks
    ///   2^b × 4·d (m tables of 2^b centroids of d/m floats).
    public func memoryEstimate(dimension: Int) -> IndexMemoryEstimate {
        let d = Double(dimension)
        let entry = IndexMemoryEstimate.labelMapEntryBytes
        switch family {
        case .flat:
            return IndexMemoryEstimate(bytesPerVector: 4 * d + 8 + entry, fixedBytes: 0)
        case .hnsw(let m, _):
            let links = Double(2 * m) * 4 + Double(m) / Double(max(1, m - 1)) * 4
            return IndexMemoryEstimate(bytesPerVector: 4 * d + links + 12 + 8 + entry, fixedBytes: 0)
        case .hnswSQ8(let m, _):
            let links = Double(2 * m) * 4 + Double(m) / Double(max(1, m - 1)) * 4
            return IndexMemoryEstimate(bytesPerVector: d + links + 12 + 8 + entry, fixedBytes: 2 * 4 * d)
        case .ivfFlat(let lists):
            return IndexMemoryEstimate(bytesPerVector: 4 * d + 8 + entry, fixedBytes: Double(lists) * 4 * d)
        case .ivfSQ8(let lists):
            return IndexMemoryEstimate(bytesPerVector: d + 8 + entry, fixedBytes: Double(lists) * 4 * d + 2 * 4 * d)
        case .ivfPQ(let lists, let subquantizers, let bits):
            let code = (Double(subquantizers * bits) / 8).rounded(.up)
            return IndexMemoryEstimate(bytesPerVector: code + 8 + entry, fixedBytes: Double(lists) * 4 * d + Double(1 << bits) * 4 * d)
        case .opqIVFPQ(_, let opqDimension, let lists, let subquantizers, let bits):
            let rotated = Double(opqDimension ?? dimension)
            let code = (Double(subquantizers * bits) / 8).rounded(.up)
            let fixed = d * rotated * 4 + Double(lists) * 4 * rotated + Double(1 << bits) * 4 * rotated
            return IndexMemoryEstimate(bytesPerVector: code + 8 + entry, fixedBytes: fixed)
        }
    }
}
