import CBLAS
import CModelKernels
import SteerCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A sequential backbone: history rows (oldest first, already cut to `maxLen`) → user vector h ∈ R^d.
protocol Backbone: Sendable {
    func userVector(rows: [Int], inputEmbeddings: [Float]) -> [Float]
}

/// SASRec (docs/checkpoint-format.md §1): pre-LN causal self-attention blocks over the L real positions,
/// learned positions aligned so the most recent item sits at `maxLen − 1`, final LayerNorm of the last row.
struct SASRec: Backbone {
    struct Block: Sendable {
        let norm1: (weight: [Float], bias: [Float])
        /// q, k and v stacked: `[3d, d]`.
        let qkv: Linear
        let out: Linear
        let norm2: (weight: [Float], bias: [Float])
        let fc1: Linear
        let fc2: Linear
    }

    let d: Int
    let maxLen: Int
    let headCount: Int
    let inputScale: Float
    let eps: Float
    let positions: [Float]
    let blocks: [Block]
    let finalNorm: (weight: [Float], bias: [Float])

    init(_ file: SafeTensorsFile, _ config: DPRConfiguration) throws(SteerError) {
        let d = config.d
        self.d = d
        maxLen = config.maxLen
        headCount = config.headCount
        inputScale = config.inputScale
        eps = config.layerNormEps
        positions = try file.floats("backbone.pos_emb.weight", shape: [config.maxLen, d])
        var blocks: [Block] = []
        for i in 0..<config.layerCount {
            let p = "backbone.blocks.\(i)."
            blocks.append(Block(
                norm1: (try file.floats(p + "ln1.weight", shape: [d]), try file.floats(p + "ln1.bias", shape: [d])),
                qkv: try Linear(file, stacking: [p + "q", p + "k", p + "v"], outputs: d, inputs: d),
                out: try Linear(file, p + "out", outputs: d, inputs: d),
                norm2: (try file.floats(p + "ln2.weight", shape: [d]), try file.floats(p + "ln2.bias", shape: [d])),
                fc1: try Linear(file, p + "fc1", outputs: config.ffnWidth, inputs: d),
                fc2: try Linear(file, p + "fc2", outputs: d, inputs: config.ffnWidth)
            ))
        }
        self.blocks = blocks
        finalNorm = (try file.floats("backbone.final_ln.weight", shape: [d]), try file.floats("backbone.final_ln.bias", shape: [d]))
    }

    /// Tensor names this backbone reads.
    static func tensorNames(layers: Int) -> [String] {
        var names = ["backbone.pos_emb.weight", "backbone.final_ln.weight", "backbone.final_ln.bias"]
        for i in 0..<layers {
            for part in ["ln1", "q", "k", "v", "out", "ln2", "fc1", "fc2"] {
                names += ["backbone.blocks.\(i).\(part).weight", "backbone.blocks.\(i).\(part).bias"]
            }
        }
        return names
    }

    func userVector(rows: [Int], inputEmbeddings: [Float]) -> [Float] {
        let l = rows.count
        guard l > 0 else { return [Float](repeating: 0, count: d) }
        var x = [Float](repeating: 0, count: l * d)
        for (j, row) in rows.enumerated() {
            let position = (maxLen - l + j) * d
            for c in 0..<d { x[j * d + c] = inputEmbeddings[row * d + c] * inputScale + positions[position + c] }
        }
        let hd = d / headCount
        let scale = 1 / Float(hd).squareRoot()
        var y = [Float](repeating: 0, count: l * d)
        var qkv = [Float](repeating: 0, count: l * 3 * d)
        var scores = [Float](repeating: 0, count: l * l)
        var context = [Float](repeating: 0, count: l * d)
        for block in blocks {
            y = x
            Dense.layerNorm(&y, rows: l, width: d, weight: block.norm1.weight, bias: block.norm1.bias, eps: eps)
            y.withUnsafeBufferPointer { yp in
                qkv.withUnsafeMutableBufferPointer { block.qkv.apply(yp.baseAddress!, rows: l, into: $0.baseAddress!) }
            }
            qkv.withUnsafeBufferPointer { qp in
                scores.withUnsafeMutableBufferPointer { sp in
                    context.withUnsafeMutableBufferPointer { cp in
                        let base = qp.baseAddress!
                        let s = sp.baseAddress!
                        for a in 0..<headCount {
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(l), Int32(l), Int32(hd), scale,
                                        base + a * hd, Int32(3 * d), base + d + a * hd, Int32(3 * d), 0, s, Int32(l))
                            for j in 0..<l {
                                // causal: row j attends to positions 0…j only
                                Dense.softmax(s + j * l, count: j + 1)
                                for m in (j + 1)..<max(l, j + 1) { s[j * l + m] = 0 }
                            }
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(l), Int32(hd), Int32(l), 1,
                                        s, Int32(l), base + 2 * d + a * hd, Int32(3 * d), 0, cp.baseAddress! + a * hd, Int32(d))
                        }
                    }
                }
            }
            let attended = block.out(context, rows: l)
            for i in x.indices { x[i] += attended[i] }
            y = x
            Dense.layerNorm(&y, rows: l, width: d, weight: block.norm2.weight, bias: block.norm2.bias, eps: eps)
            let hidden = block.fc1(y, rows: l, activation: Int32(STEER_ACT_RELU))
            let ffn = block.fc2(hidden, rows: l)
            for i in x.indices { x[i] += ffn[i] }
        }
        var h = Array(x[((l - 1) * d)..<(l * d)])
        Dense.layerNorm(&h, rows: 1, width: d, weight: finalNorm.weight, bias: finalNorm.bias, eps: eps)
        return h
    }
}

/// GRU4Rec: one PyTorch GRU layer (gates r, z, n) over the history's input embeddings; h is the last state.
struct GRU4Rec: Backbone {
    let d: Int
    let input: Linear
    let hidden: Linear

    init(_ file: SafeTensorsFile, _ config: DPRConfiguration) throws(SteerError) {
        let d = config.d
        self.d = d
        input = Linear(weight: try file.floats("backbone.gru.weight_ih", shape: [3 * d, d]),
                       bias: try file.floats("backbone.gru.bias_ih", shape: [3 * d]), inputs: d, outputs: 3 * d)
        hidden = Linear(weight: try file.floats("backbone.gru.weight_hh", shape: [3 * d, d]),
                        bias: try file.floats("backbone.gru.bias_hh", shape: [3 * d]), inputs: d, outputs: 3 * d)
    }

    static let tensorNames = ["backbone.gru.weight_ih", "backbone.gru.weight_hh", "backbone.gru.bias_ih", "backbone.gru.bias_hh"]

    func userVector(rows: [Int], inputEmbeddings: [Float]) -> [Float] {
        var h = [Float](repeating: 0, count: d)
        guard !rows.isEmpty else { return h }
        var x = [Float](repeating: 0, count: rows.count * d)
        for (j, row) in rows.enumerated() {
            for c in 0..<d { x[j * d + c] = inputEmbeddings[row * d + c] }
        }
        let gi = input(x, rows: rows.count)
        for j in 0..<rows.count {
            let gh = hidden(h)
            let g = j * 3 * d
            for c in 0..<d {
                let r = Dense.sigmoid(gi[g + c] + gh[c])
                let z = Dense.sigmoid(gi[g + d + c] + gh[d + c])
                let n = tanhf(gi[g + 2 * d + c] + r * gh[2 * d + c])
                h[c] = (1 - z) * n + z * h[c]
            }
        }
        return h
    }
}

/// The DPR head (docs/checkpoint-format.md §2): projection, fusion MLP and the two gated expert groups.
struct DPRHead: Sendable {
    struct Expert: Sendable {
        let fc1: Linear
        let fc2: Linear
    }

    struct Group: Sendable {
        let gate: Linear
        let experts: [Expert]
    }

    let d: Int
    let indexDimension: Int
    let projection: Linear
    let fusion1: Linear
    let fusion2: Linear
    let positive: Group
    let negative: Group

    init(_ file: SafeTensorsFile, _ config: DPRConfiguration) throws(SteerError) {
        let d = config.d
        self.d = d
        indexDimension = config.indexDimension
        projection = try Linear(file, "head.proj", outputs: d, inputs: config.promptDimension)
        fusion1 = try Linear(file, "head.fusion.fc1", outputs: config.fusionHidden, inputs: 3 * d)
        fusion2 = try Linear(file, "head.fusion.fc2", outputs: d, inputs: config.fusionHidden)
        func group(_ name: String, _ count: Int) throws(SteerError) -> Group {
            var experts: [Expert] = []
            for k in 0..<count {
                let p = "head.\(name).experts.\(k)."
                experts.append(Expert(
                    fc1: try Linear(file, p + "fc1", outputs: config.expertHidden, inputs: d),
                    fc2: try Linear(file, p + "fc2", outputs: config.indexDimension, inputs: config.expertHidden)
                ))
            }
            return Group(gate: try Linear(file, "head.\(name).gate", outputs: count, inputs: d), experts: experts)
        }
        positive = try group("pos", config.positiveExperts)
        negative = try group("neg", config.negativeExperts)
    }

    static func tensorNames(positive: Int, negative: Int) -> [String] {
        var names: [String] = []
        for prefix in ["head.proj", "head.fusion.fc1", "head.fusion.fc2"] { names += [prefix + ".weight", prefix + ".bias"] }
        for (name, count) in [("pos", positive), ("neg", negative)] {
            names += ["head.\(name).gate.weight", "head.\(name).gate.bias"]
            for k in 0..<count {
                for layer in ["fc1", "fc2"] {
                    names += ["head.\(name).experts.\(k).\(layer).weight", "head.\(name).experts.\(k).\(layer).bias"]
                }
            }
        }
        return names
    }

    /// Δ_c ∈ R^D for one clause embedding `e` (384 floats) under the d-dimensional user vector `h`.
    func delta(h: [Float], embedding e: [Float], polarity: Polarity) -> [Float] {
        let z = projection(e)
        var u = h
        u.append(contentsOf: z)
        for c in 0..<d { u.append(h[c] * z[c]) }
        let hidden = fusion1(u, activation: Int32(STEER_ACT_RELU))
        let f = fusion2(hidden)
        let group = polarity == .positive ? positive : negative
        var gate = group.gate(f)
        gate.withUnsafeMutableBufferPointer { Dense.softmax($0.baseAddress!, count: $0.count) }
        var delta = [Float](repeating: 0, count: indexDimension)
        for (k, expert) in group.experts.enumerated() {
            let inner = expert.fc1(f, activation: Int32(STEER_ACT_RELU))
            let out = expert.fc2(inner)
            for c in 0..<indexDimension { delta[c] += gate[k] * out[c] }
        }
        return delta
    }
}
