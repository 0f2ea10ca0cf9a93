import Foundation

/// Moves every thread of this process onto one core with util-linux `taskset -a -p` (Swift's Glibc module
/// does not export the `CPU_SET` macros `sched_setaffinity` needs), so a benchmark's measured phase runs
/// where the other systems' measured phases run (docs/benchmarks.md "Like for like").
public enum Affinity {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// - Throws: `Failure` when the core is out of range or taskset fails.
    public static func pinProcess(toCore core: Int) throws {
        guard core >= 0, core < 1024 else { throw Failure(description: "core \(core) is out of range") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
        process.arguments = ["-a", "-p", "-c", String(core), String(getpid())]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "taskset -a -p -c \(core) failed (\(process.terminationStatus))")
        }
    }
}
