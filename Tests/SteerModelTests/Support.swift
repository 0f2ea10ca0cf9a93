import Foundation
import SteerCore
import Testing
@testable import SteerModel

/// Paths the tests read, found from this file's location (Tests/SteerModelTests/Support.swift).
enum Paths {
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static let fixtures = packageRoot + "/Tests/SteerModelTests/Fixtures"

    /// `$STEER_MINILM_DIR`, else `<package root>/models/all-MiniLM-L6-v2` (filled by `make setup`).
    static let minilm: String = {
        if let dir = ProcessInfo.processInfo.environment["STEER_MINILM_DIR"], !dir.isEmpty { return dir }
        return packageRoot + "/models/all-MiniLM-L6-v2"
    }()

    static func fixture(_ name: String) -> String { fixtures + "/" + name }
}

/// MiniLM, loaded once per test process (90 MB).
let sharedEncoderResult: Result<MiniLMEncoder, SteerError> = {
    do throws(SteerError) {
        return .success(try MiniLMEncoder(directory: Paths.minilm))
    } catch {
        return .failure(error)
    }
}()

/// The shared encoder; a missing MiniLM folder fails the test with the fix.
func sharedEncoder() throws -> MiniLMEncoder {
    switch sharedEncoderResult {
    case .success(let encoder): return encoder
    case .failure(let error):
        Issue.record("all-MiniLM-L6-v2 not loadable from \(Paths.minilm) (\(error)): run `make setup` (scripts/fetch-minilm.sh) or set STEER_MINILM_DIR")
        throw error
    }
}

/// The demo fixtures' models, loaded once each.
let fixtureModels: [String: Result<DPRModel, SteerError>] = {
    var out: [String: Result<DPRModel, SteerError>] = [:]
    guard case .success(let encoder) = sharedEncoderResult else { return out }
    for name in FixtureNames.all {
        do throws(SteerError) {
            out[name] = .success(try DPRModel(checkpoint: Paths.fixture(name), encoder: encoder, cacheCapacity: 64))
        } catch {
            out[name] = .failure(error)
        }
    }
    return out
}()

enum FixtureNames {
    static let all = ["demo-sasrec", "demo-gru4rec", "sasrec-2heads"]
}

func fixtureModel(_ name: String) throws -> DPRModel {
    _ = try sharedEncoder()
    guard let result = fixtureModels[name] else { throw SteerError.notFound("fixture \(name)") }
    return try result.get()
}

/// A fresh directory under the system temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "steer-model-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Reads a JSON file as `Any`.
func readJSON(_ path: String) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
}

func floats(_ value: Any?) -> [Float] {
    (value as? [Any] ?? []).map { Float(JSONValue.double($0) ?? .nan) }
}

func itemIDs(_ value: Any?) -> [ItemID] {
    (value as? [Any] ?? []).map { raw in
        if let text = raw as? String { return .string(text) }
        return .int(Int64(JSONValue.integer(raw) ?? Int.min))
    }
}

func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    guard a.count == b.count else { return .infinity }
    return zip(a, b).map { abs($0 - $1) }.max() ?? 0
}

/// Serialises tensors as a safetensors file (header entries in the given order, data packed in order).
func safetensorsBytes(_ tensors: [(name: String, shape: [Int], values: [Float])], dtype: String = "F32") -> Data {
    var header: [String] = []
    var offset = 0
    for tensor in tensors {
        let bytes = tensor.values.count * 4
        header.append("\"\(tensor.name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(tensor.shape),\"data_offsets\":[\(offset),\(offset + bytes)]}")
        offset += bytes
    }
    let json = Data(("{" + header.joined(separator: ",") + "}").utf8)
    var data = Data()
    var length = UInt64(json.count).littleEndian
    withUnsafeBytes(of: &length) { data.append(contentsOf: $0) }
    data.append(json)
    for tensor in tensors { tensor.values.withUnsafeBytes { data.append(contentsOf: $0) } }
    return data
}

/// Reads every tensor of a safetensors file (F32 only) in offset order.
func readTensors(_ path: String) throws -> [(name: String, shape: [Int], values: [Float])] {
    let file = try SafeTensorsFile(path: path)
    return try file.entries.sorted { $0.value.begin < $1.value.begin }.map { name, entry in
        (name, entry.shape, try file.floats(name))
    }
}
