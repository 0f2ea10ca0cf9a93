import CBLAS
import SteerCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A PyTorch linear layer `y = W x + b` with `W` of shape `[out, in]`, row-major. Rows of a batch are
/// multiplied with OpenBLAS (`sgemv` for one row, `sgemm` for several).
struct Linear: Sendable {
    let weight: [Float]
    let bias: [Float]
    let inputs: Int
    let outputs: Int

    init(weight: [Float], bias: [Float], inputs: Int, outputs: Int) {
        precondition(weight.count == inputs * outputs && bias.count == outputs)
        self.weight = weight
        self.bias = bias
        self.inputs = inputs
        self.outputs = outputs
    }

    /// Loads `<prefix>.weight` `[out, in]` and `<prefix>.bias` `[out]`, checking both shapes.
    init(_ file: SafeTensorsFile, _ prefix: String, outputs: Int, inputs: Int) throws(SteerError) {
        self.init(
            weight: try file.floats(prefix + ".weight", shape: [outputs, inputs]),
            bias: try file.floats(prefix + ".bias", shape: [outputs]),
            inputs: inputs, outputs: outputs
        )
    }

    /// Stacks layers with the same input width into one (outputs concatenated in order).
    static func stacked(_ layers: [Linear]) -> Linear {
        Linear(
            weight: layers.flatMap(\.weight), bias: layers.flatMap(\.bias),
            inputs: layers[0].inputs, outputs: layers.reduce(0) { $0 + $1.outputs }
        )
    }

    /// `y[r] = W x[r] + b` for `rows` rows; `x` is `rows × inputs`, `y` is `rows × outputs`, row-major.
    func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>) {
        for r in 0..<rows {
            bias.withUnsafeBufferPointer { b in (y + r * outputs).update(from: b.baseAddress!, count: outputs) }
        }
        weight.withUnsafeBufferPointer { w in
            if rows == 1 {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(outputs), Int32(inputs), 1, w.baseAddress, Int32(inputs),
                            x, 1, 1, y, 1)
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outputs), Int32(inputs), 1,
                            x, Int32(inputs), w.baseAddress, Int32(inputs), 1, y, Int32(outputs))
            }
        }
    }

    /// Array form of `apply`.
    func callAsFunction(_ x: [Float], rows: Int = 1) -> [Float] {
        precondition(x.count == rows * inputs)
        var y = [Float](repeating: 0, count: rows * outputs)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in apply(xp.baseAddress!, rows: rows, into: yp.baseAddress!) }
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
