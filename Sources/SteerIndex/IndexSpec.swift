import SteerCore

/// A validated index family with its build parameters, parsed from a faiss-style factory string.
///
/// Accepted forms (case-insensitive, spaces ignored):
/// - `Flat`: exact search.
/// - `HNSW<M>` or `HNSW<M>,efC<n>`: HNSW graph with M links per node (2...256) and construction beam
///   `efConstruction` (default ``defaultEfConstruction`` = 100, faiss's own default is 40).
/// - `IVF<n>,Flat`, `IVF<n>,PQ<m>` or `IVF<n>,PQ<m>x<b>`, `IVF<n>,SQ8`: inverted file with n lists
///   (1...1,048,576); PQ with m subquantizers of b bits (default 8, 1...16; m must divide the dimension).
public struct IndexSpec: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable, Hashable {
        case flat
        case hnsw(m: Int, efConstruction: Int)
        case ivfFlat(lists: Int)
        case ivfPQ(lists: Int, subquantizers: Int, bits: Int)
        case ivfSQ8(lists: Int)
    }

    /// HNSW construction beam when the factory string names none.
    public static let defaultEfConstruction = 100
    /// Largest IVF list count accepted.
    public static let maxLists = 1 << 20
    /// HNSW links per node accepted: 2...256.
    public static let hnswLinksRange = 2...256
    /// HNSW construction beam accepted.
    public static let efConstructionRange = 1...10_000
    /// PQ bits per subquantizer accepted.
    public static let pqBitsRange = 1...16

    public let family: Family

    public init(_ family: Family) throws(SteerError) {
        switch family {
        case .flat: break
        case .hnsw(let m, let efC):
            guard Self.hnswLinksRange.contains(m) else { throw SteerError.invalid("HNSW M must be in 2...256, got \(m)") }
            guard Self.efConstructionRange.contains(efC) else {
                throw SteerError.invalid("HNSW efConstruction must be in 1...10000, got \(efC)")
            }
        case .ivfFlat(let lists), .ivfSQ8(let lists):
            try Self.checkLists(lists)
        case .ivfPQ(let lists, let m, let bits):
            try Self.checkLists(lists)
            guard (1...4096).contains(m) else { throw SteerError.invalid("PQ subquantizers must be in 1...4096, got \(m)") }
            guard Self.pqBitsRange.contains(bits) else { throw SteerError.invalid("PQ bits must be in 1...16, got \(bits)") }
        }
        self.family = family
    }

    private static func checkLists(_ lists: Int) throws(SteerError) {
        guard (1...maxLists).contains(lists) else {
            throw SteerError.invalid("IVF list count must be in 1...\(maxLists), got \(lists)")
        }
    }

    /// Parses a factory string such as `"HNSW32"`, `"HNSW32,efC200"`, `"IVF4096,Flat"`, `"IVF256,PQ16x8"`.
    /// - Throws: `invalid_request` naming the part that is not understood.
    public init(parsing factory: String) throws(SteerError) {
        let cleaned = String(factory.filter { !$0.isWhitespace }).uppercased()
        let parts = cleaned.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        func number(_ text: Substring, _ part: String) throws(SteerError) -> Int {
            guard !text.isEmpty, text.count <= 9, text.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(text) else {
                throw SteerError.invalid("index spec '\(factory)': '\(part)' needs a positive integer")
            }
            return value
        }
        guard let first = parts.first, !first.isEmpty else { throw SteerError.invalid("index spec is empty") }
        if first == "FLAT" {
            guard parts.count == 1 else { throw SteerError.invalid("index spec '\(factory)': unexpected '\(parts[1])' after Flat") }
            try self.init(.flat)
        } else if first.hasPrefix("HNSW") {
            let m = try number(first.dropFirst(4), first)
            var efC = Self.defaultEfConstruction
            if parts.count == 2 {
                guard parts[1].hasPrefix("EFC") else {
                    throw SteerError.invalid("index spec '\(factory)': unknown HNSW option '\(parts[1])' (expected efC<n>)")
                }
                efC = try number(parts[1].dropFirst(3), parts[1])
            } else if parts.count > 2 {
                throw SteerError.invalid("index spec '\(factory)': unexpected '\(parts[2])'")
            }
            try self.init(.hnsw(m: m, efConstruction: efC))
        } else if first.hasPrefix("IVF") {
            let lists = try number(first.dropFirst(3), first)
            guard parts.count == 2 else {
                throw SteerError.invalid("index spec '\(factory)': IVF needs one encoding (Flat, PQ<m>, SQ8)")
            }
            let coding = parts[1]
            if coding == "FLAT" {
                try self.init(.ivfFlat(lists: lists))
            } else if coding == "SQ8" {
                try self.init(.ivfSQ8(lists: lists))
            } else if coding.hasPrefix("PQ") {
                let body = coding.dropFirst(2)
                let pieces = body.split(separator: "X", omittingEmptySubsequences: false)
                guard pieces.count <= 2 else { throw SteerError.invalid("index spec '\(factory)': bad PQ part '\(coding)'") }
                let m = try number(pieces[0], coding)
                let bits = pieces.count == 2 ? try number(pieces[1], coding) : 8
                try self.init(.ivfPQ(lists: lists, subquantizers: m, bits: bits))
            } else {
                throw SteerError.invalid("index spec '\(factory)': unknown IVF encoding '\(coding)' (expected Flat, PQ<m>, SQ8)")
            }
        } else {
            throw SteerError.invalid("index spec '\(factory)': unknown index type '\(first)' (expected Flat, HNSW<M>, IVF<n>)")
        }
    }

    /// The canonical factory string: `Flat`, `HNSW32` (efC appended only when not 100), `IVF256,Flat`,
    /// `IVF256,PQ16` (bits appended only when not 8), `IVF256,SQ8`. Parsing it gives back an equal spec.
    public var factoryString: String {
        switch family {
        case .flat: return "Flat"
        case .hnsw(let m, let efC):
            return efC == Self.defaultEfConstruction ? "HNSW\(m)" : "HNSW\(m),efC\(efC)"
        case .ivfFlat(let lists): return "IVF\(lists),Flat"
        case .ivfPQ(let lists, let m, let bits): return bits == 8 ? "IVF\(lists),PQ\(m)" : "IVF\(lists),PQ\(m)x\(bits)"
        case .ivfSQ8(let lists): return "IVF\(lists),SQ8"
        }
    }

    public var description: String { factoryString }

    /// IVF families must be trained before vectors are added.
    public var needsTraining: Bool {
        switch family {
        case .flat, .hnsw: return false
        case .ivfFlat, .ivfPQ, .ivfSQ8: return true
        }
    }

    /// Flat search is exact.
    public var isExact: Bool { family == .flat }

    /// The index keeps compressed codes (PQ, SQ8), not the float vectors: its scores are approximate.
    public var isQuantized: Bool {
        switch family {
        case .ivfPQ, .ivfSQ8: return true
        case .flat, .hnsw, .ivfFlat: return false
        }
    }

    /// IVF list count, nil for other families.
    public var lists: Int? {
        switch family {
        case .ivfFlat(let lists), .ivfPQ(let lists, _, _), .ivfSQ8(let lists): return lists
        case .flat, .hnsw: return nil
        }
    }

    /// The string handed to faiss's index_factory (HNSW without Steer's efC option).
    var faissFactory: String {
        switch family {
        case .hnsw(let m, _): return "HNSW\(m)"
        case .ivfPQ(let lists, let m, let bits): return "IVF\(lists),PQ\(m)x\(bits)"
        default: return factoryString
        }
    }

    var efConstruction: Int {
        if case .hnsw(_, let efC) = family { return efC }
        return 0
    }

    /// Checks the spec against a dimension (PQ subquantizers must divide it).
    func validate(dimension: Int) throws(SteerError) {
        if case .ivfPQ(_, let m, _) = family, dimension % m != 0 {
            throw SteerError.invalid("index spec '\(factoryString)': \(m) PQ subquantizers do not divide dimension \(dimension)")
        }
    }
}
