import Foundation
import SteerBenchKit
import Testing

@Suite struct ArrivalScheduleTests {
    private func offsets(_ process: ArrivalProcess, rate: Double, count: Int, seed: UInt64 = 11, phase: Double = 0) -> [UInt64] {
        var schedule = ArrivalSchedule(process: process, rate: rate, phase: phase, seed: seed)
        return (0..<count).map { _ in schedule.next() }
    }

    @Test func poisson_isSeededAndReproducible() {
        let a = offsets(.poisson, rate: 1000, count: 1000, seed: 5)
        let b = offsets(.poisson, rate: 1000, count: 1000, seed: 5)
        let c = offsets(.poisson, rate: 1000, count: 1000, seed: 6)
        #expect(a == b)
        #expect(a != c)
        #expect(zip(a, a.dropFirst()).allSatisfy { $0 <= $1 }, "offsets never decrease")
    }

    @Test func poisson_meanRateIsTheAskedRate() {
        // 200,000 arrivals at 2,500/s: the mean gap's standard error is 1/sqrt(200,000) ≈ 0.22 %, so 1 %
        // is about 4.5 standard errors.
        for seed: UInt64 in [1, 2, 3] {
            let arrivals = offsets(.poisson, rate: 2500, count: 200_000, seed: seed)
            let rate = Double(arrivals.count) / (Double(arrivals.last!) / 1e9)
            #expect(abs(rate / 2500 - 1) < 0.01, "seed \(seed): measured \(rate)/s")
        }
    }

    @Test func poisson_gapsAreExponential() {
        let arrivals = offsets(.poisson, rate: 1000, count: 100_000, seed: 9)
        var gaps = [Double]()
        var previous: UInt64 = 0
        for value in arrivals {
            gaps.append(Double(value - previous))
            previous = value
        }
        let mean = gaps.reduce(0, +) / Double(gaps.count)
        let variance = gaps.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(gaps.count)
        // Exponential: standard deviation = mean (a grid's is 0), and P(gap > mean) = 1/e.
        #expect(abs(variance.squareRoot() / mean - 1) < 0.02, "coefficient of variation \(variance.squareRoot() / mean)")
        let above = Double(gaps.filter { $0 > mean }.count) / Double(gaps.count)
        #expect(abs(above - exp(-1)) < 0.01, "P(gap > mean) = \(above)")
        // Counts in 10 ms windows (mean 10) are Poisson: variance ≈ mean.
        var counts = [Int](repeating: 0, count: Int(arrivals.last! / 10_000_000) + 1)
        for value in arrivals { counts[Int(value / 10_000_000)] += 1 }
        counts.removeLast()
        let countMean = Double(counts.reduce(0, +)) / Double(counts.count)
        let countVariance = counts.reduce(0.0) { $0 + (Double($1) - countMean) * (Double($1) - countMean) } / Double(counts.count)
        #expect(abs(countVariance / countMean - 1) < 0.1, "dispersion \(countVariance / countMean)")
    }

    @Test func grid_isAFixedIntervalWithPhase() {
        let arrivals = offsets(.grid, rate: 400, count: 5, phase: 0.5)
        #expect(arrivals == [1_250_000, 3_750_000, 6_250_000, 8_750_000, 11_250_000])
    }
}
