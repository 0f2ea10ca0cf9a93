import CFaissKernels
import Foundation
import Testing

/// Tests that read or change the process-wide dispatcher state (forced scalar, call counting), and the
/// integration tests through real faiss. Serialized so they never see each other's switches; the kernel
/// suites only use explicit paths and do not depend on this state.
@Suite(.serialized) struct DispatchAndFaissTests {
    /// The replacements are compiled exactly when the headers are faiss 1.7.3 (and the target x86-64).
    @Test func versionGuard_matchesTheFaissHeaders() {
        let version = steer_kernels_faiss_version()
        #if arch(x86_64)
        #expect(steer_kernels_compiled_for_faiss() == (version == 10703 ? 1 : 0))
        #else
        #expect(steer_kernels_compiled_for_faiss() == 0)
        #endif
        #expect(steer_kernels_replaced_count() == 25)
        #expect(steer_kernels_replaced_symbol(25) == nil)
    }

    /// Our symbol list must equal the strong symbols of libfaiss.a's distances_simd.cpp.o: one missing
    /// would make the linker pull the member (duplicate symbols); one extra means the member changed.
    @Test func replacedSymbols_equalTheArchiveMember() throws {
        let archive = "/usr/lib/x86_64-linux-gnu/libfaiss.a"
        guard steer_kernels_compiled_for_faiss() == 1, FileManager.default.fileExists(atPath: archive) else { return }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nm")
        process.arguments = ["--defined-only", archive]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try #require(process.terminationStatus == 0)

        var inMember = false
        var memberSymbols = Set<String>()
        for line in output.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasSuffix(":") {
                inMember = line == "distances_simd.cpp.o:"
                continue
            }
            let fields = line.split(separator: " ")
            if inMember, fields.count == 3, fields[1] == "T" { memberSymbols.insert(String(fields[2])) }
        }
        let ours = Set((0..<steer_kernels_replaced_count()).compactMap { steer_kernels_replaced_symbol($0).map { String(cString: $0) } })
        #expect(memberSymbols == ours, "archive only: \(memberSymbols.subtracting(ours)); ours only: \(ours.subtracting(memberSymbols))")
    }

    @Test func forceScalar_switchesTheDispatcherAndBack() {
        let initial = String(cString: steer_kernels_isa())
        steer_kernels_force_scalar(1)
        #expect(String(cString: steer_kernels_isa()) == "scalar")
        #expect(steer_kernels_active() == 0)
        steer_kernels_force_scalar(0)
        #expect(String(cString: steer_kernels_isa()) == initial)
        let compiled = steer_kernels_compiled_for_faiss() == 1
        #expect(steer_kernels_active() == (compiled && initial != "scalar" ? 1 : 0))
        let env = ProcessInfo.processInfo.environment["STEER_FAISS_KERNELS"]
        let expected = steer_kernels_cpu_has_avx2() == 0 || env == "scalar" ? "scalar"
            : steer_kernels_cpu_has_avx512() == 1 && env == "avx512" ? "avx512" : "avx2+fma"
        #expect(initial == expected)
        // AVX-512 only with AVX2 (the tier uses the AVX2 element-wise kernels).
        #expect(steer_kernels_cpu_has_avx512() == 0 || steer_kernels_cpu_has_avx2() == 1)
    }

    /// The direct kernels (Steer's HNSW search and insertion call them without dispatch) are the ones the
    /// dispatcher runs: bit-identical results for lengths 0 ... 67, unaligned, on both settings of the
    /// scalar switch.
    @Test func pairKernel_isTheDispatchedKernel() throws {
        defer { steer_kernels_force_scalar(0) }
        for forced in [Int32(1), 0] {
            steer_kernels_force_scalar(forced)
            let ip = try #require(steer_kernels_pair_kernel(1))
            let l2 = try #require(steer_kernels_pair_kernel(0))
            let isa = String(cString: steer_kernels_isa())
            let explicit = isa == "scalar" ? STEER_KERNELS_PATH_SCALAR : isa == "avx512" ? STEER_KERNELS_PATH_AVX512 : STEER_KERNELS_PATH_AVX2
            #expect(forced == 0 || isa == "scalar")
            for n in 0...67 {
                for kind in [InputKind.random, .cancelling] {
                    let (x, y) = inputs(kind, count: n, salt: 77)
                    let gx = GuardedBuffer(x, offset: 1 + n % 3), gy = GuardedBuffer(y, offset: 2)
                    try gx.withPointer { px in
                        try gy.withPointer { py in
                            let direct = (ip(px, py, n), l2(px, py, n))
                            let dispatched = (steer_kernels_fvec_inner_product(STEER_KERNELS_PATH_DISPATCH, px, py, n),
                                              steer_kernels_fvec_L2sqr(STEER_KERNELS_PATH_DISPATCH, px, py, n))
                            let chosen = (steer_kernels_fvec_inner_product(explicit, px, py, n),
                                          steer_kernels_fvec_L2sqr(explicit, px, py, n))
                            #expect(direct.0.bitPattern == dispatched.0.bitPattern, "ip n=\(n) forced=\(forced)")
                            #expect(direct.1.bitPattern == dispatched.1.bitPattern, "l2 n=\(n) forced=\(forced)")
                            #expect(direct.0.bitPattern == chosen.0.bitPattern, "ip n=\(n) forced=\(forced)")
                            #expect(direct.1.bitPattern == chosen.1.bitPattern, "l2 n=\(n) forced=\(forced)")
                            try #require(direct.0.isFinite && direct.1.isFinite)
                        }
                    }
                }
            }
        }
    }

    /// Brute-force top-k in double precision: (distance, label) sorted best first.
    private func bruteForce(_ xb: [Float], _ query: ArraySlice<Float>, d: Int, k: Int, innerProduct: Bool) -> [(Double, Int64)] {
        let nb = xb.count / d
        let scored: [(Double, Int64)] = (0..<nb).map { i in
            var s = 0.0
            for (j, q) in query.enumerated() {
                let b = Double(xb[i * d + j])
                s += innerProduct ? b * Double(q) : (b - Double(q)) * (b - Double(q))
            }
            return (s, Int64(i))
        }
        let sorted = scored.sorted { innerProduct ? $0.0 > $1.0 : $0.0 < $1.0 }
        return Array(sorted.prefix(k))
    }

    /// Real faiss indexes (flat and exhaustive IVF, inner product and L2) return the brute-force neighbours
    /// with the kernels on and with them forced scalar, and faiss's searches go through our functions.
    @Test(arguments: [STEER_KERNELS_SELFTEST_FLAT, STEER_KERNELS_SELFTEST_IVF_FLAT], [true, false])
    func faissSearch_throughReplacedKernels_isExact(index: steer_kernels_selftest_index, innerProduct: Bool) throws {
        let (d, nb, nq, k) = (37, 1500, 6, 10)
        let xb = randomVector(nb * d, seed: 4242)
        let xq = randomVector(nq * d, seed: 777)
        defer {
            steer_kernels_force_scalar(0)
            steer_kernels_set_counting(0)
        }
        steer_kernels_set_counting(1)
        for forceScalar in [false, true] {
            steer_kernels_force_scalar(forceScalar ? 1 : 0)
            var distances = [Float](repeating: 0, count: nq * k)
            var labels = [Int64](repeating: -1, count: nq * k)
            var error: UnsafeMutablePointer<CChar>?
            let callsBefore = steer_kernels_call_count()
            let rc = steer_kernels_selftest_faiss(index, innerProduct ? 1 : 0, 8, xb, nb, xq, nq, d, k, &distances, &labels, &error)
            let message = error.map { String(cString: $0) } ?? ""
            free(error)
            try #require(rc == 0, "faiss: \(message)")
            if steer_kernels_compiled_for_faiss() == 1 {
                #expect(steer_kernels_call_count() > callsBefore + UInt64(nq), "faiss did not call the replaced kernels")
            }
            for q in 0..<nq {
                let expected = bruteForce(xb, xq[(q * d)..<(q * d + d)], d: d, k: k, innerProduct: innerProduct)
                for r in 0..<k {
                    let (want, wantLabel) = expected[r]
                    let got = distances[q * k + r]
                    #expect(abs(Double(got) - want) <= 1e-4 * max(1, abs(want)), "q=\(q) r=\(r) scalar=\(forceScalar)")
                    #expect(labels[q * k + r] == wantLabel, "q=\(q) r=\(r) scalar=\(forceScalar)")
                }
            }
        }
    }
}
