import Foundation
import SteerCore
import SteerStore

/// A fresh directory under the temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init(_ tag: String = "builder") {
        path = NSTemporaryDirectory() + "steer-\(tag)-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Writes a minimal safetensors file holding float32 tensors.
func writeSafeTensors(_ path: String, tensors: [(name: String, shape: [Int], values: [Float])], headerOverride: String? = nil) throws {
    var entries: [String] = []
    var offset = 0
    for tensor in tensors {
        let bytes = tensor.values.count * 4
        entries.append("\"\(tensor.name)\": {\"dtype\": \"F32\", \"shape\": [\(tensor.shape.map(String.init).joined(separator: ", "))], \"data_offsets\": [\(offset), \(offset + bytes)]}")
        offset += bytes
    }
    let header = headerOverride ?? "{" + entries.joined(separator: ", ") + "}"
    var data = Data()
    var length = UInt64(header.utf8.count).littleEndian
    withUnsafeBytes(of: &length) { data.append(contentsOf: $0) }
    data.append(contentsOf: Array(header.utf8))
    for tensor in tensors {
        tensor.values.withUnsafeBytes { data.append(contentsOf: $0) }
    }
    try data.write(to: URL(fileURLWithPath: path))
}

/// A checkpoint directory with `items.jsonl` (ids 0..<count, or the lines given) and `item_embeddings`.
struct CheckpointFixture {
    let directory: TemporaryDirectory
    let vectors: SyntheticVectors

    init(count: Int, dimension: Int, seed: UInt64 = 1, lines: [String]? = nil, config: Bool = true) throws {
        directory = TemporaryDirectory("ckpt")
        vectors = SyntheticVectors(count: count, dimension: dimension, clusters: 4, seed: seed)
        let text = lines ?? (0..<count).map { i in
            #"{"id": \#(i), "title": "Item \#(i)", "tags": ["t\#(i % 3)", "all"]}"#
        }
        try (text.joined(separator: "\n") + "\n").write(toFile: directory.file("items.jsonl"), atomically: true, encoding: .utf8)
        try writeSafeTensors(directory.file("model.safetensors"), tensors: [
            ("backbone.input_embeddings", [count, 2], [Float](repeating: 0.5, count: count * 2)),
            ("item_embeddings", [count, dimension], vectors.values),
        ])
        if config {
            let json = #"{"format": "steer-dpr", "version": 1, "n_items": \#(count), "index_dim": \#(dimension)}"#
            try json.write(toFile: directory.file("config.json"), atomically: true, encoding: .utf8)
        }
    }

    var path: String { directory.path }
}

/// Opens a store in a new temporary directory.
func withTemporaryStore<T>(_ body: (ItemStore, String) throws -> T) throws -> T {
    let directory = TemporaryDirectory("store")
    defer { directory.remove() }
    let path = directory.file("db")
    let store = try ItemStore(options: .init(path: path, syncWrites: false))
    defer { store.close() }
    return try body(store, path)
}

/// Every vector of a version, by external id.
func storedVectors(_ store: ItemStore, version: String) throws -> [ItemID: [Float]] {
    var byInternal: [(Int64, [Float])] = []
    let dimension = store.version(named: version)!.dimension
    _ = try store.scanVectors(version: version) { ids, values in
        for (i, id) in ids.enumerated() { byInternal.append((id, Array(values[(i * dimension)..<((i + 1) * dimension)]))) }
    }
    let records = try store.records(internalIDs: byInternal.map(\.0))
    var result: [ItemID: [Float]] = [:]
    for (record, (_, vector)) in zip(records, byInternal) { result[record!.id] = vector }
    return result
}

/// The SteerError `body` throws, or nil when it succeeds (any other error becomes `.internal`).
func thrownError<T>(_ body: () throws -> T) -> SteerError? {
    do {
        _ = try body()
        return nil
    } catch let error as SteerError {
        return error
    } catch {
        return SteerError.internalError("not a SteerError: \(error)")
    }
}
