import Foundation
import NIOCore
import SteerCore
import Synchronization

/// The fixed worker threads that run engine work (FAISS, RocksDB, the model) for the event loops.
///
/// An idle worker first spins for `spinMicroseconds`, watching an atomic count of queued jobs and yielding
/// its core to any other runnable thread between checks, and only then parks on a condition variable. With few connections a request then usually finds a worker
/// awake instead of paying a futex wake-up on every event loop → worker hop (tens of µs on a VM, see
/// docs/benchmarks.md). Spinning costs CPU only while the server is idle between requests; 0 turns it
/// off (workers park at once, like NIOThreadPool).
///
/// **Fairness.** Every job belongs to a queue (the server uses one per connection). Jobs of one queue run in
/// submission order; a free worker takes the next job of the queue after the one it served last, round
/// robin over the queues that have jobs. So a connection that pipelines a thousand heavy searches delays
/// another connection's request by at most one job per worker, not by a thousand.
///
/// A job submitted after `shutdown()` began fails with `unavailable`; `shutdown()` runs every job already
/// queued, then returns once all workers have exited. The `@unchecked Sendable` is safe because every
/// mutable field is read and written only with `condition` held (the atomics are atomics).
final class WorkerPool: @unchecked Sendable {
    private let condition = NSCondition()
    // Guarded by `condition`:
    /// Jobs per queue, in submission order (an entry exists only while its queue has jobs).
    private var queues: [UInt64: JobQueue] = [:]
    /// Queues with jobs, in the order they are served; a queue served goes to the back if it has more.
    private var turns: [UInt64] = []
    private var turnsHead = 0
    private var parked = 0
    private var stopping = false
    private var started = false

    /// Jobs queued and not yet taken by a worker (read by spinners without the lock).
    private let queued = Atomic<Int>(0)
    /// Workers spinning now (a submit wakes a parked worker only when the spinners cannot take the job).
    private let spinners = Atomic<Int>(0)
    private let stopFlag = Atomic<Bool>(false)
    private let exited = DispatchGroup()

    let threadCount: Int
    let spinNanoseconds: UInt64
    private let threadSetup: @Sendable () -> Void

    /// - Parameters:
    ///   - threads: worker threads (at least 1).
    ///   - spinMicroseconds: how long an idle worker spins before parking (0: never).
    ///   - threadSetup: runs first on every worker thread (per-thread OpenMP settings).
    init(threads: Int, spinMicroseconds: Int, threadSetup: @escaping @Sendable () -> Void = {}) {
        threadCount = max(1, threads)
        spinNanoseconds = UInt64(max(0, spinMicroseconds)) * 1000
        self.threadSetup = threadSetup
    }

    /// Starts the threads; idempotent.
    func start() {
        condition.lock()
        defer { condition.unlock() }
        guard !started else { return }
        started = true
        for index in 0..<threadCount {
            exited.enter()
            let thread = Thread { [self] in
                threadSetup()
                work()
                exited.leave()
            }
            thread.name = "steer-worker-\(index)"
            thread.start()
        }
    }

    /// Runs `body` on a worker; the future completes on `eventLoop`. With `ready`, the value is also
    /// published there before the future is completed, for an event loop that waits for it (see
    /// `ReadyResult`).
    ///
    /// - Parameter queue: the job's queue (its connection); jobs of different queues are served in turns.
    func submit<T: Sendable>(on eventLoop: any EventLoop, queue: UInt64 = 0, ready: ReadyResult<T>? = nil,
                             _ body: @escaping @Sendable () -> T) -> EventLoopFuture<T> {
        let promise = eventLoop.makePromise(of: T.self)
        condition.lock()
        guard !stopping else {
            condition.unlock()
            promise.fail(SteerError(.unavailable, "the server is shutting down"))
            return promise.futureResult
        }
        let job: @Sendable () -> Void = {
            let value = body()
            ready?.publish(value)
            promise.succeed(value)
        }
        if queues[queue] == nil {
            queues[queue] = JobQueue()
            turns.append(queue)
        }
        queues[queue]!.jobs.append(job)
        let waiting = queued.add(1, ordering: .sequentiallyConsistent).newValue
        if parked > 0 && waiting > spinners.load(ordering: .sequentiallyConsistent) {
            condition.signal()
        }
        condition.unlock()
        return promise.futureResult
    }

    /// Stops taking new jobs, runs the queued ones and waits for every worker to exit.
    func shutdown() async {
        guard beginShutdown() else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            exited.notify(queue: .global()) { continuation.resume() }
        }
    }

    /// Marks the pool stopping and wakes every worker; returns whether it had been started.
    private func beginShutdown() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        stopping = true
        stopFlag.store(true, ordering: .sequentiallyConsistent)
        condition.broadcast()
        return started
    }

    private func work() {
        while true {
            condition.lock()
            while turnsHead == turns.count {
                if stopping {
                    condition.unlock()
                    return
                }
                condition.unlock()
                spin()
                condition.lock()
                if turnsHead < turns.count || stopping { continue }
                parked += 1
                condition.wait()
                parked -= 1
            }
            let job = takeNextJob()
            queued.subtract(1, ordering: .sequentiallyConsistent)
            condition.unlock()
            job()
        }
    }

    /// The first job of the queue whose turn it is; that queue goes to the back of the turns if it has
    /// more. Call with `condition` held and at least one turn pending. O(1) amortised.
    private func takeNextJob() -> @Sendable () -> Void {
        let key = turns[turnsHead]
        turnsHead += 1
        var queue = queues.removeValue(forKey: key)!
        let job = queue.jobs[queue.head]
        queue.head += 1
        if queue.head < queue.jobs.count {
            if queue.head >= 1024 {
                queue.jobs.removeFirst(queue.head)
                queue.head = 0
            }
            queues[key] = queue
            turns.append(key)
        }
        if turnsHead == turns.count {
            turns.removeAll(keepingCapacity: true)
            turnsHead = 0
        } else if turnsHead >= 1024 {
            turns.removeFirst(turnsHead)
            turnsHead = 0
        }
        return job
    }

    /// Busy-waits until a job is queued, shutdown begins or the spin time is up.
    private func spin() {
        guard spinNanoseconds > 0 else { return }
        spinners.add(1, ordering: .sequentiallyConsistent)
        defer { spinners.subtract(1, ordering: .sequentiallyConsistent) }
        let deadline = DispatchTime.now().uptimeNanoseconds &+ spinNanoseconds
        var checks = 0
        while queued.load(ordering: .acquiring) == 0 && !stopFlag.load(ordering: .relaxed) {
            // Yield to any other runnable thread on this core (an event loop with work, the client).
            sched_yield()
            checks &+= 1
            if checks & 7 == 0, DispatchTime.now().uptimeNanoseconds >= deadline { return }
        }
    }
}

/// One queue's pending jobs (`head` is the next to run).
private struct JobQueue {
    var jobs: [@Sendable () -> Void] = []
    var head = 0
}

/// A job's result, published by the worker the moment it is computed, so that an event loop that chose to
/// wait for it (spinning, see `ConnectionHandler`) can answer without the wake-up that completing an
/// `EventLoopFuture` from another thread costs. The future is completed as well; whoever handles the
/// result first wins, the other path does nothing.
public final class ReadyResult<T: Sendable>: Sendable {
    private let ready = Atomic<Bool>(false)
    private let value = Mutex<T?>(nil)

    public init() {}

    func publish(_ result: T) {
        value.withLock { $0 = result }
        ready.store(true, ordering: .releasing)
    }

    /// The result once published, else nil; never blocks for long (the lock is only held to copy).
    func peek() -> T? {
        guard ready.load(ordering: .acquiring) else { return nil }
        return value.withLock { $0 }
    }
}
