import Foundation
import Histogram
import SteerBenchKit
import SteerClient
import SteerCore
import SteerProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Monotonic nanoseconds.
@inline(__always)
func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Sleeps until the monotonic time `deadline` (ns); returns at once when it has passed.
func sleep(until deadline: UInt64) {
    let now = nowNanos()
    guard deadline > now else { return }
    let wait = deadline - now
    var request = timespec(tv_sec: Int(wait / 1_000_000_000), tv_nsec: Int(wait % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

/// Runs `body(0..<count)` on `count` dedicated threads and waits for all of them (unlike
/// `concurrentPerform`, whose width is the core count, every connection gets its own thread).
func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        let thread = Thread {
            body(index)
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    group.wait()
}

/// The operations of a mix.
enum Operation: Int, CaseIterable, Sendable {
    case search = 0, recommend, upsert
    var name: String { ["search", "recommend", "upsert"][rawValue] }
}

/// Fractions of each operation (they are normalised; parsed from `search=0.9,upsert=0.1`).
struct Mix: Sendable, CustomStringConvertible {
    var fractions: [Double] // by Operation.rawValue

    init(parsing text: String) throws(SteerError) {
        fractions = [0, 0, 0]
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2, let value = Double(pair[1]), value >= 0, value.isFinite else {
                throw SteerError(.invalidRequest, "--mix: '\(part)' is not op=fraction")
            }
            guard let op = Operation.allCases.first(where: { $0.name == pair[0] }) else {
                throw SteerError(.invalidRequest, "--mix: unknown op '\(pair[0])' (search, recommend, upsert)")
            }
            fractions[op.rawValue] = value
        }
        let total = fractions.reduce(0, +)
        guard total > 0 else { throw SteerError(.invalidRequest, "--mix: the fractions sum to zero") }
        fractions = fractions.map { $0 / total }
    }

    var description: String {
        Operation.allCases.filter { fractions[$0.rawValue] > 0 }.map { "\($0.name)=\(fractions[$0.rawValue])" }.joined(separator: ",")
    }

    func pick(_ unit: Double) -> Operation {
        var acc = 0.0
        for op in Operation.allCases {
            acc += fractions[op.rawValue]
            if unit < acc { return op }
        }
        return Operation.allCases.last { fractions[$0.rawValue] > 0 } ?? .search
    }
}

/// One request the load loop chose, before its line is built.
struct Request: Sendable {
    let op: Operation
    /// Search: the query index; recommend: the history's index in the pool; upsert: the base row.
    let index: Int
}

/// The result of parsing one answer inside the timed window: what a client would have in hand.
enum Outcome {
    /// A search answer's hits as base rows (unknown ids are skipped).
    case hits([Int64])
    /// A batch search answer: one hit list (as base rows) per query, in request order.
    case batchHits([[Int64]])
    case ok
    case failed(String)
}

/// The requests of one setting (search parameters fixed). Lines are built when a request is sent and
/// answers parsed when they arrive, both inside the timed interval, as any client of the server must do
/// (docs/benchmarks.md "Load, recall and peers end to end").
struct Workload: Sendable {
    let mix: Mix
    let k: Int
    let nprobe: Int?
    let efSearch: Int?
    let base64: Bool
    /// Queries per search request (1: `vector`; more: `vectors`, answered as `results`).
    let batch: Int
    let prompt: String?
    let token: String?
    /// Recommend histories (external ids), chosen once from the seed.
    let histories: [[ItemID]]
    /// Rows that upserts re-write with their own vectors.
    let upsertRows: [Int]
    let data: DataSet
    /// External id → base row, for recall on sets with explicit ids (nil: integer ids are rows).
    let rowsByID: [ItemID: Int64]?

    /// - Parameters:
    ///   - pool: how many distinct recommend histories and upsert rows; each upsert re-writes an existing
    ///     item with its own vector, so the index content (and the ground truth) stays the same while the
    ///     write path is exercised.
    init(data: DataSet, mix: Mix, k: Int, nprobe: Int?, efSearch: Int?, base64: Bool, prompt: String?,
         historyLength: Int, seed: UInt64, token: String?, pool: Int = 1000, batch: Int = 1) {
        self.data = data
        self.batch = max(1, batch)
        self.mix = mix
        self.k = k
        self.nprobe = nprobe
        self.efSearch = efSearch
        self.base64 = base64
        self.prompt = prompt
        self.token = token
        var rng = SeededGenerator(seed: seed)
        var histories: [[ItemID]] = []
        var rows: [Int] = []
        if mix.fractions[Operation.recommend.rawValue] > 0 {
            for _ in 0..<pool {
                histories.append((0..<historyLength).map { _ in data.itemID(row: Int(rng.next() % UInt64(data.count))) })
            }
        }
        if mix.fractions[Operation.upsert.rawValue] > 0 {
            for _ in 0..<pool { rows.append(Int(rng.next() % UInt64(data.count))) }
        }
        self.histories = histories
        upsertRows = rows
        if let ids = data.ids {
            var map: [ItemID: Int64] = [:]
            for (row, id) in ids.enumerated() { map[id] = Int64(row) }
            rowsByID = map
        } else {
            rowsByID = nil
        }
    }

    /// Chooses the next request.
    func next(_ rng: inout SeededGenerator) -> Request {
        let op = mix.pick(Double(rng.nextUnit()))
        switch op {
        case .search: return Request(op: op, index: Int(rng.next() % UInt64(data.queryCount)))
        case .recommend: return Request(op: op, index: Int(rng.next() % UInt64(histories.count)))
        case .upsert: return Request(op: op, index: upsertRows[Int(rng.next() % UInt64(upsertRows.count))])
        }
    }

    /// The request's line (built at send time: encoding the vector is part of the client's cost).
    func line(_ request: Request) -> [UInt8] {
        switch request.op {
        case .search where batch > 1:
            let queries = (0..<batch).map { data.query((request.index + $0) % data.queryCount) }
            return RequestLine.searchBatch(queries, k: k, base64: base64, nprobe: nprobe, efSearch: efSearch)
        case .search:
            return RequestLine.search(data.query(request.index), k: k, base64: base64, nprobe: nprobe, efSearch: efSearch)
        case .recommend:
            return RequestLine.recommend(op: "recommend", history: histories[request.index], prompt: prompt, k: k, constraints: nil, excludeHistory: nil)
        case .upsert:
            let row = request.index
            return RequestLine.upsert([ClientItem(id: data.itemID(row: row), vector: data.baseRow(row), title: "item \(row)")], token: token)
        }
    }

    /// Parses an answer (the whole JSON line, then the hits' ids), as a client does before using it.
    func parse(_ response: [UInt8], _ request: Request) -> Outcome {
        let object: JSONObject
        do throws(SteerError) { object = try SteerClient.check(response) } catch { return .failed(error.code.rawValue) }
        guard request.op == .search else { return .ok }
        if batch > 1 {
            guard case .array(let results)? = object["results"], results.count == batch else { return .failed("bad_response") }
            var lists: [[Int64]] = []
            lists.reserveCapacity(batch)
            for result in results {
                guard case .hits(let rows) = rows(of: result) else { return .failed("bad_response") }
                lists.append(rows)
            }
            return .batchHits(lists)
        }
        return rows(of: object["hits"])
    }

    /// One hit list's ids as base rows.
    private func rows(of value: JSONValue?) -> Outcome {
        guard case .array(let hits)? = value else { return .failed("bad_response") }
        var rows: [Int64] = []
        rows.reserveCapacity(hits.count)
        for hit in hits {
            guard case .object(let fields) = hit else { return .failed("bad_response") }
            switch fields["id"] {
            case .int(let value)?:
                if let rowsByID { if let row = rowsByID[.int(value)] { rows.append(row) } } else { rows.append(value) }
            case .string(let text)?:
                if let row = rowsByID?[.string(text)] { rows.append(row) }
            default: return .failed("bad_response")
            }
        }
        return .hits(rows)
    }

    /// recall@k of a search answer's rows against the exact truth (k ≤ truth depth; no allocation).
    func recall(rows: [Int64], query: Int) -> Double {
        let truth = data.truth(query, k: min(k, data.meta.truthK))
        guard !truth.isEmpty else { return 1 }
        var found = 0
        for row in truth where rows.contains(row) { found += 1 }
        return Double(found) / Double(truth.count)
    }
}

/// What one worker (a connection) measured.
struct Tally: Sendable {
    var all = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    var byOperation: [Histogram<UInt64>] = Operation.allCases.map { _ in
        Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    }
    /// Open loop: how late the sender wrote each request after its scheduled time (client-side lag,
    /// included in the latency by design; reported so it can be told apart from the server's share).
    var sendLag = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    var errors: [String: Int] = [:]
    var recallSum = 0.0
    var recallCount = 0
    var sent = 0
    /// Answers (of any request, warm-up included) that arrived inside the measured window: the
    /// denominator of the server's CPU per request.
    var completedInWindow = 0
    /// Monotonic time of the last recorded answer (ns).
    var lastAnswer: UInt64 = 0

    /// Records one parsed answer: its latency, then (outside the timed interval) its error code or recall.
    mutating func record(_ request: Request, nanos: UInt64, outcome: Outcome, answeredAt: UInt64, workload: Workload) {
        lastAnswer = Swift.max(lastAnswer, answeredAt)
        let value = min(nanos, 60_000_000_000)
        _ = all.record(value)
        _ = byOperation[request.op.rawValue].record(value)
        switch outcome {
        case .hits(let rows):
            recallSum += workload.recall(rows: rows, query: request.index)
            recallCount += 1
        case .batchHits(let lists):
            for (offset, rows) in lists.enumerated() {
                recallSum += workload.recall(rows: rows, query: (request.index + offset) % workload.data.queryCount)
                recallCount += 1
            }
        case .ok: break
        case .failed(let code): errors[code, default: 0] += 1
        }
    }

    mutating func merge(_ other: Tally) {
        all.add(other.all)
        for i in byOperation.indices { byOperation[i].add(other.byOperation[i]) }
        sendLag.add(other.sendLag)
        for (code, count) in other.errors { errors[code, default: 0] += count }
        recallSum += other.recallSum
        recallCount += other.recallCount
        sent += other.sent
        completedInWindow += other.completedInWindow
        lastAnswer = Swift.max(lastAnswer, other.lastAnswer)
    }
}

/// Timing of one level: warm-up, then the measured window.
struct Window: Sendable {
    let warmupNanos: UInt64
    let durationNanos: UInt64
}

/// CPU seconds of the server and of this load generator at the start and the end of a measured window,
/// read by a thread of their own at those two instants (`ProcessCPU`, /proc/<pid>/stat).
final class CPUSampler: @unchecked Sendable {
    // @unchecked Sendable: `readings` is written by the sampling thread before `done` is signalled and
    // read only after `wait()`.
    private let done = DispatchSemaphore(value: 0)
    private var readings: (server: [Double], client: [Double]) = ([], [])

    /// Starts sampling `serverPID` (nil: only this process) at `start` and `end` (monotonic ns).
    init(serverPID: Int32?, start: UInt64, end: UInt64) {
        let thread = Thread { [self] in
            for instant in [start, end] {
                sleep(until: instant)
                if let serverPID, let seconds = try? ProcessCPU.seconds(pid: serverPID) { readings.server.append(seconds) }
                if let seconds = try? ProcessCPU.seconds(pid: getpid()) { readings.client.append(seconds) }
            }
            done.signal()
        }
        thread.start()
    }

    /// Waits for the second reading; the server's and the client's accounts over the window.
    func wait(answered: Int, seconds: Double) -> (server: CPUAccount?, client: CPUAccount?) {
        done.wait()
        func account(_ values: [Double]) -> CPUAccount? {
            values.count == 2 ? CPUAccount(before: values[0], after: values[1], answered: answered, wallSeconds: seconds) : nil
        }
        return (account(readings.server), account(readings.client))
    }
}

/// What one level measured.
struct LevelResult {
    var tally: Tally
    /// Seconds the level's throughput is computed over.
    var seconds: Double
    var serverCPU: CPUAccount?
    var clientCPU: CPUAccount?
}

enum LoadRunner {
    /// Closed loop: `connections` threads, each sending its next request when the previous one is answered.
    /// Latency runs from just before the request line is built to just after the answer is parsed. Only
    /// requests sent inside the measured window count.
    static func closed(host: String, port: Int, connections: Int, window: Window, workload: Workload, seed: UInt64,
                       serverPID: Int32?) throws(SteerError) -> LevelResult {
        let clients = try (0..<connections).map { _ throws(SteerError) in try SteerConnection(host: host, port: port) }
        nonisolated(unsafe) let pool = clients // each thread uses only its own connection
        let start = nowNanos()
        let measureStart = start + window.warmupNanos
        let end = measureStart + window.durationNanos
        let sampler = CPUSampler(serverPID: serverPID, start: measureStart, end: end)
        let tallies = Locked<[Tally]>([])
        let failure = Locked<SteerError?>(nil)
        runThreads(connections) { worker in
            var rng = SeededGenerator(seed: seed &+ UInt64(worker) &* 7919)
            var tally = Tally()
            let connection = pool[worker]
            while true {
                let sendTime = nowNanos()
                if sendTime >= end { break }
                let request = workload.next(&rng)
                do throws(SteerError) {
                    let response = try connection.roundTrip(workload.line(request))
                    let outcome = workload.parse(response, request)
                    let answered = nowNanos()
                    if answered >= measureStart && answered < end { tally.completedInWindow += 1 }
                    if sendTime >= measureStart {
                        tally.sent += 1
                        tally.record(request, nanos: answered - sendTime, outcome: outcome, answeredAt: answered, workload: workload)
                    }
                } catch {
                    failure.withLock { $0 = error }
                    break
                }
            }
            tallies.withLock { $0.append(tally) }
        }
        if let error = failure.get() { throw error }
        var total = Tally()
        for tally in tallies.get() { total.merge(tally) }
        let seconds = Double(window.durationNanos) / 1e9
        let cpu = sampler.wait(answered: total.completedInWindow, seconds: seconds)
        return LevelResult(tally: total, seconds: seconds, serverCPU: cpu.server, clientCPU: cpu.client)
    }

    /// Open loop at `rate` requests per second in total, spread over `connections` pipelined connections.
    /// Each request has a scheduled send time — exponential gaps (`.poisson`, each connection an
    /// independent stream at rate/connections, so the total is Poisson at `rate`) or a fixed interval per
    /// connection with staggered phases (`.grid`) — and its latency runs from that scheduled time to the
    /// parsed answer, so a stalled server or a blocked sender is charged for every request that should
    /// have gone out meanwhile (no coordinated omission). Requests still unanswered `drainNanos` after
    /// the window are counted as `unanswered` errors.
    static func open(host: String, port: Int, connections: Int, rate: Double, arrivals: ArrivalProcess, window: Window,
                     workload: Workload, seed: UInt64, serverPID: Int32?, drainNanos: UInt64 = 10_000_000_000) throws(SteerError) -> LevelResult {
        let clients = try (0..<connections).map { _ throws(SteerError) in try SteerConnection(host: host, port: port) }
        nonisolated(unsafe) let pool = clients // each connection: one sender thread writes, one reader thread reads
        let start = nowNanos() + 1_000_000
        let measureStart = start + window.warmupNanos
        let end = measureStart + window.durationNanos
        let sampler = CPUSampler(serverPID: serverPID, start: measureStart, end: end)
        let tallies = Locked<[Tally]>([])
        let failure = Locked<SteerError?>(nil)
        let queues = (0..<connections).map { _ in PendingQueue() }
        runThreads(connections * 2) { job in
            let worker = job / 2
            let connection = pool[worker]
            let queue = queues[worker]
            if job % 2 == 0 {
                // Sender.
                var rng = SeededGenerator(seed: seed &+ UInt64(worker) &* 7919)
                var schedule = ArrivalSchedule(process: arrivals, rate: rate / Double(connections), phase: Double(worker) / Double(connections),
                                               seed: seed &+ 0x5EED &+ UInt64(worker) &* 104_729)
                while true {
                    let scheduled = start + schedule.next()
                    if scheduled >= end { break }
                    sleep(until: scheduled)
                    let request = workload.next(&rng)
                    let line = workload.line(request)
                    queue.push(Pending(request: request, scheduled: scheduled, sent: nowNanos()))
                    do throws(SteerError) {
                        try connection.writeLine(line)
                    } catch {
                        failure.withLock { $0 = error }
                        break
                    }
                }
                queue.finish()
            } else {
                // Reader: answers come in request order.
                var tally = Tally()
                while let pending = queue.pop(deadline: end + drainNanos) {
                    let line: [UInt8]?
                    do throws(SteerError) { line = try connection.readLine() } catch {
                        failure.withLock { $0 = error }
                        break
                    }
                    guard let line else { break }
                    let outcome = workload.parse(line, pending.request)
                    let answered = nowNanos()
                    if answered >= measureStart && answered < end { tally.completedInWindow += 1 }
                    if pending.scheduled >= measureStart {
                        tally.sent += 1
                        _ = tally.sendLag.record(min(pending.sent &- pending.scheduled, 60_000_000_000))
                        tally.record(pending.request, nanos: answered - pending.scheduled, outcome: outcome, answeredAt: answered, workload: workload)
                    }
                }
                let left = queue.remaining(after: measureStart)
                if left > 0 {
                    tally.errors["unanswered", default: 0] += left
                    tally.sent += left
                    connection.shutdownWrite()
                }
                tallies.withLock { $0.append(tally) }
            }
        }
        if let error = failure.get() { throw error }
        var total = Tally()
        for tally in tallies.get() { total.merge(tally) }
        // Achieved throughput: answers over the time from the window's start to the last answer (an
        // overloaded server answers the window's requests late, so this is below the offered rate).
        let answered = total.lastAnswer > measureStart ? Double(total.lastAnswer - measureStart) / 1e9 : 0
        let windowSeconds = Double(window.durationNanos) / 1e9
        let cpu = sampler.wait(answered: total.completedInWindow, seconds: windowSeconds)
        return LevelResult(tally: total, seconds: Swift.max(windowSeconds, answered), serverCPU: cpu.server, clientCPU: cpu.client)
    }
}

struct Pending: Sendable {
    let request: Request
    let scheduled: UInt64
    /// When the sender had built the line and was about to write it (≥ scheduled).
    let sent: UInt64
}

/// The sent-but-unanswered requests of one open-loop connection, in send order.
final class PendingQueue: @unchecked Sendable {
    // @unchecked Sendable: all state is guarded by `condition`.
    private let condition = NSCondition()
    private var items: [Pending] = []
    private var head = 0
    private var finished = false

    func push(_ item: Pending) {
        condition.lock()
        items.append(item)
        condition.signal()
        condition.unlock()
    }

    func finish() {
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// The oldest pending request; nil when the sender has finished and all are answered, or at `deadline` (ns).
    func pop(deadline: UInt64) -> Pending? {
        condition.lock()
        defer { condition.unlock() }
        while head == items.count {
            if finished { return nil }
            let now = nowNanos()
            if now >= deadline { return nil }
            _ = condition.wait(until: Date(timeIntervalSinceNow: min(0.1, Double(deadline - now) / 1e9)))
        }
        if nowNanos() >= deadline { return nil }
        let item = items[head]
        head += 1
        return item
    }

    /// How many requests scheduled at or after `time` were never answered.
    func remaining(after time: UInt64) -> Int {
        condition.lock()
        defer { condition.unlock() }
        return items[head...].filter { $0.scheduled >= time }.count
    }
}
