import CFaissKernels

/// Kernel paths every kernel test runs: scalar, AVX2+FMA and AVX-512 (each only where the CPU has it) and
/// the dispatcher.
let kernelPaths: [KernelPath] = {
    var paths: [KernelPath] = [.scalar, .dispatch]
    if steer_kernels_cpu_has_avx2() == 1 { paths.append(.avx2) }
    if steer_kernels_cpu_has_avx512() == 1 { paths.append(.avx512) }
    return paths
}()

/// A Swift name for `steer_kernels_path`, so test arguments print readably.
enum KernelPath: String, Sendable {
    case dispatch, scalar, avx2, avx512

    var c: steer_kernels_path {
        switch self {
        case .dispatch: STEER_KERNELS_PATH_DISPATCH
        case .scalar: STEER_KERNELS_PATH_SCALAR
        case .avx2: STEER_KERNELS_PATH_AVX2
        case .avx512: STEER_KERNELS_PATH_AVX512
        }
    }
}

/// All lengths the kernel tests cover: every length from 0 through 67 (all tails of the 8-, 16-, 32- and
/// 64-lane loops).
let allLengths = Array(0...67)

/// Float offsets of input buffers from their (16-byte aligned) allocation: 1 makes every pointer
/// unaligned for 32-byte vectors.
let pointerOffsets = [0, 1]

/// Guard value placed around every buffer: a kernel that reads past its input shows up as a huge result,
/// one that writes past its output changes it.
let guardValue: Float = 1e30

/// Floats stored after each buffer's end.
let guardCount = 9

/// Deterministic SplitMix64, so every failure reproduces.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The input families each kernel sees.
enum InputKind: String, CaseIterable, Sendable {
    /// Uniform in [-1, 1).
    case random
    /// Every element 0 (and -0 in y).
    case zeros
    /// y equal to x.
    case equal
    /// Alternating signs, magnitudes up to 1e4: large cancellation in sums.
    case cancelling
}

/// Two input vectors of length n for a kind, seeded by (n, kind, salt).
func inputs(_ kind: InputKind, count n: Int, salt: UInt64 = 0) -> (x: [Float], y: [Float]) {
    var rng = SplitMix64(seed: UInt64(n) &* 1_000_003 &+ UInt64(kind.hashValue & 0xFFFF) &+ salt)
    func uniform() -> Float { Float.random(in: -1..<1, using: &rng) }
    switch kind {
    case .random:
        return ((0..<n).map { _ in uniform() }, (0..<n).map { _ in uniform() })
    case .zeros:
        return ([Float](repeating: 0, count: n), [Float](repeating: -0.0, count: n))
    case .equal:
        let x = (0..<n).map { _ in uniform() * 10 }
        return (x, x)
    case .cancelling:
        let x = (0..<n).map { i in Float(i % 2 == 0 ? 1 : -1) * Float.random(in: 1..<1e4, using: &rng) }
        let y = (0..<n).map { _ in Float.random(in: 1..<1e4, using: &rng) }
        return (x, y)
    }
}

/// Deterministic vector of n floats in [-1, 1).
func randomVector(_ n: Int, seed: UInt64) -> [Float] {
    var rng = SplitMix64(seed: seed)
    return (0..<n).map { _ in Float.random(in: -1..<1, using: &rng) }
}

/// A buffer with `offset` guard floats before and `guardCount` after its values.
struct GuardedBuffer {
    private(set) var storage: [Float]
    let offset: Int
    let count: Int

    init(_ values: [Float], offset: Int) {
        storage = [Float](repeating: guardValue, count: offset) + values + [Float](repeating: guardValue, count: guardCount)
        self.offset = offset
        count = values.count
    }

    init(count: Int, offset: Int) {
        self.init([Float](repeating: guardValue, count: count), offset: offset)
    }

    var values: [Float] { Array(storage[offset..<(offset + count)]) }

    /// True when nothing outside the values changed.
    var guardsIntact: Bool {
        storage[..<offset].allSatisfy { $0 == guardValue }
            && storage[(offset + count)...].allSatisfy { $0 == guardValue }
    }

    func withPointer<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        try storage.withUnsafeBufferPointer { try body($0.baseAddress! + offset) }
    }

    mutating func withMutablePointer<R>(_ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        let offset = offset
        return try storage.withUnsafeMutableBufferPointer { try body($0.baseAddress! + offset) }
    }
}

/// Tolerance for a reordered float sum: 1e-5 relative to the sum of the terms' magnitudes (a float sum
/// of n ≤ 67 terms in any order is within about n · 6e-8 of it), plus a floor for subnormal results.
func sumTolerance(_ sumOfMagnitudes: Double) -> Double { 1e-5 * sumOfMagnitudes + 1e-30 }

/// True when got is within tolerance of the double-precision reference.
func close(_ got: Float, _ reference: Double, magnitude: Double) -> Bool {
    abs(Double(got) - reference) <= sumTolerance(magnitude)
}
