import Foundation
import SteerCore

/// The tuned steering settings of a checkpoint: the optional `steering.json` beside `config.json`
/// (docs/checkpoint-format.md, "steering.json"), written by `steer-train --tune`.
///
/// - `softScale` λ > 0: the soft query is `q = h⁺ + λ · Σ_c Δ_c`.
/// - `hybridBlend` β ∈ [0, 1]: hybrid ranks the items its filters keep by `β · (q · V) + (1 − β) · (h⁺ · V)`,
///   which is the inner product with `h⁺ + β · λ · Σ_c Δ_c` (so an index search with that vector gives it).
///
/// Without the file both are 1 (the §3 computation). Immutable value; safe to share across threads.
public struct DPRSteering: Sendable, Equatable {
    public static let format = "steer-dpr-steering"
    public static let version = 1
    public static let fileName = "steering.json"
    /// Largest accepted `steering.json`, in bytes (the file holds four short keys).
    public static let maxFileBytes = 64 * 1024
    /// λ = β = 1: what a checkpoint without `steering.json` means.
    public static let identity = DPRSteering(uncheckedSoftScale: 1, hybridBlend: 1)

    public let softScale: Float
    public let hybridBlend: Float

    private init(uncheckedSoftScale softScale: Float, hybridBlend: Float) {
        self.softScale = softScale
        self.hybridBlend = hybridBlend
    }

    /// Parses `steering.json`'s bytes; `path` names the file in errors.
    /// - Throws: `.corrupt` naming `path` when the bytes are not a JSON object of this format and version,
    ///   or a value is missing, not a finite number (booleans are refused) or out of range.
    public init(json data: Data, path: String) throws(SteerError) {
        func corrupt(_ message: String) -> SteerError { SteerError(.corrupt, "\(path): \(message)") }
        guard data.count <= Self.maxFileBytes else { throw corrupt("\(data.count) bytes, limit is \(Self.maxFileBytes)") }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw corrupt("not valid JSON")
        }
        guard let object = parsed as? [String: Any] else { throw corrupt("not a JSON object") }
        guard object["format"] as? String == Self.format, let version = object["version"], JSONValue.integer(version) == Self.version else {
            throw corrupt("not a \(Self.format) v\(Self.version) file")
        }
        func number(_ key: String) throws(SteerError) -> Float {
            guard let raw = object[key], let double = JSONValue.double(raw) else { throw corrupt("\(key) must be a number") }
            guard double.isFinite, abs(double) <= Double(Float.greatestFiniteMagnitude) else { throw corrupt("\(key) must be finite") }
            return Float(double)
        }
        let lambda = try number("soft_scale")
        let beta = try number("hybrid_blend")
        guard lambda > 0, (0...1).contains(beta) else { throw corrupt("soft_scale must be > 0 and hybrid_blend in [0, 1]") }
        self.init(uncheckedSoftScale: lambda, hybridBlend: beta)
    }

    /// Reads `<directory>/steering.json`; `identity` when the file does not exist.
    /// - Throws: `.corrupt` for a file over `maxFileBytes` or with invalid content, `.io` when it cannot be read.
    public init(directory: String) throws(SteerError) {
        let path = directory + "/" + Self.fileName
        guard FileManager.default.fileExists(atPath: path) else {
            self = .identity
            return
        }
        try self.init(json: try readFile(path, maxBytes: Self.maxFileBytes), path: path)
    }
}
