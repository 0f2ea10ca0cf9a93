import CFaissKernels
import Testing

/// Index of the first smallest value (faiss's scan: strict `<` from +inf, 0 when none).
private func firstArgmin(_ values: [Float]) -> Int {
    var best = 0
    var bestValue = Float.infinity
    for (i, v) in values.enumerated() where v < bestValue {
        best = i
        bestValue = v
    }
    return best
}

/// The `_ny` kernels, the nearest-neighbour kernels (contiguous and transposed y), their `_ref` variants,
/// and compute_PQ_dis_tables_dsub2: every d in 0...67, several ny, unaligned pointers, guarded outputs.
@Suite struct BatchKernelTests {
    private let counts = [0, 1, 3, 8, 9, 17]

    /// Double-precision distances of x to each of ny contiguous rows of y, with the magnitudes to allow for.
    private func reference(_ xs: [Float], _ ys: [Float], d: Int, ny: Int, innerProduct: Bool)
        -> [(value: Double, magnitude: Double)]
    {
        (0..<ny).map { i in
            let row = ys[(i * d)..<(i * d + d)]
            let terms = zip(xs, row).map { innerProduct ? Double($0) * Double($1) : Double($0 - $1) * Double($0 - $1) }
            return (terms.reduce(0, +), terms.reduce(0) { $0 + abs($1) })
        }
    }

    @Test(arguments: kernelPaths)
    func distancesToManyVectors_matchDoubleReference(path: KernelPath) {
        for d in allLengths {
            for ny in counts {
                let x = GuardedBuffer(randomVector(d, seed: UInt64(d)), offset: 1)
                let y = GuardedBuffer(randomVector(d * ny, seed: UInt64(d * 100 + ny)), offset: 3)
                let context = "d=\(d) ny=\(ny)"
                for innerProduct in [false, true] {
                    var out = GuardedBuffer(count: ny, offset: 1)
                    x.withPointer { px in
                        y.withPointer { py in
                            out.withMutablePointer { po in
                                if innerProduct {
                                    steer_kernels_fvec_inner_products_ny(path.c, po, px, py, d, ny)
                                } else {
                                    steer_kernels_fvec_L2sqr_ny(path.c, po, px, py, d, ny)
                                }
                            }
                        }
                    }
                    let expected = reference(x.values, y.values, d: d, ny: ny, innerProduct: innerProduct)
                    #expect(out.guardsIntact, "\(context)")
                    for (got, want) in zip(out.values, expected) {
                        #expect(close(got, want.value, magnitude: want.magnitude), "\(context) ip=\(innerProduct)")
                    }
                }

                var tmp = GuardedBuffer(count: ny, offset: 1)
                let nearest = x.withPointer { px in
                    y.withPointer { py in
                        tmp.withMutablePointer { steer_kernels_fvec_L2sqr_ny_nearest(path.c, $0, px, py, d, ny) }
                    }
                }
                #expect(tmp.guardsIntact, "\(context)")
                #expect(nearest == firstArgmin(tmp.values), "\(context)")
                for (got, want) in zip(tmp.values, reference(x.values, y.values, d: d, ny: ny, innerProduct: false)) {
                    #expect(close(got, want.value, magnitude: want.magnitude), "\(context)")
                }
            }
        }
    }

    /// The `_ny` reference variants are in-order float loops: compared bit for bit.
    @Test func manyVectorReferenceVariants_areTheInOrderLoops() {
        for d in allLengths {
            for ny in counts {
                let xs = randomVector(d, seed: UInt64(d) + 5)
                let ys = randomVector(d * ny, seed: UInt64(d * 31 + ny))
                var l2 = [Float](repeating: 0, count: ny), ip = l2
                for i in 0..<ny {
                    for j in 0..<d {
                        let t = xs[j] - ys[i * d + j]
                        l2[i] += t * t
                        ip[i] += xs[j] * ys[i * d + j]
                    }
                }
                let x = GuardedBuffer(xs, offset: 1)
                let y = GuardedBuffer(ys, offset: 1)
                var outL2 = GuardedBuffer(count: ny, offset: 1)
                var outIP = GuardedBuffer(count: ny, offset: 0)
                var tmp = GuardedBuffer(count: ny, offset: 1)
                var nearest = -1
                x.withPointer { px in
                    y.withPointer { py in
                        outL2.withMutablePointer { steer_kernels_fvec_L2sqr_ny_ref($0, px, py, d, ny) }
                        outIP.withMutablePointer { steer_kernels_fvec_inner_products_ny_ref($0, px, py, d, ny) }
                        nearest = tmp.withMutablePointer { steer_kernels_fvec_L2sqr_ny_nearest_ref($0, px, py, d, ny) }
                    }
                }
                #expect(outL2.values == l2 && outIP.values == ip, "d=\(d) ny=\(ny)")
                #expect(tmp.values == l2 && nearest == firstArgmin(l2), "d=\(d) ny=\(ny)")
                #expect(outL2.guardsIntact && outIP.guardsIntact && tmp.guardsIntact)
            }
        }
    }

    /// |x|² + |y_i|² − 2⟨x, y_i⟩ with y stored transposed (component j of y_i at y[i + j · d_offset]). The
    /// AVX2 path keeps the scalar operation order, so all paths and the `_ref` variants are bit-identical to
    /// the in-order Swift loop.
    @Test(arguments: kernelPaths)
    func transposedDistances_areBitIdenticalToInOrderLoop(path: KernelPath) {
        for d in allLengths {
            for ny in counts {
                let dOffset = ny + 3
                let xs = randomVector(d, seed: UInt64(d) + 11)
                let ys = randomVector(d * dOffset, seed: UInt64(d * 7 + ny))
                let sqlen = (0..<ny).map { i in (0..<d).reduce(Float(0)) { $0 + ys[i + $1 * dOffset] * ys[i + $1 * dOffset] } }
                let xSqlen = xs.reduce(Float(0)) { $0 + $1 * $1 }
                let expected: [Float] = (0..<ny).map { i in
                    var dp: Float = 0
                    for j in 0..<d { dp += xs[j] * ys[i + j * dOffset] }
                    return xSqlen + sqlen[i] - 2 * dp
                }
                let x = GuardedBuffer(xs, offset: 1)
                let y = GuardedBuffer(ys, offset: 1)
                let yNorms = GuardedBuffer(sqlen, offset: 1)
                var tmp = GuardedBuffer(count: ny, offset: 1)
                var refOut = GuardedBuffer(count: ny, offset: 1)
                var refTmp = GuardedBuffer(count: ny, offset: 0)
                var nearest = -1, refNearest = -1
                x.withPointer { px in
                    y.withPointer { py in
                        yNorms.withPointer { pn in
                            nearest = tmp.withMutablePointer {
                                steer_kernels_fvec_L2sqr_ny_nearest_y_transposed(path.c, $0, px, py, pn, d, dOffset, ny)
                            }
                            refOut.withMutablePointer {
                                steer_kernels_fvec_L2sqr_ny_y_transposed_ref($0, px, py, pn, d, dOffset, ny)
                            }
                            refNearest = refTmp.withMutablePointer {
                                steer_kernels_fvec_L2sqr_ny_nearest_y_transposed_ref($0, px, py, pn, d, dOffset, ny)
                            }
                        }
                    }
                }
                let context = "d=\(d) ny=\(ny)"
                #expect(tmp.values == expected && refOut.values == expected && refTmp.values == expected, "\(context)")
                #expect(nearest == firstArgmin(expected) && refNearest == nearest, "\(context)")
                #expect(tmp.guardsIntact && refOut.guardsIntact && refTmp.guardsIntact, "\(context)")
            }
        }
    }

    @Test(arguments: kernelPaths)
    func nearest_ofNothing_isZero(path: KernelPath) {
        var tmp = GuardedBuffer(count: 0, offset: 1)
        let x = GuardedBuffer([1, 2], offset: 1)
        let n = x.withPointer { px in tmp.withMutablePointer { steer_kernels_fvec_L2sqr_ny_nearest(path.c, $0, px, px, 2, 0) } }
        #expect(n == 0)
        #expect(tmp.guardsIntact)
    }

    /// Ties go to the first index on every path.
    @Test(arguments: kernelPaths)
    func nearest_breaksTiesTowardsTheFirst(path: KernelPath) {
        let d = 4
        let rows: [[Float]] = [[5, 5, 5, 5], [1, 1, 1, 1], [9, 9, 9, 9], [1, 1, 1, 1], [1, 1, 1, 1]]
        let y = GuardedBuffer(rows.flatMap { $0 }, offset: 1)
        let x = GuardedBuffer([1, 1, 1, 1], offset: 1)
        var tmp = GuardedBuffer(count: rows.count, offset: 1)
        let n = x.withPointer { px in
            y.withPointer { py in tmp.withMutablePointer { steer_kernels_fvec_L2sqr_ny_nearest(path.c, $0, px, py, d, rows.count) } }
        }
        #expect(n == 1)
    }

    /// PQ tables for 2-d sub-vectors: each entry is one product pair added once, the same on every path.
    @Test(arguments: kernelPaths)
    func pqTablesDsub2_areBitIdenticalToInOrderLoop(path: KernelPath) {
        for d in [0, 1, 2, 4, 7, 8, 16, 34] {
            for ksub in [1, 3, 7, 8, 9, 16, 17, 256] {
                for nx in [0, 1, 3] {
                    let m = d / 2
                    let centroidValues = randomVector(m * ksub * 2, seed: UInt64(d * 1000 + ksub))
                    let xs = randomVector(nx * d, seed: UInt64(nx * 100 + d))
                    for innerProduct in [false, true] {
                        var expected = [Float](repeating: 0, count: nx * m * ksub)
                        for i in 0..<nx {
                            for sub in 0..<m {
                                let x0 = xs[i * d + 2 * sub], x1 = xs[i * d + 2 * sub + 1]
                                for k in 0..<ksub {
                                    let c0 = centroidValues[(sub * ksub + k) * 2], c1 = centroidValues[(sub * ksub + k) * 2 + 1]
                                    let t0 = x0 - c0, t1 = x1 - c1
                                    expected[(i * m + sub) * ksub + k] = innerProduct ? x0 * c0 + x1 * c1 : t0 * t0 + t1 * t1
                                }
                            }
                        }
                        let centroids = GuardedBuffer(centroidValues, offset: 1)
                        let x = GuardedBuffer(xs, offset: 1)
                        var out = GuardedBuffer(count: expected.count, offset: 1)
                        centroids.withPointer { pc in
                            x.withPointer { px in
                                out.withMutablePointer {
                                    steer_kernels_compute_PQ_dis_tables_dsub2(path.c, d, ksub, pc, nx, px, innerProduct ? 1 : 0, $0)
                                }
                            }
                        }
                        #expect(out.values == expected, "d=\(d) ksub=\(ksub) nx=\(nx) ip=\(innerProduct)")
                        #expect(out.guardsIntact)
                    }
                }
            }
        }
    }
}
