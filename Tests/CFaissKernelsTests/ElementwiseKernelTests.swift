import CFaissKernels
import Testing

/// fvec_madd, fvec_madd_and_argmin, both fvec_add overloads and fvec_sub: element-wise, so every path must
/// be bit-identical to the Swift loop, for every length 0...67, unaligned pointers and aliased outputs.
@Suite struct ElementwiseKernelTests {
    private let bf: Float = -0.37

    /// faiss's madd_and_argmin scan: strict `<` from 1e20, -1 when nothing is below it.
    private func maddArgmin(_ c: [Float]) -> Int32 {
        var best: Int32 = -1
        var bestValue: Float = 1e20
        for (i, v) in c.enumerated() where v < bestValue {
            best = Int32(i)
            bestValue = v
        }
        return best
    }

    @Test(arguments: kernelPaths)
    func elementwiseKernels_areBitIdentical(path: KernelPath) {
        for n in allLengths {
            for kind in InputKind.allCases {
                let (xs, ys) = inputs(kind, count: n, salt: 99)
                for offset in pointerOffsets {
                    let a = GuardedBuffer(xs, offset: offset)
                    let b = GuardedBuffer(ys, offset: offset + 1)
                    var madd = GuardedBuffer(count: n, offset: offset + 2)
                    var maddMin = GuardedBuffer(count: n, offset: offset)
                    var sum = GuardedBuffer(count: n, offset: offset + 1)
                    var sumConstant = GuardedBuffer(count: n, offset: offset)
                    var difference = GuardedBuffer(count: n, offset: offset + 3)
                    var argmin: Int32 = -2
                    a.withPointer { pa in
                        b.withPointer { pb in
                            madd.withMutablePointer { steer_kernels_fvec_madd(path.c, n, pa, bf, pb, $0) }
                            argmin = maddMin.withMutablePointer { steer_kernels_fvec_madd_and_argmin(path.c, n, pa, bf, pb, $0) }
                            sum.withMutablePointer { steer_kernels_fvec_add(path.c, n, pa, pb, $0) }
                            sumConstant.withMutablePointer { steer_kernels_fvec_add_scalar(path.c, n, pa, bf, $0) }
                            difference.withMutablePointer { steer_kernels_fvec_sub(path.c, n, pa, pb, $0) }
                        }
                    }
                    let expectedMadd = zip(xs, ys).map { $0 + bf * $1 }
                    let context = "n=\(n) kind=\(kind) offset=\(offset)"
                    #expect(madd.values == expectedMadd, "\(context)")
                    #expect(maddMin.values == expectedMadd, "\(context)")
                    #expect(argmin == maddArgmin(expectedMadd), "\(context)")
                    #expect(sum.values == zip(xs, ys).map { $0 + $1 }, "\(context)")
                    #expect(sumConstant.values == xs.map { $0 + bf }, "\(context)")
                    #expect(difference.values == zip(xs, ys).map { $0 - $1 }, "\(context)")
                    #expect(madd.guardsIntact && maddMin.guardsIntact && sum.guardsIntact, "\(context)")
                    #expect(sumConstant.guardsIntact && difference.guardsIntact, "\(context)")
                }
            }
        }
    }

    /// faiss documents that c may alias a (and b for add/sub).
    @Test(arguments: kernelPaths)
    func outputsMayAliasInputs(path: KernelPath) {
        for n in allLengths {
            let xs = randomVector(n, seed: UInt64(n) + 1), ys = randomVector(n, seed: UInt64(n) + 2)
            var a = GuardedBuffer(xs, offset: 1)
            let b = GuardedBuffer(ys, offset: 0)
            b.withPointer { pb in a.withMutablePointer { steer_kernels_fvec_add(path.c, n, $0, pb, $0) } }
            #expect(a.values == zip(xs, ys).map { $0 + $1 }, "add n=\(n)")
            var c = GuardedBuffer(ys, offset: 1)
            let x = GuardedBuffer(xs, offset: 1)
            x.withPointer { px in c.withMutablePointer { steer_kernels_fvec_sub(path.c, n, px, $0, $0) } }
            #expect(c.values == zip(xs, ys).map { $0 - $1 }, "sub n=\(n)")
            var m = GuardedBuffer(xs, offset: 1)
            b.withPointer { pb in m.withMutablePointer { steer_kernels_fvec_madd(path.c, n, $0, bf, pb, $0) } }
            #expect(m.values == zip(xs, ys).map { $0 + bf * $1 }, "madd n=\(n)")
            var s = GuardedBuffer(xs, offset: 1)
            s.withMutablePointer { steer_kernels_fvec_add_scalar(path.c, n, $0, 2.5, $0) }
            #expect(s.values == xs.map { $0 + 2.5 }, "add constant n=\(n)")
            #expect(a.guardsIntact && c.guardsIntact && m.guardsIntact && s.guardsIntact)
        }
    }

    /// Edge cases of the argmin: nothing (n = 0), nothing below 1e20, NaNs, ties spread over lanes.
    @Test(arguments: kernelPaths)
    func maddArgmin_edgeCases(path: KernelPath) {
        func run(_ a: [Float], _ b: [Float]) -> Int32 {
            let pa = GuardedBuffer(a, offset: 1), pb = GuardedBuffer(b, offset: 1)
            var out = GuardedBuffer(count: a.count, offset: 1)
            return pa.withPointer { x in pb.withPointer { y in out.withMutablePointer { steer_kernels_fvec_madd_and_argmin(path.c, a.count, x, 1, y, $0) } } }
        }
        #expect(run([], []) == -1)
        #expect(run([Float](repeating: 2e20, count: 19), [Float](repeating: 0, count: 19)) == -1)
        var withNaN = [Float](repeating: 5, count: 21)
        withNaN[3] = .nan
        withNaN[12] = 4
        #expect(run(withNaN, [Float](repeating: 0, count: 21)) == 12)
        // The minimum 1 at indices 13, 5 (lane 5) and 20: the first index wins.
        var ties = [Float](repeating: 3, count: 23)
        ties[13] = 1
        ties[5] = 1
        ties[20] = 1
        #expect(run(ties, [Float](repeating: 0, count: 23)) == 5)
        // A minimum in the masked tail only.
        var tail = [Float](repeating: 3, count: 19)
        tail[18] = -1
        #expect(run(tail, [Float](repeating: 0, count: 19)) == 18)
    }
}
