import SteerCore
@testable import SteerIndex
import Testing

@Suite struct ErrorTests {
    @Test func untrainedIVFRejectsAddAndSearch() throws {
        let index = try VectorIndex(spec: IndexSpec(parsing: "IVF16,Flat"), dimension: 4, metric: .innerProduct)
        #expect(!index.isTrained)
        let add = expectSteerError(.invalidRequest) { try index.add([1, 2, 3, 4], labels: [1]) }
        #expect(add?.message.contains("not trained") == true)
        expectSteerError(.invalidRequest) { _ = try index.search([1, 2, 3, 4], k: 1) }
        let few = expectSteerError(.invalidRequest) { try index.train([Float](repeating: 1, count: 4 * 10)) }
        #expect(few?.message.contains("16") == true)
        #expect(!index.isTrained)
    }

    @Test func trainingRulesAndFaissFailures() throws {
        let data = Fixtures.small
        // PQ with 8 bits needs 256 training points: faiss's exception comes back as invalid_request.
        let pq = try VectorIndex(spec: IndexSpec(parsing: "IVF4,PQ4"), dimension: 16, metric: .innerProduct)
        expectSteerError(.invalidRequest) { try pq.train(Array(data.base[0..<(16 * 100)])) }
        let ivf = try makeIndex("IVF8,Flat", data)
        expectSteerError(.invalidRequest) { try ivf.train(data.base) }
        let flat = try makeIndex("Flat", data)
        try flat.train(data.base) // no-op for families without training
        #expect(flat.count == data.baseCount)
    }

    @Test(arguments: ["Flat", "HNSW8", "IVF8,Flat"])
    func inputValidation(factory: String) throws {
        let data = Fixtures.small
        let index = try makeIndex(factory, data)
        let d = data.dimension
        // Wrong dimension.
        let dim = expectSteerError(.dimensionMismatch) { try index.add([Float](repeating: 0.1, count: d + 1), labels: [1]) }
        #expect(dim?.message.contains("\(d)") == true)
        expectSteerError(.dimensionMismatch) { _ = try index.search([Float](repeating: 0.1, count: d - 1), k: 1) }
        // k limits.
        expectSteerError(.invalidRequest) { _ = try index.search(data.query(0), k: 0) }
        expectSteerError(.invalidRequest) { _ = try index.search(data.query(0), k: -3) }
        expectSteerError(.tooLarge) { _ = try index.search(data.query(0), k: VectorIndex.maxK + 1) }
        #expect(try index.search(data.query(0), k: VectorIndex.maxK)[0].count == data.baseCount)
        let batch = [Float](repeating: 0.5, count: d * (VectorIndex.maxResultSlots / VectorIndex.maxK + 1))
        expectSteerError(.tooLarge) { _ = try index.search(batch, k: VectorIndex.maxK) }
        // Per-call parameters.
        expectSteerError(.invalidRequest) { _ = try index.search(data.query(0), k: 1, parameters: .init(nprobe: 0)) }
        expectSteerError(.invalidRequest) { _ = try index.search(data.query(0), k: 1, parameters: .init(efSearch: -1)) }
        // Non-finite values.
        for bad in [Float.nan, .infinity, -.infinity] {
            var vector = data.query(0)
            vector[3] = bad
            let error = expectSteerError(.invalidRequest) { try index.add(vector, labels: [5]) }
            #expect(error?.message.contains("component 3") == true)
            expectSteerError(.invalidRequest) { _ = try index.search(vector, k: 1) }
        }
        // Labels.
        expectSteerError(.invalidRequest) { try index.add(data.query(0) + data.query(1), labels: [1]) }
        expectSteerError(.invalidRequest) { try index.add(data.query(0), labels: [1, 2]) }
        expectSteerError(.invalidRequest) { try index.add(data.query(0), labels: [-1]) }
        expectSteerError(.invalidRequest) { try index.add(data.query(0) + data.query(1), labels: [9, 9]) }
        #expect(index.count == data.baseCount, "rejected calls change nothing")
        #expect(try index.remove(labels: []) == 0)
    }

    @Test func dimensionLimits() {
        expectSteerError(.invalidRequest) { _ = try VectorIndex(spec: IndexSpec(parsing: "Flat"), dimension: 0, metric: .l2) }
        expectSteerError(.invalidRequest) { _ = try VectorIndex(spec: IndexSpec(parsing: "Flat"), dimension: 70_000, metric: .l2) }
    }

    @Test func libraryInformation() {
        #expect(FaissInfo.version == "1.7.3")
        #expect(FaissInfo.openMPMaxThreads >= 1)
        // The checksum is CRC-32 as zlib computes it.
        let check = Array("123456789".utf8).withUnsafeBytes { steerCRC($0) }
        #expect(check == 0xCBF4_3926)
    }
}
