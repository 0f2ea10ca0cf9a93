import Foundation
import SteerBenchKit
import SteerCore
import Testing

@Suite struct ANNBenchmarksFileTests {
    private func path(_ name: String) -> String { NSTemporaryDirectory() + "steer-hdf5-\(name)-" + UUID().uuidString + ".hdf5" }

    /// 6 train rows × 3, 2 queries, 2 neighbors each.
    private let train: [Float] = [1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 2, 2, 2]
    private let test: [Float] = [1, 0.1, 0, 0, 0, 1]
    private let neighbors: [Int64] = [0, 3, 2, 4]

    private func expectError(_ file: String, _ code: SteerError.Code, mentioning text: String,
                             limits: ANNBenchmarksFile.Limits = .init()) {
        do {
            _ = try ANNBenchmarksFile.read(path: file, limits: limits)
            Issue.record("reading \(file) succeeded; expected \(code) mentioning '\(text)'")
        } catch {
            #expect(error.code == code, "\(error.message)")
            #expect(error.message.contains(text), "\(error.message)")
        }
    }

    @Test func roundTrip_readsWhatWasWritten() throws {
        let file = path("ok")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let data = try ANNBenchmarksData(distance: "euclidean", dimension: 3, train: train, test: test, neighbors: neighbors, truthK: 2,
                                         distances: [0.1, 1.0, 0, 1.0])
        try ANNBenchmarksFile.write(data, path: file)
        let read = try ANNBenchmarksFile.read(path: file)
        #expect(read.count == 6 && read.dimension == 3 && read.queries == 2 && read.truthK == 2)
        #expect(read.train == train && read.test == test && read.neighbors == neighbors)
        #expect(read.distances == [0.1, 1.0, 0, 1.0])
        #expect(read.distance == "euclidean" && read.metric == .l2)
    }

    @Test func float64AndInt32Datasets_areConvertedAndAngularIsCosine() throws {
        // ann-benchmarks files hold float32 vectors and int32 neighbors; float64 vectors are converted too.
        let file = path("f64")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let writer = try ANNBenchmarksFile.Writer(path: file)
        try writer.attribute("distance", "angular")
        try writer.floats("train", train, rows: 6, columns: 3)
        try writer.floats("test", test, rows: 2, columns: 3)
        try writer.integers("neighbors", neighbors, rows: 2, columns: 2)
        writer.close()
        let read = try ANNBenchmarksFile.read(path: file)
        #expect(read.metric == .cosine)
        #expect(read.neighbors == neighbors)
        #expect(read.distances == nil)
    }

    @Test func garbageAndTruncatedFiles_areCorruptNotACrash() throws {
        let garbage = path("garbage")
        let truncated = path("truncated")
        defer {
            try? FileManager.default.removeItem(atPath: garbage)
            try? FileManager.default.removeItem(atPath: truncated)
        }
        try Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: garbage))
        expectError(garbage, .corrupt, mentioning: "not an HDF5 file")

        let good = path("good")
        defer { try? FileManager.default.removeItem(atPath: good) }
        try ANNBenchmarksFile.write(try ANNBenchmarksData(distance: "angular", dimension: 3, train: train, test: test, neighbors: neighbors, truthK: 2),
                                    path: good)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        // Every cut through the file: an error each time, never a crash or a wrong success.
        for cut in stride(from: 8, to: bytes.count, by: max(1, bytes.count / 40)) {
            try bytes.prefix(cut).write(to: URL(fileURLWithPath: truncated))
            #expect(throws: SteerError.self, "cut at \(cut) of \(bytes.count)") { try ANNBenchmarksFile.read(path: truncated) }
        }
        expectError(path("missing"), .notFound, mentioning: "no such file")
    }

    @Test func wrongShapesTypesAndValues_areNamed() throws {
        func make(_ name: String, _ build: (ANNBenchmarksFile.Writer) throws -> Void) throws -> String {
            let file = path(name)
            let writer = try ANNBenchmarksFile.Writer(path: file)
            try build(writer)
            writer.close()
            return file
        }
        var files: [String] = []
        defer { for file in files { try? FileManager.default.removeItem(atPath: file) } }
        let standard: (ANNBenchmarksFile.Writer, Bool, Bool, Bool) throws -> Void = { writer, train, test, neighbors in
            if train { try writer.floats("train", self.train, rows: 6, columns: 3) }
            if test { try writer.floats("test", self.test, rows: 2, columns: 3) }
            if neighbors { try writer.integers("neighbors", self.neighbors, rows: 2, columns: 2) }
        }

        let noAttribute = try make("noattr") { try standard($0, true, true, true) }
        files.append(noAttribute)
        expectError(noAttribute, .notFound, mentioning: "distance")

        let hamming = try make("hamming") { try $0.attribute("distance", "hamming"); try standard($0, true, true, true) }
        files.append(hamming)
        expectError(hamming, .invalidRequest, mentioning: "hamming")

        let noTest = try make("notest") { try $0.attribute("distance", "angular"); try standard($0, true, false, true) }
        files.append(noTest)
        expectError(noTest, .notFound, mentioning: "'test'")

        let rank3 = try make("rank3") {
            try $0.attribute("distance", "angular")
            try $0.floats("train", self.train, dims: [2, 3, 3])
            try standard($0, false, true, true)
        }
        files.append(rank3)
        expectError(rank3, .corrupt, mentioning: "rank 3")

        let integerTrain = try make("inttrain") {
            try $0.attribute("distance", "angular")
            try $0.integers("train", self.train.map { Int64($0) }, rows: 6, columns: 3)
            try standard($0, false, true, true)
        }
        files.append(integerTrain)
        expectError(integerTrain, .corrupt, mentioning: "'train' must hold")

        let dimensionMismatch = try make("dims") {
            try $0.attribute("distance", "angular")
            try $0.floats("train", self.train, rows: 6, columns: 3)
            try $0.floats("test", self.test, rows: 3, columns: 2)
            try $0.integers("neighbors", [0, 1, 2, 3, 4, 5], rows: 3, columns: 2)
        }
        files.append(dimensionMismatch)
        expectError(dimensionMismatch, .corrupt, mentioning: "test has dimension 2")

        let rowMismatch = try make("rows") {
            try $0.attribute("distance", "angular")
            try standard($0, true, true, false)
            try $0.integers("neighbors", [0, 1, 2], rows: 3, columns: 1)
        }
        files.append(rowMismatch)
        expectError(rowMismatch, .corrupt, mentioning: "neighbors has 3 rows")

        let outOfRange = try make("range") {
            try $0.attribute("distance", "angular")
            try standard($0, true, true, false)
            try $0.integers("neighbors", [0, 1, 2, 6], rows: 2, columns: 2)
        }
        files.append(outOfRange)
        expectError(outOfRange, .corrupt, mentioning: "neighbors[1][1] = 6")

        let notFinite = try make("nan") {
            try $0.attribute("distance", "euclidean")
            try $0.floats("train", [Float.nan] + self.train.dropFirst(), rows: 6, columns: 3)
            try standard($0, false, true, true)
        }
        files.append(notFinite)
        expectError(notFinite, .corrupt, mentioning: "not finite")

        // Declared sizes are checked before anything is read or allocated.
        let fine = try make("limits") { try $0.attribute("distance", "angular"); try standard($0, true, true, true) }
        files.append(fine)
        expectError(fine, .tooLarge, mentioning: "bytes", limits: .init(maxBytes: 100))
        expectError(fine, .tooLarge, mentioning: "dimension 3", limits: .init(maxDimension: 2))
    }
}
