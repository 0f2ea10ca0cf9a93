import Foundation
import SteerCore

/// How an open-loop load generator spaces its requests in time.
public enum ArrivalProcess: String, Sendable, CaseIterable, Codable {
    /// Exponential gaps with the given mean: independent arrivals, as many users sending on their own
    /// would produce (the superposition of the connections' streams is again Poisson at the total rate).
    case poisson
    /// A fixed interval: one request exactly every 1/rate seconds (kept for comparison with earlier runs).
    case grid
}

/// The scheduled send times of one open-loop stream, as offsets in nanoseconds from the stream's start.
///
/// Offsets never decrease. A `grid` stream sends at `(phase + i) × interval`; a `poisson` stream's gaps
/// are independent exponential draws with mean `interval` (inverse-CDF sampling of a 53-bit uniform from
/// SteerCore's `SeededGenerator`), so the same seed gives the same schedule. Not thread-safe: one stream
/// per sender thread.
public struct ArrivalSchedule: Sendable {
    public let process: ArrivalProcess
    /// Mean gap between two arrivals, ns.
    public let intervalNanos: Double
    private var rng: SeededGenerator
    private var offset: Double
    private var index: Double = 0
    private let phaseNanos: Double

    /// - Parameters:
    ///   - rate: mean arrivals per second of this stream (> 0).
    ///   - phase: grid only: where in the first interval the first request falls, a fraction in [0, 1)
    ///     (staggers several connections' grids).
    ///   - seed: poisson only: the gaps' seed.
    public init(process: ArrivalProcess, rate: Double, phase: Double = 0, seed: UInt64) {
        precondition(rate > 0 && rate.isFinite, "arrival rate must be positive")
        self.process = process
        intervalNanos = 1e9 / rate
        rng = SeededGenerator(seed: seed)
        phaseNanos = min(max(phase, 0), 1) * intervalNanos
        offset = 0
    }

    /// The next arrival's offset from the stream's start, ns.
    public mutating func next() -> UInt64 {
        switch process {
        case .grid:
            offset = phaseNanos + index * intervalNanos
            index += 1
        case .poisson:
            // 1 - u is in (0, 1], so the logarithm is finite.
            let unit = Double(rng.next() >> 11) * 0x1p-53
            offset += -Foundation.log(1 - unit) * intervalNanos
        }
        return UInt64(offset)
    }
}
