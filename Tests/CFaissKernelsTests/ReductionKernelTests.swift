import CFaissKernels
import Testing

/// fvec_L2sqr, fvec_inner_product, fvec_L1, fvec_Linf, fvec_norm_L2sqr and their `_ref` variants, on every
/// length 0...67, aligned and unaligned pointers, four input families.
@Suite struct ReductionKernelTests {
    /// Runs body for every length, offset pair and input kind with guarded x and y buffers.
    private func forEachInput(
        _ body: (_ x: GuardedBuffer, _ y: GuardedBuffer, _ context: String) throws -> Void
    ) rethrows {
        for n in allLengths {
            for kind in InputKind.allCases {
                let (xs, ys) = inputs(kind, count: n)
                for xOffset in pointerOffsets {
                    for yOffset in pointerOffsets {
                        let x = GuardedBuffer(xs, offset: xOffset)
                        let y = GuardedBuffer(ys, offset: yOffset + 2)
                        try body(x, y, "n=\(n) kind=\(kind) offsets=\(xOffset),\(yOffset + 2)")
                    }
                }
            }
        }
    }

    @Test(arguments: kernelPaths)
    func squaredL2_matchesDoubleReference(path: KernelPath) {
        forEachInput { x, y, context in
            let (xs, ys) = (x.values, y.values)
            let terms = zip(xs, ys).map { Double($0 - $1) * Double($0 - $1) }
            let reference = terms.reduce(0, +)
            let got = x.withPointer { px in y.withPointer { py in steer_kernels_fvec_L2sqr(path.c, px, py, xs.count) } }
            #expect(close(got, reference, magnitude: reference), "\(context): \(got) vs \(reference)")
        }
    }

    @Test(arguments: kernelPaths)
    func innerProduct_matchesDoubleReference(path: KernelPath) {
        forEachInput { x, y, context in
            let (xs, ys) = (x.values, y.values)
            let terms = zip(xs, ys).map { Double($0) * Double($1) }
            let reference = terms.reduce(0, +)
            let magnitude = terms.reduce(0) { $0 + abs($1) }
            let got = x.withPointer { px in
                y.withPointer { py in steer_kernels_fvec_inner_product(path.c, px, py, xs.count) }
            }
            #expect(close(got, reference, magnitude: magnitude), "\(context): \(got) vs \(reference)")
        }
    }

    @Test(arguments: kernelPaths)
    func l1_matchesDoubleReference(path: KernelPath) {
        forEachInput { x, y, context in
            let (xs, ys) = (x.values, y.values)
            let reference = zip(xs, ys).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) }
            let got = x.withPointer { px in y.withPointer { py in steer_kernels_fvec_L1(path.c, px, py, xs.count) } }
            #expect(close(got, reference, magnitude: reference), "\(context): \(got) vs \(reference)")
        }
    }

    /// A maximum involves no rounding beyond the subtraction, so every path is exact.
    @Test(arguments: kernelPaths)
    func lInfinity_isExact(path: KernelPath) {
        forEachInput { x, y, context in
            let (xs, ys) = (x.values, y.values)
            let reference = zip(xs, ys).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
            let got = x.withPointer { px in y.withPointer { py in steer_kernels_fvec_Linf(path.c, px, py, xs.count) } }
            #expect(got == reference, "\(context)")
        }
    }

    @Test(arguments: kernelPaths)
    func squaredNorm_matchesDoubleReference(path: KernelPath) {
        forEachInput { x, _, context in
            let xs = x.values
            let reference = xs.reduce(0.0) { $0 + Double($1) * Double($1) }
            let got = x.withPointer { steer_kernels_fvec_norm_L2sqr(path.c, $0, xs.count) }
            #expect(close(got, reference, magnitude: reference), "\(context): \(got) vs \(reference)")
        }
    }

    /// The `_ref` variants add in index order in float (norm: in double), exactly as faiss's reference
    /// loops do, so they are compared bit for bit with the same loops written in Swift.
    @Test func referenceVariants_areTheInOrderLoops() {
        forEachInput { x, y, context in
            let (xs, ys) = (x.values, y.values)
            var l2: Float = 0, ip: Float = 0, l1: Float = 0, linf: Float = 0
            var norm: Double = 0
            for (a, b) in zip(xs, ys) {
                let t = a - b
                l2 += t * t
                ip += a * b
                l1 += abs(t)
                linf = max(linf, abs(t))
                norm += Double(a * a)
            }
            x.withPointer { px in
                y.withPointer { py in
                    #expect(steer_kernels_fvec_L2sqr_ref(px, py, xs.count) == l2, "\(context)")
                    #expect(steer_kernels_fvec_inner_product_ref(px, py, xs.count) == ip, "\(context)")
                    #expect(steer_kernels_fvec_L1_ref(px, py, xs.count) == l1, "\(context)")
                    #expect(steer_kernels_fvec_Linf_ref(px, py, xs.count) == linf, "\(context)")
                    #expect(steer_kernels_fvec_norm_L2sqr_ref(px, xs.count) == Float(norm), "\(context)")
                }
            }
        }
    }

    @Test(arguments: kernelPaths)
    func emptyVectors_giveZero(path: KernelPath) {
        let x = GuardedBuffer([], offset: 1)
        x.withPointer { p in
            #expect(steer_kernels_fvec_L2sqr(path.c, p, p, 0) == 0)
            #expect(steer_kernels_fvec_inner_product(path.c, p, p, 0) == 0)
            #expect(steer_kernels_fvec_L1(path.c, p, p, 0) == 0)
            #expect(steer_kernels_fvec_Linf(path.c, p, p, 0) == 0)
            #expect(steer_kernels_fvec_norm_L2sqr(path.c, p, 0) == 0)
        }
    }

    /// Longer vectors exercise the 32-lane main loop many times over.
    @Test(arguments: kernelPaths)
    func longVectors_matchDoubleReference(path: KernelPath) {
        for n in [128, 384, 1000, 4099] {
            let x = GuardedBuffer(randomVector(n, seed: UInt64(n)), offset: 1)
            let y = GuardedBuffer(randomVector(n, seed: UInt64(n) + 7), offset: 3)
            let (xs, ys) = (x.values, y.values)
            let ipTerms = zip(xs, ys).map { Double($0) * Double($1) }
            let l2 = zip(xs, ys).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
            // Worst-case error of a float sum of n terms is about n · 2^-24 of the magnitudes' sum.
            let relative = max(1e-5, Double(n) * 0x1p-24)
            let ipMagnitude = ipTerms.reduce(0) { $0 + abs($1) }
            x.withPointer { px in
                y.withPointer { py in
                    #expect(abs(Double(steer_kernels_fvec_L2sqr(path.c, px, py, n)) - l2) <= relative * l2)
                    #expect(abs(Double(steer_kernels_fvec_inner_product(path.c, px, py, n)) - ipTerms.reduce(0, +))
                            <= relative * ipMagnitude)
                }
            }
        }
    }
}
