import CModelKernels
import Foundation
import SteerCore
import Testing
@testable import SteerModel

/// CModelKernels' packed small-M products against a naive double-precision reference, for every
/// instruction set this CPU has, odd shapes included (panel and row-block remainders).
@Suite struct KernelTests {
    static func reference(_ x: [Float], m: Int, k: Int, _ w: [Float], n: Int, _ bias: [Float], activation: Int32) -> [Float] {
        var y = [Float](repeating: 0, count: m * n)
        for r in 0..<m {
            for j in 0..<n {
                var sum = Double(bias[j])
                for c in 0..<k { sum += Double(x[r * k + c]) * Double(w[j * k + c]) }
                var v = Float(sum)
                if activation == Int32(STEER_ACT_RELU) { v = max(v, 0) }
                if activation == Int32(STEER_ACT_GELU) { v = Float(0.5 * Double(v) * (1 + erf(Double(v) / 2.0.squareRoot()))) }
                y[r * n + j] = v
            }
        }
        return y
    }

    @Test func everyInstructionSetMatchesTheReference() {
        var generator = SeededGenerator(seed: 7)
        var checked = 0
        for (m, n, k) in [(1, 1, 1), (1, 64, 384), (3, 17, 7), (6, 130, 33), (7, 100, 384), (13, 64, 5), (4, 1536, 384), (2, 384, 1536)] {
            let x = (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &generator) }
            let w = (0..<(n * k)).map { _ in Float.random(in: -1...1, using: &generator) }
            let bias = (0..<n).map { _ in Float.random(in: -1...1, using: &generator) }
            var packed = [Float](repeating: .nan, count: steer_packed_size(Int32(n), Int32(k)))
            steer_pack_weights(w, Int32(n), Int32(k), &packed)
            for activation in [STEER_ACT_NONE, STEER_ACT_RELU, STEER_ACT_GELU].map(Int32.init) {
                let expected = Self.reference(x, m: m, k: k, w, n: n, bias, activation: activation)
                for isa in [STEER_ISA_SCALAR, STEER_ISA_AVX2, STEER_ISA_AVX512].map(Int32.init) {
                    // one padding column past n on every row must stay untouched
                    var y = [Float](repeating: 99, count: m * (n + 1))
                    guard steer_linear_isa(isa, x, Int32(m), Int32(k), Int32(k), packed, Int32(n), bias, activation, &y, Int32(n + 1)) == 0 else {
                        continue  // not on this CPU
                    }
                    let got = (0..<m).flatMap { r in y[(r * (n + 1))..<(r * (n + 1) + n)] }
                    let tolerance = Float(k).squareRoot() * 2e-6 + 1e-6
                    #expect(maxAbsDifference(got, expected) <= tolerance, "isa \(isa) m \(m) n \(n) k \(k) act \(activation)")
                    #expect((0..<m).allSatisfy { y[$0 * (n + 1) + n] == 99 })
                    checked += 1
                }
            }
        }
        #expect(checked >= 24)
    }

    @Test func unsupportedInstructionSetIsRefused() {
        var y: [Float] = [0]
        #expect(steer_linear_isa(3, [1], 1, 1, 1, [Float](repeating: 1, count: 64), 1, nil, 0, &y, 1) == -1)
        #expect(["avx512", "avx2", "scalar"].contains(String(cString: steer_linear_isa_name())))
    }

    @Test func packedAndBLASLinearLayersAgree() {
        var generator = SeededGenerator(seed: 3)
        let (n, k, m) = (96, 40, 5)
        let w = (0..<(n * k)).map { _ in Float.random(in: -1...1, using: &generator) }
        let b = (0..<n).map { _ in Float.random(in: -1...1, using: &generator) }
        let x = (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &generator) }
        let packed = Linear(weight: w, bias: b, inputs: k, outputs: n, backend: .packed)
        let blas = Linear(weight: w, bias: b, inputs: k, outputs: n, backend: .blas)
        for rows in [1, m] {
            let input = Array(x.prefix(rows * k))
            for activation in [STEER_ACT_NONE, STEER_ACT_RELU, STEER_ACT_GELU].map(Int32.init) {
                #expect(maxAbsDifference(packed(input, rows: rows, activation: activation), blas(input, rows: rows, activation: activation)) <= 1e-5)
            }
        }
    }
}
