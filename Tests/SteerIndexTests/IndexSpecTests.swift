import SteerCore
@testable import SteerIndex
import Testing

@Suite struct IndexSpecTests {
    @Test func parsesEveryFamilyAndRoundTrips() throws {
        let cases: [(String, IndexSpec.Family, String)] = [
            ("Flat", .flat, "Flat"),
            ("flat", .flat, "Flat"),
            ("HNSW32", .hnsw(m: 32, efConstruction: 100), "HNSW32"),
            ("HNSW16,efC40", .hnsw(m: 16, efConstruction: 40), "HNSW16,efC40"),
            (" hnsw32 , EFC100 ", .hnsw(m: 32, efConstruction: 100), "HNSW32"),
            ("IVF4096,Flat", .ivfFlat(lists: 4096), "IVF4096,Flat"),
            ("IVF256,PQ16", .ivfPQ(lists: 256, subquantizers: 16, bits: 8), "IVF256,PQ16"),
            ("IVF256,PQ16x8", .ivfPQ(lists: 256, subquantizers: 16, bits: 8), "IVF256,PQ16"),
            ("IVF256,PQ16x4", .ivfPQ(lists: 256, subquantizers: 16, bits: 4), "IVF256,PQ16x4"),
            ("IVF256,SQ8", .ivfSQ8(lists: 256), "IVF256,SQ8"),
        ]
        for (text, family, canonical) in cases {
            let spec = try IndexSpec(parsing: text)
            #expect(spec.family == family, "\(text)")
            #expect(spec.factoryString == canonical && spec.description == canonical)
            #expect(try IndexSpec(parsing: spec.factoryString) == spec)
        }
        #expect(try IndexSpec(parsing: "IVF8,Flat").needsTraining)
        #expect(try !IndexSpec(parsing: "HNSW8").needsTraining)
        #expect(try IndexSpec(parsing: "Flat").isExact)
        #expect(try !IndexSpec(parsing: "IVF8,SQ8").isExact)
    }

    @Test(arguments: ["", "Flatt", "Flat,PQ8", "HNSW", "HNSW0", "HNSW1", "HNSW300", "HNSW32,ef100", "HNSW32,efC0",
                      "HNSW32,efC40,x", "IVF", "IVF0,Flat", "IVF64", "IVF64,PQ", "IVF64,PQ8x0", "IVF64,PQ8x17",
                      "IVF64,SQ4", "IVF64,Flat,Flat", "PCA32,IVF64,Flat", "IDMap,Flat", "LSH", "IVF-3,Flat",
                      "IVF99999999999999999999,Flat", "HNSW３２"])
    func rejectsUnknownFactoryStrings(text: String) {
        expectSteerError(.invalidRequest) { _ = try IndexSpec(parsing: text) }
    }

    @Test func errorNamesTheBadPart() {
        let error = expectSteerError(.invalidRequest) { _ = try IndexSpec(parsing: "IVF64,SQ4") }
        #expect(error?.message.contains("SQ4") == true)
    }

    @Test func hnswParametersReachFaiss() throws {
        let index = try VectorIndex(spec: IndexSpec(parsing: "HNSW12,efC77"), dimension: 8, metric: .l2)
        #expect(index.nativeHNSWParameters == (12, 77))
        #expect(try VectorIndex(spec: IndexSpec(parsing: "Flat"), dimension: 8, metric: .l2).nativeHNSWParameters == (0, 0))
    }

    @Test func pqMustDivideTheDimension() {
        expectSteerError(.invalidRequest) {
            _ = try VectorIndex(spec: IndexSpec(parsing: "IVF8,PQ5"), dimension: 16, metric: .innerProduct)
        }
    }
}
