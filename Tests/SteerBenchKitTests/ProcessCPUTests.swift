import Foundation
import SteerBenchKit
import SteerCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ProcessCPUTests {
    @Test func parseStat_countsFieldsAfterTheLastParenthesis() throws {
        // A command name with spaces and parentheses; utime 4242 and stime 17 are fields 14 and 15.
        let line = "1234 (a) b (c d)) S 1 1234 1234 0 -1 4194560 100 0 0 0 4242 17 0 0 20 0 3 0 555 1000000 200 18446744073709551615\n"
        let (user, system) = try ProcessCPU.parseStat(line)
        #expect(user == 4242)
        #expect(system == 17)
    }

    @Test func parseStat_rejectsWhatIsNotAStatLine() {
        #expect(throws: SteerError.self) { try ProcessCPU.parseStat("no parenthesis 1 2 3") }
        #expect(throws: SteerError.self) { try ProcessCPU.parseStat("1 (x) S 1 2") }
        #expect(throws: SteerError.self) { try ProcessCPU.parseStat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 x y 0 0") }
    }

    @Test func seconds_followsTheProcessCPUClock() throws {
        let pid = getpid()
        let before = try ProcessCPU.seconds(pid: pid)
        var start = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start)
        // Burn 300 ms of this thread's CPU.
        var sink = 0.0
        while true {
            for i in 0..<10_000 { sink += Double(i).squareRoot() }
            var now = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
            if Double(now.tv_sec - start.tv_sec) + Double(now.tv_nsec - start.tv_nsec) / 1e9 >= 0.3 { break }
        }
        let after = try ProcessCPU.seconds(pid: pid)
        #expect(sink > 0)
        // The stat file counts in clock ticks (10 ms); other test threads may add more, never less.
        #expect(after - before >= 0.28, "measured \(after - before) s for 0.3 s burned")
    }

    @Test func seconds_ofAMissingProcess_isNotFound() {
        #expect(throws: SteerError.self) { try ProcessCPU.seconds(pid: Int32.max) }
    }

    @Test func account_dividesCPUByAnsweredRequests() {
        let account = CPUAccount(before: 10.0, after: 10.5, answered: 2000, wallSeconds: 1.0)
        #expect(account.cpuSeconds == 0.5)
        #expect(account.cpuPerRequestUs == 250)
        #expect(account.cores == 0.5)
        #expect(CPUAccount(before: 1, after: 2, answered: 0, wallSeconds: 1).cpuPerRequestUs == nil)
    }
}
