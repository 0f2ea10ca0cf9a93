import CBLAS
import CModelKernels
import Foundation
import SteerCore

/// all-MiniLM-L6-v2 as a sentence encoder: BERT (6 layers, hidden 384, 12 heads, FFN 1536, erf GELU,
/// LayerNorm eps 1e-12), mean pooling over every token (`[CLS]` and `[SEP]` included), L2 normalisation.
///
/// Reads `model.safetensors` and `vocab.txt` from the folder `scripts/fetch-minilm.sh` fills. Immutable
/// after loading, so one instance serves any number of threads.
public final class MiniLMEncoder: Sendable {
    public static let dimension = 384
    public static let layerCount = 6
    public static let headCount = 12
    public static let ffnWidth = 1536
    public static let positions = 512
    static let eps: Float = 1e-12

    struct Layer: Sendable {
        /// query, key and value stacked: `[3 × 384, 384]`.
        let qkv: Linear
        let attentionOut: Linear
        let attentionNorm: (weight: [Float], bias: [Float])
        let intermediate: Linear
        let output: Linear
        let outputNorm: (weight: [Float], bias: [Float])
    }

    public let tokenizer: WordPieceTokenizer
    /// The folder the files came from.
    public let directory: String
    let wordEmbeddings: [Float]
    let positionEmbeddings: [Float]
    let tokenType0: [Float]
    let embeddingNorm: (weight: [Float], bias: [Float])
    let layers: [Layer]

    /// Loads `directory/model.safetensors` and `directory/vocab.txt`.
    /// - Throws: `.notFound` if a file is missing, `.corrupt` naming the tensor or file that is wrong.
    public init(directory: String) throws(SteerError) {
        self.directory = directory
        let weightsPath = directory + "/model.safetensors"
        let vocabPath = directory + "/vocab.txt"
        tokenizer = try WordPieceTokenizer(vocabularyFile: vocabPath)
        let file = try SafeTensorsFile(path: weightsPath)
        let h = Self.dimension
        let vocabularySize = tokenizer.count
        wordEmbeddings = try file.floats("embeddings.word_embeddings.weight", shape: [vocabularySize, h])
        positionEmbeddings = try file.floats("embeddings.position_embeddings.weight", shape: [Self.positions, h])
        tokenType0 = Array(try file.floats("embeddings.token_type_embeddings.weight", shape: [2, h])[0..<h])
        embeddingNorm = (try file.floats("embeddings.LayerNorm.weight", shape: [h]), try file.floats("embeddings.LayerNorm.bias", shape: [h]))
        var layers: [Layer] = []
        for i in 0..<Self.layerCount {
            let p = "encoder.layer.\(i)."
            let attention = p + "attention.self."
            layers.append(Layer(
                qkv: try Linear(file, stacking: [attention + "query", attention + "key", attention + "value"], outputs: h, inputs: h),
                attentionOut: try Linear(file, p + "attention.output.dense", outputs: h, inputs: h),
                attentionNorm: (try file.floats(p + "attention.output.LayerNorm.weight", shape: [h]),
                                try file.floats(p + "attention.output.LayerNorm.bias", shape: [h])),
                intermediate: try Linear(file, p + "intermediate.dense", outputs: Self.ffnWidth, inputs: h),
                output: try Linear(file, p + "output.dense", outputs: h, inputs: Self.ffnWidth),
                outputNorm: (try file.floats(p + "output.LayerNorm.weight", shape: [h]),
                             try file.floats(p + "output.LayerNorm.bias", shape: [h]))
            ))
        }
        self.layers = layers
    }

    /// The normalised 384-d sentence embedding of `text`.
    public func embed(_ text: String) -> [Float] {
        embed(tokens: tokenizer.encode(text))
    }

    /// The normalised embedding of already tokenised ids (`[CLS] … [SEP]`, at most 512, ids < vocabulary).
    public func embed(tokens: [Int32]) -> [Float] {
        embed(batch: [tokens])[0]
    }

    /// Embeds several token sequences in one pass: their rows are stacked, so every weight matrix is read
    /// once for all of them (the layers are memory-bound for short prompts); attention stays within each
    /// sequence, so each result equals `embed(tokens:)` of that sequence alone (up to summation order).
    public func embed(batch: [[Int32]]) -> [[Float]] {
        let h = Self.dimension
        let lengths = batch.map { min($0.count, Self.positions) }
        precondition(lengths.allSatisfy { $0 > 0 }, "at least one token per sequence")
        var starts: [Int] = []
        var t = 0
        for length in lengths {
            starts.append(t)
            t += length
        }
        guard t > 0 else { return [] }
        var x = [Float](repeating: 0, count: t * h)
        for (s, tokens) in batch.enumerated() {
            for (j, token) in tokens.prefix(lengths[s]).enumerated() {
                let row = Int(token) * h
                let out = (starts[s] + j) * h
                for c in 0..<h {
                    x[out + c] = wordEmbeddings[row + c] + positionEmbeddings[j * h + c] + tokenType0[c]
                }
            }
        }
        Dense.layerNorm(&x, rows: t, width: h, weight: embeddingNorm.weight, bias: embeddingNorm.bias, eps: Self.eps)

        let longest = lengths.max() ?? 1
        var qkv = [Float](repeating: 0, count: t * 3 * h)
        var scores = [Float](repeating: 0, count: longest * longest)
        var context = [Float](repeating: 0, count: t * h)
        var projected = [Float](repeating: 0, count: t * h)
        var hidden = [Float](repeating: 0, count: t * Self.ffnWidth)
        let hd = h / Self.headCount
        let scale = 1 / Float(hd).squareRoot()
        for layer in layers {
            x.withUnsafeBufferPointer { xp in
                qkv.withUnsafeMutableBufferPointer { layer.qkv.apply(xp.baseAddress!, rows: t, into: $0.baseAddress!) }
            }
            qkv.withUnsafeBufferPointer { qkvp in
                scores.withUnsafeMutableBufferPointer { sp in
                    context.withUnsafeMutableBufferPointer { cp in
                        for (s, n) in lengths.enumerated() {
                            // rows of qkv are [q | k | v], stride 3h; sequence s owns rows starts[s] ..< starts[s] + n
                            let base = qkvp.baseAddress! + starts[s] * 3 * h
                            let out = cp.baseAddress! + starts[s] * h
                            for a in 0..<Self.headCount {
                                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(n), Int32(hd), scale,
                                            base + a * hd, Int32(3 * h), base + h + a * hd, Int32(3 * h), 0,
                                            sp.baseAddress, Int32(n))
                                for j in 0..<n { Dense.softmax(sp.baseAddress! + j * n, count: n) }
                                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(hd), Int32(n), 1,
                                            sp.baseAddress, Int32(n), base + 2 * h + a * hd, Int32(3 * h), 0,
                                            out + a * hd, Int32(h))
                            }
                        }
                    }
                }
            }
            context.withUnsafeBufferPointer { cp in
                projected.withUnsafeMutableBufferPointer { layer.attentionOut.apply(cp.baseAddress!, rows: t, into: $0.baseAddress!) }
            }
            for i in x.indices { x[i] += projected[i] }
            Dense.layerNorm(&x, rows: t, width: h, weight: layer.attentionNorm.weight, bias: layer.attentionNorm.bias, eps: Self.eps)
            x.withUnsafeBufferPointer { xp in
                hidden.withUnsafeMutableBufferPointer {
                    layer.intermediate.apply(xp.baseAddress!, rows: t, into: $0.baseAddress!, activation: Int32(STEER_ACT_GELU))
                }
            }
            hidden.withUnsafeBufferPointer { hp in
                projected.withUnsafeMutableBufferPointer { layer.output.apply(hp.baseAddress!, rows: t, into: $0.baseAddress!) }
            }
            for i in x.indices { x[i] += projected[i] }
            Dense.layerNorm(&x, rows: t, width: h, weight: layer.outputNorm.weight, bias: layer.outputNorm.bias, eps: Self.eps)
        }
        return lengths.indices.map { s in Self.meanPool(x, start: starts[s], count: lengths[s]) }
    }

    /// Mean over `count` rows from `start`, then L2 normalisation (norm floored at 1e-12).
    static func meanPool(_ x: [Float], start: Int, count t: Int) -> [Float] {
        let h = dimension
        var pooled = [Double](repeating: 0, count: h)
        for j in start..<(start + t) { for c in 0..<h { pooled[c] += Double(x[j * h + c]) } }
        var norm = 0.0
        for c in 0..<h {
            pooled[c] /= Double(t)
            norm += pooled[c] * pooled[c]
        }
        let inverse = 1 / max(norm.squareRoot(), 1e-12)
        return pooled.map { Float($0 * inverse) }
    }
}
