import Foundation
import SteerCore

#if canImport(Glibc)
import Glibc
#endif

/// CPU time of a process from Linux's `/proc/<pid>/stat` (user + system, all of its threads), and the
/// per-request cost derived from two readings around a measured window.
///
/// Layout of the stat line (proc(5)): `pid (comm) state ppid …`, where `comm` may itself hold spaces and
/// parentheses, so fields are counted from the *last* `)`; `utime` and `stime` are fields 14 and 15 (in
/// clock ticks, `sysconf(_SC_CLK_TCK)` per second), i.e. the 12th and 13th after the `)`.
public enum ProcessCPU {
    /// Clock ticks per second of the stat file's times.
    public static var ticksPerSecond: Double {
        let ticks = sysconf(Int32(_SC_CLK_TCK))
        return ticks > 0 ? Double(ticks) : 100
    }

    /// (utime, stime) in clock ticks from the text of a stat file.
    /// - Throws: `SteerError.corrupt` when the text is not a stat line (no `)`, too few fields, non-numbers).
    public static func parseStat(_ text: String) throws(SteerError) -> (user: UInt64, system: UInt64) {
        guard let close = text.lastIndex(of: ")") else { throw SteerError(.corrupt, "/proc stat line has no ')' after the command name") }
        let fields = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 13, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else {
            throw SteerError(.corrupt, "/proc stat line has no numeric utime/stime (fields 14 and 15)")
        }
        return (user, system)
    }

    /// User + system CPU seconds of process `pid` so far.
    /// - Throws: `SteerError.notFound` when the process (or /proc) is not there; `.corrupt` for an unreadable line.
    public static func seconds(pid: Int32) throws(SteerError) -> Double {
        let path = "/proc/\(pid)/stat"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SteerError(.notFound, "\(path): cannot read the process's CPU times (is it running, on Linux?)")
        }
        let (user, system) = try parseStat(text)
        return Double(user + system) / ticksPerSecond
    }
}

/// A process's CPU time over one measured window, per answered request.
public struct CPUAccount: Encodable, Sendable, Equatable {
    /// CPU seconds the process used between the two readings.
    public var cpuSeconds: Double
    /// Requests answered in the window.
    public var answered: Int
    /// `cpuSeconds / answered` in µs; nil when nothing was answered.
    public var cpuPerRequestUs: Double?
    /// `cpuSeconds / wall seconds`: cores kept busy on average.
    public var cores: Double?

    public init(before: Double, after: Double, answered: Int, wallSeconds: Double) {
        cpuSeconds = (max(0, after - before) * 1000).rounded() / 1000
        self.answered = answered
        cpuPerRequestUs = answered > 0 ? (cpuSeconds / Double(answered) * 1e7).rounded() / 10 : nil
        cores = wallSeconds > 0 ? (cpuSeconds / wallSeconds * 1000).rounded() / 1000 : nil
    }
}
