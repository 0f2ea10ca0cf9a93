// Reads (and, for tests and data-set tools, writes) the HDF5 files of ann-benchmarks through libhdf5
// (Debian's libhdf5-dev, the CHDF5 module). Written by hand because no Swift package for HDF5 is
// available here; only the few calls the file layout needs are wrapped.
import CHDF5
import Foundation
import SteerCore

/// An ann-benchmarks data set: the datasets `train` (base vectors, n × d), `test` (queries, q × d),
/// `neighbors` (q × k row indices into `train`, best first, exact) and optionally `distances` (q × k),
/// and the root attribute `distance` (`angular` or `euclidean`).
///
/// Invariants after `read`: `train.count == count * dimension`, `test.count == queries * dimension`,
/// `neighbors.count == queries * truthK`, every neighbor in `0..<count`. Every size comes from the file
/// and is checked against limits (`Limits`) before anything is allocated or read.
public struct ANNBenchmarksData: Sendable {
    public var count: Int
    public var dimension: Int
    public var queries: Int
    public var truthK: Int
    /// The file's `distance` attribute as written.
    public var distance: String
    /// The metric Steer searches with: `angular` → `.cosine`, `euclidean` → `.l2`.
    public var metric: Metric
    public var train: [Float]
    public var test: [Float]
    public var neighbors: [Int64]
    public var distances: [Float]?

    public init(distance: String, dimension: Int, train: [Float], test: [Float], neighbors: [Int64], truthK: Int,
                distances: [Float]? = nil) throws(SteerError) {
        guard dimension > 0, train.count % dimension == 0, test.count % dimension == 0, truthK > 0, neighbors.count % truthK == 0,
              neighbors.count / truthK == test.count / dimension
        else { throw SteerError(.invalidRequest, "ANN data: shapes do not agree") }
        self.distance = distance
        metric = try ANNBenchmarksFile.metric(distance)
        self.dimension = dimension
        count = train.count / dimension
        queries = test.count / dimension
        self.truthK = truthK
        self.train = train
        self.test = test
        self.neighbors = neighbors
        self.distances = distances
    }
}

/// HDF5 access for `ANNBenchmarksData`. libhdf5 (Debian's serial build) is not thread-safe: every
/// call here holds `lock`, and nothing else in the process uses the library.
public enum ANNBenchmarksFile {
    /// Bounds on what a file may declare.
    public struct Limits: Sendable {
        /// Largest total bytes of all datasets read (default: half the machine's memory).
        public var maxBytes: Int
        /// Largest vector dimension.
        public var maxDimension: Int
        /// Largest neighbors per query.
        public var maxTruthK: Int

        public init(maxBytes: Int = Int(ProcessInfo.processInfo.physicalMemory / 2), maxDimension: Int = 65_536, maxTruthK: Int = 10_000) {
            self.maxBytes = maxBytes
            self.maxDimension = maxDimension
            self.maxTruthK = maxTruthK
        }
    }

    private static let lock = NSLock()

    /// The Steer metric of an ann-benchmarks `distance` attribute.
    /// - Throws: `SteerError.invalidRequest` for distances Steer does not search (hamming, jaccard, …).
    public static func metric(_ distance: String) throws(SteerError) -> Metric {
        switch distance.lowercased() {
        case "angular", "cosine": return .cosine
        case "euclidean", "l2": return .l2
        case "ip", "dot", "inner_product": return .innerProduct
        default: throw SteerError(.invalidRequest, "distance '\(distance)' is not supported (angular, euclidean, ip)")
        }
    }

    /// Reads a file, checking every declared size against `limits` before reading.
    /// - Throws: `SteerError.notFound` (missing file or dataset), `.corrupt` (not HDF5, damaged, wrong
    ///   rank or type, shapes that disagree, neighbors out of range), `.tooLarge` (over `limits`),
    ///   `.invalidRequest` (an unsupported `distance`).
    public static func read(path: String, limits: Limits = Limits()) throws(SteerError) -> ANNBenchmarksData {
        lock.lock()
        defer { lock.unlock() }
        silenceLibraryErrors()
        guard FileManager.default.fileExists(atPath: path) else { throw SteerError(.notFound, "\(path): no such file") }
        guard H5Fis_hdf5(path) > 0 else { throw SteerError(.corrupt, "\(path): not an HDF5 file (no HDF5 signature)") }
        let file = H5Fopen(path, steer_h5f_acc_rdonly(), steer_h5p_default())
        guard file >= 0 else { throw SteerError(.corrupt, "\(path): libhdf5 cannot open it (damaged or truncated)") }
        defer { H5Fclose(file) }

        let distance = try stringAttribute(file: file, name: "distance", path: path)
        _ = try metric(distance)
        // Each dataset is closed by its own defer, so one that fails to open leaves none of the others open
        // (an open dataset keeps the file open past H5Fclose).
        let train = try Dataset(file: file, name: "train", path: path)
        defer { train.close() }
        let test = try Dataset(file: file, name: "test", path: path)
        defer { test.close() }
        let neighbors = try Dataset(file: file, name: "neighbors", path: path)
        defer { neighbors.close() }
        let distances = H5Lexists(file, "distances", steer_h5p_default()) > 0 ? try Dataset(file: file, name: "distances", path: path) : nil
        defer { distances?.close() }

        try train.require(kind: .float, path: path)
        try test.require(kind: .float, path: path)
        try neighbors.require(kind: .integer, path: path)
        try distances?.require(kind: .float, path: path)
        let count = train.rows, dimension = train.columns, queries = test.rows, truthK = neighbors.columns
        guard count > 0, dimension > 0, queries > 0, truthK > 0 else {
            throw SteerError(.corrupt, "\(path): empty dataset (train \(count) × \(dimension), test \(queries), neighbors k \(truthK))")
        }
        guard dimension <= limits.maxDimension else { throw SteerError(.tooLarge, "\(path): dimension \(dimension) is over \(limits.maxDimension)") }
        guard truthK <= limits.maxTruthK else { throw SteerError(.tooLarge, "\(path): \(truthK) neighbors per query is over \(limits.maxTruthK)") }
        guard test.columns == dimension else { throw SteerError(.corrupt, "\(path): test has dimension \(test.columns), train \(dimension)") }
        guard neighbors.rows == queries else { throw SteerError(.corrupt, "\(path): neighbors has \(neighbors.rows) rows, test \(queries)") }
        if let distances, distances.rows != queries || distances.columns != truthK {
            throw SteerError(.corrupt, "\(path): distances is \(distances.rows) × \(distances.columns), neighbors \(queries) × \(truthK)")
        }
        // Sizes are each below 2^63 (hsize_t was checked against Int.max); products could still overflow.
        var total = 0
        for (rows, columns, width) in [(count, dimension, 4), (queries, dimension, 4), (queries, truthK, 8), (distances == nil ? 0 : queries, truthK, 4)] {
            let (cells, overflow1) = rows.multipliedReportingOverflow(by: columns)
            let (bytes, overflow2) = cells.multipliedReportingOverflow(by: width)
            let (sum, overflow3) = total.addingReportingOverflow(bytes)
            guard !overflow1, !overflow2, !overflow3, sum <= limits.maxBytes else {
                throw SteerError(.tooLarge, "\(path): the datasets declare more than \(limits.maxBytes) bytes (train \(count) × \(dimension))")
            }
            total = sum
        }

        let trainValues: [Float] = try train.read(count * dimension, type: steer_h5t_native_float(), path: path)
        let testValues: [Float] = try test.read(queries * dimension, type: steer_h5t_native_float(), path: path)
        let neighborValues: [Int64] = try neighbors.read(queries * truthK, type: steer_h5t_native_int64(), path: path)
        let distanceValues: [Float]? = try distances?.read(queries * truthK, type: steer_h5t_native_float(), path: path)
        if let index = neighborValues.firstIndex(where: { $0 < 0 || $0 >= Int64(count) }) {
            throw SteerError(.corrupt, "\(path): neighbors[\(index / truthK)][\(index % truthK)] = \(neighborValues[index]) is outside train's 0..<\(count)")
        }
        if let index = trainValues.firstIndex(where: { !$0.isFinite }) ?? testValues.firstIndex(where: { !$0.isFinite }).map({ -1 - $0 }) {
            throw SteerError(.corrupt, "\(path): \(index >= 0 ? "train" : "test") holds a value that is not finite")
        }
        return try ANNBenchmarksData(distance: distance, dimension: dimension, train: trainValues, test: testValues,
                                     neighbors: neighborValues, truthK: truthK, distances: distanceValues)
    }

    /// Writes `data` in the ann-benchmarks layout (float32 train/test/distances, int32 neighbors as
    /// ann-benchmarks writes them when every row fits, else int64).
    /// - Throws: `SteerError.io` when libhdf5 cannot create or write the file.
    public static func write(_ data: ANNBenchmarksData, path: String) throws(SteerError) {
        let writer = try Writer(path: path)
        defer { writer.close() }
        try writer.attribute("distance", data.distance)
        try writer.floats("train", data.train, rows: data.count, columns: data.dimension)
        try writer.floats("test", data.test, rows: data.queries, columns: data.dimension)
        try writer.integers("neighbors", data.neighbors, rows: data.queries, columns: data.truthK)
        if let distances = data.distances { try writer.floats("distances", distances, rows: data.queries, columns: data.truthK) }
    }

    /// A new HDF5 file written dataset by dataset: what `write` uses, and what tests use to make
    /// malformed files (any rank, any name).
    public final class Writer {
        private let file: hid_t
        private var closed = false

        /// - Throws: `SteerError.io` when the file cannot be created.
        public init(path: String) throws(SteerError) {
            ANNBenchmarksFile.lock.lock()
            defer { ANNBenchmarksFile.lock.unlock() }
            silenceLibraryErrors()
            file = H5Fcreate(path, steer_h5f_acc_trunc(), steer_h5p_default(), steer_h5p_default())
            guard file >= 0 else { throw SteerError(.io, "\(path): libhdf5 cannot create the file") }
        }

        /// A float32 dataset of shape `dims` (rows × columns unless given).
        public func floats(_ name: String, _ values: [Float], rows: Int, columns: Int) throws(SteerError) {
            try dataset(name, values, dims: [rows, columns], fileType: steer_h5t_ieee_f32le(), memoryType: steer_h5t_native_float())
        }

        public func floats(_ name: String, _ values: [Float], dims: [Int]) throws(SteerError) {
            try dataset(name, values, dims: dims, fileType: steer_h5t_ieee_f32le(), memoryType: steer_h5t_native_float())
        }

        /// An integer dataset: int32 in the file when every value fits, else int64.
        public func integers(_ name: String, _ values: [Int64], rows: Int, columns: Int) throws(SteerError) {
            let fits = values.allSatisfy { $0 >= Int64(Int32.min) && $0 <= Int64(Int32.max) }
            try dataset(name, values, dims: [rows, columns], fileType: fits ? steer_h5t_std_i32le() : steer_h5t_std_i64le(), memoryType: steer_h5t_native_int64())
        }

        /// A string attribute on the root group (fixed length, as h5py writes `np.bytes_`; readers take both kinds).
        public func attribute(_ name: String, _ value: String) throws(SteerError) {
            ANNBenchmarksFile.lock.lock()
            defer { ANNBenchmarksFile.lock.unlock() }
            let bytes = Array(value.utf8)
            let type = H5Tcopy(steer_h5t_c_s1())
            defer { H5Tclose(type) }
            H5Tset_size(type, max(1, bytes.count))
            H5Tset_strpad(type, H5T_STR_NULLPAD)
            let space = H5Screate(H5S_SCALAR)
            defer { H5Sclose(space) }
            let attribute = H5Acreate2(file, name, type, space, steer_h5p_default(), steer_h5p_default())
            guard attribute >= 0 else { throw SteerError(.io, "cannot create attribute \(name)") }
            defer { H5Aclose(attribute) }
            let padded = bytes.isEmpty ? [UInt8(0)] : bytes
            guard H5Awrite(attribute, type, padded) >= 0 else { throw SteerError(.io, "cannot write attribute \(name)") }
        }

        private func dataset<T>(_ name: String, _ values: [T], dims: [Int], fileType: hid_t, memoryType: hid_t) throws(SteerError) {
            ANNBenchmarksFile.lock.lock()
            defer { ANNBenchmarksFile.lock.unlock() }
            guard dims.reduce(1, *) == values.count else { throw SteerError(.invalidRequest, "\(name): \(values.count) values for shape \(dims)") }
            let sizes = dims.map { hsize_t($0) }
            let space = H5Screate_simple(Int32(sizes.count), sizes, nil)
            guard space >= 0 else { throw SteerError(.io, "cannot make the dataspace of \(name)") }
            defer { H5Sclose(space) }
            let set = H5Dcreate2(file, name, fileType, space, steer_h5p_default(), steer_h5p_default(), steer_h5p_default())
            guard set >= 0 else { throw SteerError(.io, "cannot create dataset \(name)") }
            defer { H5Dclose(set) }
            let status = values.withUnsafeBytes { H5Dwrite(set, memoryType, steer_h5s_all(), steer_h5s_all(), steer_h5p_default(), $0.baseAddress) }
            guard status >= 0 else { throw SteerError(.io, "cannot write dataset \(name)") }
        }

        public func close() {
            ANNBenchmarksFile.lock.lock()
            defer { ANNBenchmarksFile.lock.unlock() }
            if !closed { H5Fclose(file) }
            closed = true
        }

        deinit { close() }
    }

    // MARK: Private

    /// libhdf5 prints its error stack to stderr by default; errors are reported as SteerErrors instead.
    private static func silenceLibraryErrors() {
        H5Eset_auto2(steer_h5e_default(), nil, nil)
    }

    private enum Kind { case float, integer }

    /// An open 2-d dataset and its declared shape.
    private struct Dataset {
        let id: hid_t
        let name: String
        let classValue: H5T_class_t
        let typeSize: Int
        let rows: Int
        let columns: Int

        init(file: hid_t, name: String, path: String) throws(SteerError) {
            guard H5Lexists(file, name, steer_h5p_default()) > 0 else { throw SteerError(.notFound, "\(path): no dataset '\(name)'") }
            let id = H5Dopen2(file, name, steer_h5p_default())
            guard id >= 0 else { throw SteerError(.corrupt, "\(path): '\(name)' is not a readable dataset") }
            let space = H5Dget_space(id)
            let type = H5Dget_type(id)
            defer {
                if space >= 0 { H5Sclose(space) }
                if type >= 0 { H5Tclose(type) }
            }
            guard space >= 0, type >= 0 else {
                H5Dclose(id)
                throw SteerError(.corrupt, "\(path): '\(name)' has no readable shape or type")
            }
            let rank = H5Sget_simple_extent_ndims(space)
            guard rank == 2 else {
                H5Dclose(id)
                throw SteerError(.corrupt, "\(path): '\(name)' has rank \(rank), expected 2 (rows × columns)")
            }
            var dims = [hsize_t](repeating: 0, count: 2)
            guard H5Sget_simple_extent_dims(space, &dims, nil) == 2, dims[0] <= hsize_t(Int.max), dims[1] <= hsize_t(Int.max) else {
                H5Dclose(id)
                throw SteerError(.corrupt, "\(path): '\(name)' has an unreadable or oversized shape")
            }
            self.id = id
            self.name = name
            classValue = H5Tget_class(type)
            typeSize = H5Tget_size(type)
            rows = Int(dims[0])
            columns = Int(dims[1])
        }

        func require(kind: Kind, path: String) throws(SteerError) {
            switch kind {
            case .float:
                guard classValue == H5T_FLOAT, typeSize == 4 || typeSize == 8 else {
                    throw SteerError(.corrupt, "\(path): '\(name)' must hold 32- or 64-bit floats")
                }
            case .integer:
                guard classValue == H5T_INTEGER, typeSize >= 1, typeSize <= 8 else {
                    throw SteerError(.corrupt, "\(path): '\(name)' must hold integers")
                }
            }
        }

        /// Reads all `cells` values converted to `type` (libhdf5 converts float64 → float32, int32 → int64).
        func read<T: BitwiseCopyable>(_ cells: Int, type: hid_t, path: String) throws(SteerError) -> [T] {
            var failed = false
            let values = [T](unsafeUninitializedCapacity: cells) { buffer, initialized in
                failed = H5Dread(id, type, steer_h5s_all(), steer_h5s_all(), steer_h5p_default(), UnsafeMutableRawPointer(buffer.baseAddress)) < 0
                if failed {
                    // Leave nothing uninitialised behind.
                    UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
                }
                initialized = cells
            }
            guard !failed else { throw SteerError(.corrupt, "\(path): libhdf5 cannot read '\(name)' (damaged or truncated data)") }
            return values
        }

        func close() { H5Dclose(id) }
    }

    /// A scalar string attribute of the root group (fixed-length or variable-length).
    private static func stringAttribute(file: hid_t, name: String, path: String) throws(SteerError) -> String {
        guard H5Aexists(file, name) > 0 else { throw SteerError(.notFound, "\(path): no root attribute '\(name)' (angular or euclidean)") }
        let attribute = H5Aopen(file, name, steer_h5p_default())
        guard attribute >= 0 else { throw SteerError(.corrupt, "\(path): attribute '\(name)' cannot be opened") }
        defer { H5Aclose(attribute) }
        let type = H5Aget_type(attribute)
        guard type >= 0 else { throw SteerError(.corrupt, "\(path): attribute '\(name)' has no type") }
        defer { H5Tclose(type) }
        guard H5Tget_class(type) == H5T_STRING else { throw SteerError(.corrupt, "\(path): attribute '\(name)' is not a string") }
        let space = H5Aget_space(attribute)
        defer { if space >= 0 { H5Sclose(space) } }
        guard space >= 0, H5Sget_simple_extent_npoints(space) == 1 else { throw SteerError(.corrupt, "\(path): attribute '\(name)' is not one string") }
        let memory = H5Tcopy(steer_h5t_c_s1())
        defer { H5Tclose(memory) }
        if H5Tis_variable_str(type) > 0 {
            H5Tset_size(memory, steer_h5t_variable())
            H5Tset_cset(memory, H5Tget_cset(type))
            var pointer: UnsafeMutablePointer<CChar>?
            guard H5Aread(attribute, memory, &pointer) >= 0, let pointer else { throw SteerError(.corrupt, "\(path): attribute '\(name)' cannot be read") }
            defer { H5free_memory(pointer) }
            // A variable-length string is NUL-terminated by libhdf5; bound the scan anyway.
            let length = strnlen(pointer, 256)
            return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
        }
        let size = H5Tget_size(type)
        guard size > 0, size <= 256 else { throw SteerError(.corrupt, "\(path): attribute '\(name)' is \(size) bytes (at most 256)") }
        H5Tset_size(memory, size)
        H5Tset_strpad(memory, H5T_STR_NULLPAD)
        var bytes = [UInt8](repeating: 0, count: size + 1)
        guard H5Aread(attribute, memory, &bytes) >= 0 else { throw SteerError(.corrupt, "\(path): attribute '\(name)' cannot be read") }
        let end = bytes.firstIndex(of: 0) ?? size
        return String(decoding: bytes[..<end], as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }
}
