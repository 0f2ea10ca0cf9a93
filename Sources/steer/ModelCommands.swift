import ArgumentParser
import CBLAS
import Foundation
import SteerCore
import SteerModel

// `steer embed-text`, `steer parse-prompt`, `steer encode-query`: what the model hears and produces.
// Output is one JSON object on stdout; errors go to stderr as `error <code>: <message>` with exit code 1.

/// Where all-MiniLM-L6-v2's files are: `--minilm`, else `$STEER_MINILM_DIR`, else `models/all-MiniLM-L6-v2`.
struct MiniLMOption: ParsableArguments {
    @Option(name: .customLong("minilm"), help: "Folder with all-MiniLM-L6-v2's model.safetensors and vocab.txt (default: $STEER_MINILM_DIR or models/all-MiniLM-L6-v2).")
    var directory: String?

    var resolved: String {
        if let directory { return directory }
        if let env = ProcessInfo.processInfo.environment["STEER_MINILM_DIR"], !env.isEmpty { return env }
        return "models/all-MiniLM-L6-v2"
    }
}

struct EmbedText: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed-text",
        abstract: "Print the prompt encoder's (all-MiniLM-L6-v2) normalised embedding of TEXT as JSON."
    )

    @Argument(help: "The text to embed.")
    var text: String

    @OptionGroup var minilm: MiniLMOption

    @Option(help: "Embed this many times and report the latency (tokenize, forward) instead of only the vector.")
    var `repeat`: Int = 1

    func validate() throws {
        guard (1...100_000).contains(`repeat`) else { throw ValidationError("--repeat must be between 1 and 100000") }
    }

    func run() throws {
        try reportingErrors { () throws(SteerError) in
            let encoder = try MiniLMEncoder(directory: minilm.resolved)
            let tokens = encoder.tokenizer.encode(text)
            var vector = encoder.embed(tokens: tokens)
            var tokenize: [UInt64] = []
            var forward: [UInt64] = []
            if `repeat` > 1 {
                for _ in 0..<`repeat` {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    let ids = encoder.tokenizer.encode(text)
                    let t1 = DispatchTime.now().uptimeNanoseconds
                    vector = encoder.embed(tokens: ids)
                    let t2 = DispatchTime.now().uptimeNanoseconds
                    tokenize.append(t1 - t0)
                    forward.append(t2 - t1)
                }
            }
            var fields: [(String, String)] = [
                ("text", JSON.string(text)),
                ("token_ids", JSON.array(tokens.map { String($0) })),
                ("dim", String(vector.count)),
                ("vector", JSON.floats(vector)),
            ]
            if `repeat` > 1 {
                fields.append(("latency_us", JSON.object([
                    ("repeat", String(`repeat`)),
                    ("tokenize", JSON.summary(tokenize)),
                    ("forward", JSON.summary(forward)),
                    ("total", JSON.summary(zip(tokenize, forward).map { $0 + $1 })),
                ])))
                fields.append(("blas", JSON.string(blasDescription())))
            }
            print(JSON.object(fields))
        }
    }
}

struct ParsePrompt: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parse-prompt",
        abstract: "Print the clauses of a prompt with their polarity (and, with --checkpoint, their catalog tags) as JSON."
    )

    @Argument(help: "The prompt, e.g. \"more comedies, but no horror\".")
    var text: String

    @Option(help: "A steer-dpr checkpoint directory: also map each clause to the catalog's tags.")
    var checkpoint: String?

    @OptionGroup var minilm: MiniLMOption

    func run() throws {
        try reportingErrors { () throws(SteerError) in
            guard let checkpoint else {
                let clauses = ClauseParser.parse(text).map { clause in
                    JSON.object([("text", JSON.string(clause.text)), ("polarity", JSON.string(clause.polarity.rawValue))])
                }
                print(JSON.object([("prompt", JSON.string(text)), ("clauses", JSON.array(clauses))]))
                return
            }
            let model = try DPRModel.load(checkpoint: checkpoint, minilm: minilm.resolved, cacheCapacity: 0)
            let clauses = try model.parseClauses(text)
            print(JSON.object([("prompt", JSON.string(text)), ("clauses", JSON.array(clauses.map(JSON.clause)))]))
        }
    }
}

struct EncodeQuery: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode-query",
        abstract: "Encode a history and a prompt into the DPR query vector with a checkpoint; print it, the clauses and the top items as JSON."
    )

    @Option(help: "A steer-dpr checkpoint directory (config.json, model.safetensors, items.jsonl).")
    var checkpoint: String

    @Option(parsing: .upToNextOption, help: "Item ids, oldest first (space- or comma-separated; integers or strings).")
    var history: [String] = []

    @Option(help: "The prompt (optional).")
    var prompt: String?

    @Option(help: "Also rank the catalog by brute force and print this many items (0: none).")
    var k: Int = 10

    @Option(help: "Constraint mode for the ranking: soft, hybrid or hard.")
    var mode: String = "soft"

    @Option(help: "Clause-embedding cache capacity (0: every clause is embedded anew).")
    var cacheCapacity: Int = 4096

    @Option(help: "Encode this many times and report per-stage latency percentiles.")
    var `repeat`: Int = 1

    @OptionGroup var minilm: MiniLMOption

    func validate() throws {
        guard ConstraintMode(rawValue: mode) != nil else { throw ValidationError("--mode must be soft, hybrid or hard") }
        guard (0...1000).contains(k) else { throw ValidationError("--k must be between 0 and 1000") }
        guard (1...100_000).contains(`repeat`) else { throw ValidationError("--repeat must be between 1 and 100000") }
        guard cacheCapacity >= 0 else { throw ValidationError("--cache-capacity must not be negative") }
    }

    func run() throws {
        try reportingErrors { () throws(SteerError) in
            let model = try DPRModel.load(checkpoint: checkpoint, minilm: minilm.resolved, cacheCapacity: cacheCapacity)
            let ids = history.flatMap { $0.split(separator: ",") }.map { raw -> ItemID in
                let text = raw.trimmingCharacters(in: .whitespaces)
                return Int64(text).map(ItemID.int) ?? .string(text)
            }
            let (rows, unknown) = model.rows(for: ids)
            if !ids.isEmpty && rows.isEmpty {
                throw SteerError(.notFound, "none of the history's \(ids.count) ids is in the catalog")
            }
            let mode = ConstraintMode(rawValue: mode) ?? .soft
            var (hits, encoded) = try model.recommend(historyRows: rows, prompt: prompt, k: k, mode: mode)
            var samples: [EncodeTimings] = []
            if `repeat` > 1 {
                for _ in 0..<`repeat` {
                    encoded = try model.encode(historyRows: rows, prompt: prompt)
                    samples.append(encoded.timings)
                }
            }
            var fields: [(String, String)] = [
                ("backbone", JSON.string(model.config.backbone.rawValue)),
                ("history_used", JSON.array(encoded.historyRows.map { JSON.id(model.catalog[$0].id) })),
                ("unknown_ids", JSON.array(unknown.map(JSON.id))),
                ("clauses", JSON.array(encoded.clauses.map(JSON.clause))),
                ("query", JSON.floats(encoded.query)),
                ("user_vector", JSON.floats(encoded.userVector)),
                ("timings_us", JSON.timings([encoded.timings])),
            ]
            if k > 0 {
                fields.append(("mode", JSON.string(mode.rawValue)))
                fields.append(("hits", JSON.array(hits.map { hit in
                    let item = model.catalog[hit.row]
                    return JSON.object([("id", JSON.id(item.id)), ("score", JSON.float(hit.score)),
                                        ("title", JSON.string(item.title)), ("tags", JSON.array(item.tags.map(JSON.string)))])
                })))
            }
            if !samples.isEmpty {
                fields.append(("repeat", String(`repeat`)))
                fields.append(("latency_us", JSON.timings(samples)))
                fields.append(("cache", JSON.object([("hits", String(model.cacheStats.hits)), ("misses", String(model.cacheStats.misses))])))
                fields.append(("blas", JSON.string(blasDescription())))
            }
            print(JSON.object(fields))
        }
    }
}

/// Runs `body`; a SteerError is printed to stderr as `error <code>: <message>` and exits with status 1.
private func reportingErrors(_ body: () throws(SteerError) -> Void) throws {
    do {
        try body()
    } catch {
        FileHandle.standardError.write(Data("error \(error.code): \(error.message)\n".utf8))
        throw ExitCode(1)
    }
}

/// OpenBLAS's kernel set and thread count (docs/dependencies.md: it may pick slow "Prescott" kernels on this CPU).
func blasDescription() -> String {
    let core = openblas_get_corename().map { String(cString: $0) } ?? "?"
    return "OpenBLAS core \(core), \(openblas_get_num_threads()) threads"
}

/// Hand-built JSON (the vectors are long; JSONEncoder is slow and reorders nothing we need).
enum JSON {
    static func string(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    static func float(_ value: Float) -> String { value.isFinite ? "\(value)" : "null" }
    static func floats(_ values: [Float]) -> String { array(values.map(float)) }
    static func array(_ items: [String]) -> String { "[" + items.joined(separator: ", ") + "]" }
    static func object(_ fields: [(String, String)]) -> String {
        "{" + fields.map { string($0.0) + ": " + $0.1 }.joined(separator: ", ") + "}"
    }

    static func id(_ id: ItemID) -> String {
        switch id {
        case .int(let value): return String(value)
        case .string(let value): return string(value)
        }
    }

    static func clause(_ clause: ParsedClause) -> String {
        object([("text", string(clause.text)), ("polarity", string(clause.polarity.rawValue)),
                ("tags", array(clause.tags.map(string)))])
    }

    /// p50/p90/p99/mean of nanosecond samples, in microseconds.
    static func summary(_ samples: [UInt64]) -> String {
        let sorted = samples.sorted()
        func percentile(_ p: Double) -> Double {
            Double(sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]) / 1000
        }
        let mean = Double(sorted.reduce(0, +)) / Double(max(sorted.count, 1)) / 1000
        func format(_ value: Double) -> String { String(format: "%.1f", value) }
        return object([("p50", format(percentile(0.5))), ("p90", format(percentile(0.9))),
                       ("p99", format(percentile(0.99))), ("mean", format(mean))])
    }

    static func timings(_ samples: [EncodeTimings]) -> String {
        object([
            ("parse", summary(samples.map(\.parse))),
            ("tokenize", summary(samples.map(\.tokenize))),
            ("minilm", summary(samples.map(\.minilm))),
            ("tag_mapping", summary(samples.map(\.tagMapping))),
            ("backbone", summary(samples.map(\.backbone))),
            ("head", summary(samples.map(\.head))),
            ("total", summary(samples.map(\.total))),
        ])
    }
}
