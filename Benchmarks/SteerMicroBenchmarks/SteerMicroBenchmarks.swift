// Micro-benchmarks of Steer's hot paths with ordo-one/benchmark (docs/benchmarks.md, "Micro-benchmarks").
// Built only when STEER_MICROBENCH=1 (Package.swift), so normal builds and CI never fetch the package:
//
//   STEER_MICROBENCH=1 swift package --scratch-path .build-micro benchmark --target SteerMicroBenchmarks
//
// The encoder benchmarks need all-MiniLM-L6-v2 in models/all-MiniLM-L6-v2 (or STEER_MINILM_DIR).
import Benchmark
import Foundation
import SteerCore
import SteerIndex
import SteerModel
import SteerProtocol

private func searchLine(dimension: Int, base64: Bool) -> [UInt8] {
    var rng = SeededGenerator(seed: UInt64(dimension))
    let vector = (0..<dimension).map { _ in rng.nextGaussian() }
    var writer = JSONWriter()
    writer.raw("{\"id\":1,\"op\":\"search\",\"k\":10,")
    if base64 {
        writer.raw("\"vector_b64\":")
        writer.string(Base64Floats.encode(vector))
    } else {
        writer.raw("\"vector\":")
        writer.floats(vector)
    }
    writer.raw("}")
    return writer.bytes
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .mallocCountTotal, .throughput],
                                           maxDuration: .seconds(2), maxIterations: 1_000_000)

    // MARK: JSON codec and float parsing

    for dimension in [64, 384] {
        let json = searchLine(dimension: dimension, base64: false)
        let b64 = searchLine(dimension: dimension, base64: true)
        let decoder = RequestDecoder(limits: ProtocolLimits())
        Benchmark("parse+decode search request, \(dimension) JSON floats") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try decoder.decode(try JSONParser.parse(json)))
            }
        }
        Benchmark("parse+decode search request, \(dimension) floats as vector_b64") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try decoder.decode(try JSONParser.parse(b64)))
            }
        }
        var rng = SeededGenerator(seed: 9)
        var writer = JSONWriter()
        writer.floats((0..<dimension).map { _ in rng.nextGaussian() })
        let array = writer.bytes
        Benchmark("float array parse, \(dimension) floats") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try JSONParser.parse(array))
            }
        }
    }
    Benchmark("write a search response, 10 hits with titles and tags") { benchmark in
        for _ in benchmark.scaledIterations {
            var writer = JSONWriter(capacity: 1024)
            writer.raw("{\"id\":1,\"ok\":true,\"hits\":[")
            for hit in 0..<10 {
                if hit > 0 { writer.raw(",") }
                writer.raw("{\"id\":")
                writer.int(hit * 7919)
                writer.raw(",\"score\":")
                writer.float(0.9 - Float(hit) * 0.01)
                writer.raw(",\"title\":")
                writer.string("Item number \(hit)")
                writer.raw(",\"tags\":[\"comedy\",\"drama\"]}")
            }
            writer.raw("]}")
            blackHole(writer.bytes)
        }
    }

    // MARK: A search call

    for spec in ["HNSW32,efC100", "IVF256,Flat"] {
        Benchmark("VectorIndex.search \(spec), 20k x 64, k 10", configuration: .init(metrics: [.wallClock, .throughput], maxDuration: .seconds(2))) { (benchmark: Benchmark, state: (VectorIndex, [[Float]])) in
            let (index, queries) = state
            var q = 0
            for _ in benchmark.scaledIterations {
                do {
                    blackHole(try index.search(queries[q % queries.count], k: 10))
                } catch {
                    benchmark.error("search failed: \(error)")
                }
                q += 1
            }
        } setup: {
            let data = SyntheticVectors(count: 20_000, dimension: 64, clusters: 100, spread: 1.2, seed: 1)
            let index = try VectorIndex(spec: IndexSpec(parsing: spec), dimension: 64, metric: .innerProduct)
            if index.spec.needsTraining { try index.train(data.values) }
            try index.add(data.values, labels: (0..<Int64(data.count)).map { $0 })
            let queries = SyntheticVectors(count: 256, dimension: 64, clusters: 100, spread: 1.2, seed: 2)
            return (index, (0..<queries.count).map { queries.row($0) })
        }
    }

    // MARK: Encoder stages

    let minilm = ProcessInfo.processInfo.environment["STEER_MINILM_DIR"] ?? "models/all-MiniLM-L6-v2"
    let prompt = "more comedies, but no horror"
    Benchmark("ClauseParser.parse (2 clauses)") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(ClauseParser.parse(prompt)) }
    }
    Benchmark("WordPiece tokenize a clause") { (benchmark: Benchmark, tokenizer: WordPieceTokenizer) in
        for _ in benchmark.scaledIterations { blackHole(tokenizer.encode("more comedies")) }
    } setup: {
        try WordPieceTokenizer(vocabularyFile: minilm + "/vocab.txt")
    }
    Benchmark("MiniLM embed a clause (uncached)", configuration: .init(metrics: [.wallClock, .throughput], maxDuration: .seconds(3))) { (benchmark: Benchmark, encoder: MiniLMEncoder) in
        for _ in benchmark.scaledIterations { blackHole(encoder.embed("more comedies")) }
    } setup: {
        try MiniLMEncoder(directory: minilm)
    }
}
