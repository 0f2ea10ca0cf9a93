import Foundation
import NIOCore
import NIOPosix
import SteerCore
import Synchronization
import Testing
@testable import SteerServer

@Suite struct WorkerPoolTests {
    private static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    @Test(arguments: [0, 300])
    func everyJobRunsOnAWorkerAndCompletesItsFuture(spin: Int) async throws {
        // The setup records each worker thread; every job must run on one of them.
        let workers = Mutex<Set<UInt>>([])
        let pool = WorkerPool(threads: 3, spinMicroseconds: spin) {
            _ = workers.withLock { $0.insert(UInt(pthread_self())) }
        }
        pool.start()
        let loop = Self.group.next()
        let futures = (0..<500).map { n in pool.submit(on: loop) { (n * n, UInt(pthread_self())) } }
        for (n, future) in futures.enumerated() {
            let (square, thread) = try await future.get()
            #expect(square == n * n)
            #expect(workers.withLock { $0.contains(thread) })
        }
        await pool.shutdown()
        #expect(workers.withLock { $0.count } == 3) // the setup ran once on each of 3 threads
    }

    @Test(arguments: [0, 300])
    func workersRunJobsInParallel(spin: Int) async throws {
        // Three jobs that each wait until all three are running: they finish only if three workers run
        // them at the same time (a pool that ran them one by one would time out and report false).
        let pool = WorkerPool(threads: 3, spinMicroseconds: spin)
        pool.start()
        let running = Atomic<Int>(0)
        let loop = Self.group.next()
        let futures = (0..<3).map { _ in
            pool.submit(on: loop) { () -> Bool in
                running.add(1, ordering: .sequentiallyConsistent)
                let deadline = Date().addingTimeInterval(10)
                while running.load(ordering: .sequentiallyConsistent) < 3 {
                    if Date() > deadline { return false }
                    usleep(100)
                }
                return true
            }
        }
        for future in futures { #expect(try await future.get()) }
        await pool.shutdown()
    }

    /// One connection's backlog must not hold another connection's request: queues are served in turns.
    @Test func queuesAreServedInTurns() async throws {
        let pool = WorkerPool(threads: 1, spinMicroseconds: 0)
        pool.start()
        let loop = Self.group.next()
        let gate = DispatchSemaphore(value: 0)
        let order = Mutex<[String]>([])
        // Occupy the only worker, then queue 50 jobs of connection 1 and one of connection 2.
        let running = DispatchSemaphore(value: 0)
        let blocker = pool.submit(on: loop, queue: 1) {
            running.signal()
            gate.wait()
        }
        running.wait()
        var futures: [EventLoopFuture<Void>] = []
        for n in 0..<50 {
            futures.append(pool.submit(on: loop, queue: 1) { order.withLock { $0.append("a\(n)") } })
        }
        futures.append(pool.submit(on: loop, queue: 2) { order.withLock { $0.append("b") } })
        futures.append(pool.submit(on: loop, queue: 1) { order.withLock { $0.append("a-last") } })
        gate.signal()
        try await blocker.get()
        for future in futures { try await future.get() }
        let ran = order.withLock { $0 }
        #expect(ran.count == 52)
        #expect(ran.firstIndex(of: "b") == 1, "connection 2 waited behind \(ran.firstIndex(of: "b") ?? -1) jobs of connection 1")
        // Within one queue, submission order holds.
        let ownOrder = ran.filter { $0 != "b" }
        #expect(ownOrder == (0..<50).map { "a\($0)" } + ["a-last"])
        await pool.shutdown()
    }

    @Test func shutdownRunsQueuedJobsThenRefusesNewOnes() async throws {
        let pool = WorkerPool(threads: 1, spinMicroseconds: 100)
        pool.start()
        let loop = Self.group.next()
        let done = Atomic<Int>(0)
        let queued = (0..<50).map { _ in
            pool.submit(on: loop) {
                usleep(200)
                done.add(1, ordering: .relaxed)
            }
        }
        await pool.shutdown()
        #expect(done.load(ordering: .relaxed) == 50)
        for future in queued { try await future.get() }
        let late = pool.submit(on: loop) { 1 }
        await #expect {
            try await late.get()
        } throws: { error in
            (error as? SteerError)?.code == .unavailable
        }
    }

    @Test func aPoolThatNeverStartedShutsDownAtOnce() async {
        let pool = WorkerPool(threads: 2, spinMicroseconds: 0)
        await pool.shutdown()
        let loop = Self.group.next()
        await #expect(throws: SteerError.self) { try await pool.submit(on: loop) { 1 }.get() }
    }
}
