import SteerCore

/// A validated index family with its build parameters, parsed from a faiss-style factory string.
///
/// Accepted forms (case-insensitive, spaces ignored):
/// - `Flat`: exact search.
/// - `HNSW<M>` or `HNSW<M>,efC<n>`: HNSW graph with M links per node (2...256) and construction beam
///   `efConstruction` (default ``defaultEfConstruction`` = 100, faiss's own default is 40).
/// - `HNSW<M>,SQ8` or `HNSW<M>,SQ8,efC<n>` (faiss's spelling `HNSW<M>_SQ8` is accepted too): the same
///   graph over 8-bit scalar-quantized codes (faiss's IndexHNSWSQ); needs training (the SQ8 ranges).
/// - `IVF<n>,Flat`, `IVF<n>,PQ<m>` or `IVF<n>,PQ<m>x<b>`, `IVF<n>,SQ8`: inverted file with n lists
///   (1...1,048,576); PQ with m subquantizers of b bits (default 8, 1...16; m must divide the dimension).
/// - `OPQ<M>,IVF<n>,PQ<m>[x<b>]` or `OPQ<M>_<D>,IVF<n>,PQ<m>[x<b>]`: faiss's OPQ rotation (M blocks,
///   optionally reducing the dimension to D ≤ d; M and m must divide D) in front of IVF-PQ.
public struct IndexSpec: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable, Hashable {
        case flat
        case hnsw(m: Int, efConstruction: Int)
        case hnswSQ8(m: Int, efConstruction: Int)
        case ivfFlat(lists: Int)
        case ivfPQ(lists: Int, subquantizers: Int, bits: Int)
        case ivfSQ8(lists: Int)
        /// OPQ with `opq` blocks rotating into `opqDimension` components (nil: the index's dimension),
        /// then IVF-PQ in that space.
        case opqIVFPQ(opq: Int, opqDimension: Int?, lists: Int, subquantizers: Int, bits: Int)
    }

    /// HNSW construction beam when the factory string names none.
    public static let defaultEfConstruction = 100
    /// Longest factory string accepted, in bytes (the file format stores at most 256).
    public static let maxFactoryBytes = 256
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
        case .hnsw(let m, let efC), .hnswSQ8(let m, let efC):
            guard Self.hnswLinksRange.contains(m) else { throw SteerError.invalid("HNSW M must be in 2...256, got \(m)") }
            guard Self.efConstructionRange.contains(efC) else {
                throw SteerError.invalid("HNSW efConstruction must be in 1...10000, got \(efC)")
            }
        case .ivfFlat(let lists), .ivfSQ8(let lists):
            try Self.checkLists(lists)
        case .ivfPQ(let lists, let m, let bits):
            try Self.checkPQ(lists: lists, m: m, bits: bits)
        case .opqIVFPQ(let opq, let opqDimension, let lists, let m, let bits):
            guard (1...4096).contains(opq) else { throw SteerError.invalid("OPQ blocks must be in 1...4096, got \(opq)") }
            if let opqDimension, !(1...VectorIndex.maxDimension).contains(opqDimension) {
                throw SteerError.invalid("OPQ dimension must be in 1...\(VectorIndex.maxDimension), got \(opqDimension)")
            }
            try Self.checkPQ(lists: lists, m: m, bits: bits)
        }
        self.family = family
    }

    private static func checkPQ(lists: Int, m: Int, bits: Int) throws(SteerError) {
        try checkLists(lists)
        guard (1...4096).contains(m) else { throw SteerError.invalid("PQ subquantizers must be in 1...4096, got \(m)") }
        guard pqBitsRange.contains(bits) else { throw SteerError.invalid("PQ bits must be in 1...16, got \(bits)") }
    }

    private static func checkLists(_ lists: Int) throws(SteerError) {
        guard (1...maxLists).contains(lists) else {
            throw SteerError.invalid("IVF list count must be in 1...\(maxLists), got \(lists)")
        }
    }

    /// Parses a factory string such as `"HNSW32"`, `"HNSW32,efC200"`, `"HNSW32,SQ8"`, `"IVF4096,Flat"`,
    /// `"IVF256,PQ16x8"`.
    /// - Throws: `invalid_request` naming the part that is not understood.
    public init(parsing factory: String) throws(SteerError) {
        guard factory.utf8.count <= Self.maxFactoryBytes else {
            throw SteerError.invalid("index spec is \(factory.utf8.count) bytes, more than \(Self.maxFactoryBytes)")
        }
        var cleaned = String(factory.filter { !$0.isWhitespace }).uppercased()
        // faiss spells HNSW over SQ8 codes "HNSW32_SQ8": the same as "HNSW32,SQ8".
        if cleaned.hasPrefix("HNSW"), let underscore = cleaned.firstIndex(of: "_") {
            cleaned.replaceSubrange(underscore...underscore, with: ",")
        }
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
            var options = parts.dropFirst()
            var sq8 = false
            if let coding = options.first, !coding.hasPrefix("EFC") {
                guard coding == "SQ8" else {
                    if coding.hasPrefix("SQ") {
                        throw SteerError.invalid("index spec '\(factory)': HNSW supports SQ8 codes only, not '\(coding)'")
                    }
                    if coding.hasPrefix("PQ") || coding.hasPrefix("FLAT") {
                        throw SteerError.invalid("index spec '\(factory)': HNSW storage '\(coding)' is not supported (HNSW<M> keeps floats, HNSW<M>,SQ8 8-bit codes)")
                    }
                    throw SteerError.invalid("index spec '\(factory)': unknown HNSW option '\(coding)' (expected SQ8 or efC<n>)")
                }
                sq8 = true
                options = options.dropFirst()
            }
            var efC = Self.defaultEfConstruction
            if let option = options.first {
                guard option.hasPrefix("EFC") else {
                    throw SteerError.invalid("index spec '\(factory)': unknown HNSW option '\(option)' (expected efC<n>)")
                }
                efC = try number(option.dropFirst(3), option)
                if options.count > 1 {
                    throw SteerError.invalid("index spec '\(factory)': unexpected '\(options[options.startIndex + 1])'")
                }
            }
            try self.init(sq8 ? .hnswSQ8(m: m, efConstruction: efC) : .hnsw(m: m, efConstruction: efC))
        } else if first.hasPrefix("OPQ") {
            let pieces = first.dropFirst(3).split(separator: "_", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw SteerError.invalid("index spec '\(factory)': bad OPQ part '\(first)' (expected OPQ<M> or OPQ<M>_<D>)") }
            let opq = try number(pieces[0], first)
            let opqDimension = pieces.count == 2 ? try number(pieces[1], first) : nil
            guard parts.count == 3, parts[1].hasPrefix("IVF"), parts[2].hasPrefix("PQ") else {
                throw SteerError.invalid("index spec '\(factory)': OPQ must be followed by IVF<n>,PQ<m> (the only OPQ form Steer builds)")
            }
            let inner: IndexSpec
            do {
                inner = try IndexSpec(parsing: parts[1] + "," + parts[2])
            } catch {
                throw SteerError.invalid("index spec '\(factory)': \(error.message)")
            }
            guard case .ivfPQ(let lists, let m, let bits) = inner.family else {
                throw SteerError.invalid("index spec '\(factory)': OPQ must be followed by IVF<n>,PQ<m>")
            }
            try self.init(.opqIVFPQ(opq: opq, opqDimension: opqDimension, lists: lists, subquantizers: m, bits: bits))
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
            throw SteerError.invalid("index spec '\(factory)': unknown index type '\(first)' (expected Flat, HNSW<M>, IVF<n>, OPQ<M>)")
        }
    }

    /// The canonical factory string: `Flat`, `HNSW32` (efC appended only when not 100), `IVF256,Flat`,
    /// `IVF256,PQ16` (bits appended only when not 8), `IVF256,SQ8`. Parsing it gives back an equal spec.
    public var factoryString: String {
        switch family {
        case .flat: return "Flat"
        case .hnsw(let m, let efC):
            return efC == Self.defaultEfConstruction ? "HNSW\(m)" : "HNSW\(m),efC\(efC)"
        case .hnswSQ8(let m, let efC):
            return efC == Self.defaultEfConstruction ? "HNSW\(m),SQ8" : "HNSW\(m),SQ8,efC\(efC)"
        case .ivfFlat(let lists): return "IVF\(lists),Flat"
        case .ivfPQ: return family.pqFactoryString
        case .ivfSQ8(let lists): return "IVF\(lists),SQ8"
        case .opqIVFPQ(let opq, let opqDimension, let lists, let m, let bits):
            let rotation = opqDimension.map { "OPQ\(opq)_\($0)" } ?? "OPQ\(opq)"
            return rotation + "," + IndexSpec.Family.ivfPQ(lists: lists, subquantizers: m, bits: bits).pqFactoryString
        }
    }

    public var description: String { factoryString }

    /// IVF families and HNSW over SQ8 codes must be trained before vectors are added.
    public var needsTraining: Bool {
        switch family {
        case .flat, .hnsw: return false
        case .hnswSQ8, .ivfFlat, .ivfPQ, .ivfSQ8, .opqIVFPQ: return true
        }
    }

    /// The HNSW graph families (float rows or SQ8 codes): breadth is ef_search.
    public var isHNSW: Bool {
        switch family {
        case .hnsw, .hnswSQ8: return true
        case .flat, .ivfFlat, .ivfPQ, .ivfSQ8, .opqIVFPQ: return false
        }
    }

    /// Flat search is exact.
    public var isExact: Bool { family == .flat }

    /// The index keeps compressed codes (PQ, SQ8), not the float vectors: its scores are approximate.
    public var isQuantized: Bool {
        switch family {
        case .ivfPQ, .ivfSQ8, .hnswSQ8, .opqIVFPQ: return true
        case .flat, .hnsw, .ivfFlat: return false
        }
    }

    /// IVF list count, nil for other families.
    public var lists: Int? {
        switch family {
        case .ivfFlat(let lists), .ivfPQ(let lists, _, _), .ivfSQ8(let lists), .opqIVFPQ(_, _, let lists, _, _): return lists
        case .flat, .hnsw, .hnswSQ8: return nil
        }
    }

    /// The string handed to faiss's index_factory (HNSW without Steer's efC option).
    var faissFactory: String {
        switch family {
        case .hnsw(let m, _): return "HNSW\(m)"
        case .hnswSQ8(let m, _): return "HNSW\(m)_SQ8"
        case .ivfPQ(let lists, let m, let bits): return "IVF\(lists),PQ\(m)x\(bits)"
        case .opqIVFPQ(let opq, let opqDimension, let lists, let m, let bits):
            return "OPQ\(opq)" + (opqDimension.map { "_\($0)" } ?? "") + ",IVF\(lists),PQ\(m)x\(bits)"
        default: return factoryString
        }
    }

    var efConstruction: Int {
        switch family {
        case .hnsw(_, let efC), .hnswSQ8(_, let efC): return efC
        case .flat, .ivfFlat, .ivfPQ, .ivfSQ8, .opqIVFPQ: return 0
        }
    }

    /// Checks the spec against a dimension (PQ subquantizers must divide it; OPQ's blocks and the PQ
    /// subquantizers must divide the rotated dimension, which may not exceed the index's).
    func validate(dimension: Int) throws(SteerError) {
        switch family {
        case .ivfPQ(_, let m, _) where dimension % m != 0:
            throw SteerError.invalid("index spec '\(factoryString)': \(m) PQ subquantizers do not divide dimension \(dimension)")
        case .opqIVFPQ(let opq, let opqDimension, _, let m, _):
            let rotated = opqDimension ?? dimension
            guard rotated <= dimension else {
                throw SteerError.invalid("index spec '\(factoryString)': OPQ dimension \(rotated) exceeds the index's dimension \(dimension)")
            }
            guard rotated % opq == 0 else {
                throw SteerError.invalid("index spec '\(factoryString)': \(opq) OPQ blocks do not divide the rotated dimension \(rotated)")
            }
            guard rotated % m == 0 else {
                throw SteerError.invalid("index spec '\(factoryString)': \(m) PQ subquantizers do not divide the rotated dimension \(rotated)")
            }
        default:
            break
        }
    }

    /// OPQ's rotated dimension for `dimension`-float vectors, nil without OPQ.
    public func opqDimension(dimension: Int) -> Int? {
        guard case .opqIVFPQ(_, let opqDimension, _, _, _) = family else { return nil }
        return opqDimension ?? dimension
    }
}

extension IndexSpec.Family {
    /// `IVF<n>,PQ<m>` (bits appended only when not 8) for the PQ families, "" otherwise.
    var pqFactoryString: String {
        switch self {
        case .ivfPQ(let lists, let m, let bits), .opqIVFPQ(_, _, let lists, let m, let bits):
            return bits == 8 ? "IVF\(lists),PQ\(m)" : "IVF\(lists),PQ\(m)x\(bits)"
        case .flat, .hnsw, .hnswSQ8, .ivfFlat, .ivfSQ8: return ""
        }
    }
}
