import CBLAS
import CModelKernels
import Foundation
import SteerCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A PyTorch linear layer `y = act(W x + b)` with `W` of shape `[out, in]`. The weights are packed once
/// into column panels for CModelKernels' small-M kernels (AVX-512 / AVX2 / scalar, chosen at run time).
/// `STEER_MODEL_GEMM=blas` in the environment switches every layer to OpenBLAS instead (for comparisons
/// in benchmarks; tests do not depend on it).
struct Linear: Sendable {
    enum Backend: Sendable { case packed, blas }

    /// Chosen once per process from `STEER_MODEL_GEMM`.
    static let backend: Backend = ProcessInfo.processInfo.environment["STEER_MODEL_GEMM"] == "blas" ? .blas : .packed

    /// The packed weights (`backend == .packed`) or the row-major `[out, in]` weights (`.blas`).
    let weights: [Float]
    let bias: [Float]
    let inputs: Int
    let outputs: Int
    let backend: Backend

    init(weight: [Float], bias: [Float], inputs: Int, outputs: Int, backend: Backend = Linear.backend) {
        precondition(weight.count == inputs * outputs && bias.count == outputs)
        self.bias = bias
        self.inputs = inputs
        self.outputs = outputs
        self.backend = backend
        switch backend {
        case .blas:
            weights = weight
        case .packed:
            var packed = [Float](repeating: 0, count: steer_packed_size(Int32(outputs), Int32(inputs)))
            weight.withUnsafeBufferPointer { w in
                packed.withUnsafeMutableBufferPointer { steer_pack_weights(w.baseAddress!, Int32(outputs), Int32(inputs), $0.baseAddress!) }
            }
            weights = packed
        }
    }

    /// Reads `<prefix>.weight` `[out, in]` and `<prefix>.bias` `[out]`, checking both shapes.
    static func tensors(_ file: SafeTensorsFile, _ prefix: String, outputs: Int, inputs: Int) throws(SteerError) -> (weight: [Float], bias: [Float]) {
        (try file.floats(prefix + ".weight", shape: [outputs, inputs]), try file.floats(prefix + ".bias", shape: [outputs]))
    }

    /// Loads `<prefix>.weight` and `<prefix>.bias`.
    init(_ file: SafeTensorsFile, _ prefix: String, outputs: Int, inputs: Int) throws(SteerError) {
        let (weight, bias) = try Self.tensors(file, prefix, outputs: outputs, inputs: inputs)
        self.init(weight: weight, bias: bias, inputs: inputs, outputs: outputs)
    }

    /// Several layers with the same input width as one (outputs concatenated in order), e.g. q, k, v.
    init(_ file: SafeTensorsFile, stacking prefixes: [String], outputs: Int, inputs: Int) throws(SteerError) {
        var weight: [Float] = []
        var bias: [Float] = []
        for prefix in prefixes {
            let (w, b) = try Self.tensors(file, prefix, outputs: outputs, inputs: inputs)
            weight += w
            bias += b
        }
        self.init(weight: weight, bias: bias, inputs: inputs, outputs: outputs * prefixes.count)
    }

    /// `y[r] = act(W x[r] + b)` for `rows` rows; `x` is `rows × inputs`, `y` is `rows × outputs`, row-major.
    func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, activation: Int32 = Int32(STEER_ACT_NONE)) {
        guard rows > 0 else { return }
        switch backend {
        case .packed:
            weights.withUnsafeBufferPointer { w in
                bias.withUnsafeBufferPointer { b in
                    steer_linear(x, Int32(rows), Int32(inputs), Int32(inputs), w.baseAddress!, Int32(outputs), b.baseAddress!,
                                 activation, y, Int32(outputs))
                }
            }
        case .blas:
            for r in 0..<rows {
                bias.withUnsafeBufferPointer { b in (y + r * outputs).update(from: b.baseAddress!, count: outputs) }
            }
            weights.withUnsafeBufferPointer { w in
                if rows == 1 {
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(outputs), Int32(inputs), 1, w.baseAddress, Int32(inputs),
                                x, 1, 1, y, 1)
                } else {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outputs), Int32(inputs), 1,
                                x, Int32(inputs), w.baseAddress, Int32(inputs), 1, y, Int32(outputs))
                }
            }
            switch activation {
            case Int32(STEER_ACT_RELU):
                for i in 0..<(rows * outputs) where y[i] < 0 { y[i] = 0 }
            case Int32(STEER_ACT_GELU):
                for i in 0..<(rows * outputs) { y[i] = 0.5 * y[i] * (1 + erff(y[i] * 0.70710678118654752)) }
            default:
                break
            }
        }
    }

    /// Array form of `apply`.
    func callAsFunction(_ x: [Float], rows: Int = 1, activation: Int32 = Int32(STEER_ACT_NONE)) -> [Float] {
        precondition(x.count == rows * inputs)
        var y = [Float](repeating: 0, count: rows * outputs)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in apply(xp.baseAddress!, rows: rows, into: yp.baseAddress!, activation: activation) }
        }
        return y
    }
}

/// Small dense helpers shared by the encoders (all row-major, float32).
enum Dense {
    /// Row-wise LayerNorm in place: `(x − mean) / sqrt(var + eps) ⊙ w + b`, biased variance, the
    /// statistics accumulated in Double.
    static func layerNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, weight: [Float], bias: [Float], eps: Float) {
        for r in 0..<rows {
            let row = x + r * width
            var sum = 0.0
            for i in 0..<width { sum += Double(row[i]) }
            let mean = sum / Double(width)
            var squares = 0.0
            for i in 0..<width {
                let delta = Double(row[i]) - mean
                squares += delta * delta
            }
            let inverse = 1 / (squares / Double(width) + Double(eps)).squareRoot()
            for i in 0..<width {
                row[i] = Float((Double(row[i]) - mean) * inverse) * weight[i] + bias[i]
            }
        }
    }

    static func layerNorm(_ x: inout [Float], rows: Int, width: Int, weight: [Float], bias: [Float], eps: Float) {
        x.withUnsafeMutableBufferPointer { p in
            layerNorm(p.baseAddress!, rows: rows, width: width, weight: weight, bias: bias, eps: eps)
        }
    }

    /// Max-subtracted softmax in place over `count` values.
    static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        var top = -Float.infinity
        for i in 0..<count { top = max(top, x[i]) }
        var total: Float = 0
        for i in 0..<count {
            x[i] = expf(x[i] - top)
            total += x[i]
        }
        for i in 0..<count { x[i] /= total }
    }

    static func relu(_ x: inout [Float]) {
        for i in x.indices where x[i] < 0 { x[i] = 0 }
    }

    static func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

    /// `a · b` over `count` floats.
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        cblas_sdot(Int32(count), a, 1, b, 1)
    }
}
