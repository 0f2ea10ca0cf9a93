import Foundation

/// A one-line progress bar on standard error, redrawn at most every `interval` seconds (and always at
/// 100%), with rate and ETA. When standard error is not a terminal it prints a plain line every 10%.
/// Thread-safe (`@unchecked Sendable`: every mutable field is guarded by `lock`).
public final class ProgressLine: @unchecked Sendable {
    private let label: String
    private let total: Int
    private let interval: Double
    private let start = Date()
    private let lock = NSLock()
    private var lastDraw = Date.distantPast
    private var lastDecile = -1
    private var done = 0
    private let isTerminal = isatty(STDERR_FILENO) != 0
    private let enabled: Bool

    public init(_ label: String, total: Int, enabled: Bool = true, interval: Double = 0.25) {
        self.label = label
        self.total = max(0, total)
        self.enabled = enabled
        self.interval = interval
    }

    /// Adds `count` finished units.
    public func advance(by count: Int) { update(lock.withLock { done + count }) }

    /// Sets the number of finished units.
    public func update(_ value: Int) {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        done = min(value, total)
        let now = Date()
        let elapsed = now.timeIntervalSince(start)
        let fraction = total == 0 ? 1 : Double(done) / Double(total)
        if isTerminal {
            guard done == total || now.timeIntervalSince(lastDraw) >= interval else { return }
            lastDraw = now
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            let rate = elapsed > 0 ? Double(done) / elapsed : 0
            let eta = rate > 0 ? Double(total - done) / rate : 0
            let line = String(format: "\r%@ [%@] %3d%% %d/%d %.0f/s eta %.0fs ", label, bar, Int(fraction * 100), done, total, rate, eta)
            FileHandle.standardError.write(Data(line.utf8))
            if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
        } else {
            let decile = Int(fraction * 10)
            guard decile != lastDecile else { return }
            lastDecile = decile
            let line = String(format: "%@: %d/%d (%d%%) after %.1fs\n", label, done, total, decile * 10, elapsed)
            FileHandle.standardError.write(Data(line.utf8))
        }
    }
}
