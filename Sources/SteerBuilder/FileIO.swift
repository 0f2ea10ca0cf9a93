import Foundation

/// Process information for build reports (durable writes: `AtomicFile` in SteerCore).
public enum FileIO {
    /// Peak resident memory of this process so far (`getrusage` `ru_maxrss`, kilobytes on Linux), in bytes.
    public static func peakRSSBytes() -> Int64 {
        #if os(Linux)
        let RUSAGE_SELF_WHO = __rusage_who_t(RUSAGE_SELF.rawValue)
        #else
        let RUSAGE_SELF_WHO = RUSAGE_SELF
        #endif
        var usage = rusage()
        guard getrusage(RUSAGE_SELF_WHO, &usage) == 0 else { return 0 }
        #if os(Linux)
        return Int64(usage.ru_maxrss) * 1024
        #else
        return Int64(usage.ru_maxrss)
        #endif
    }
}
