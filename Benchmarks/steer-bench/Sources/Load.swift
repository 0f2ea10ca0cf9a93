import Foundation
import Histogram
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

/// Pre-built request lines for one setting (search parameters fixed), so the load loop only picks lines.
struct Workload: Sendable {
    let mix: Mix
    let k: Int
    /// One search line per query (index = query index).
    let searchLines: [[UInt8]]
    let recommendLines: [[UInt8]]
    let upsertLines: [[UInt8]]
    let data: DataSet
    /// External id → base row, for recall on checkpoint sets (nil: integer ids are rows).
    let rowsByID: [ItemID: Int64]?

    /// - Parameters:
    ///   - upsertPool: how many distinct upsert lines; each re-writes an existing item with its own vector,
    ///     so the index content (and the ground truth) stays the same while the write path is exercised.
    init(data: DataSet, mix: Mix, k: Int, nprobe: Int?, efSearch: Int?, base64: Bool, prompt: String?,
         historyLength: Int, seed: UInt64, token: String?, pool: Int = 1000) {
        self.data = data
        self.mix = mix
        self.k = k
        searchLines = (0..<data.queryCount).map {
            RequestLine.search(data.query($0), k: k, base64: base64, nprobe: nprobe, efSearch: efSearch)
        }
        var rng = SeededGenerator(seed: seed)
        var recommend: [[UInt8]] = []
        var upsert: [[UInt8]] = []
        if mix.fractions[Operation.recommend.rawValue] > 0 {
            for _ in 0..<pool {
                let history = (0..<historyLength).map { _ in data.itemID(row: Int(rng.next() % UInt64(data.count))) }
                recommend.append(RequestLine.recommend(op: "recommend", history: history, prompt: prompt, k: k, constraints: nil, excludeHistory: nil))
            }
        }
        if mix.fractions[Operation.upsert.rawValue] > 0 {
            for _ in 0..<pool {
                let row = Int(rng.next() % UInt64(data.count))
                upsert.append(RequestLine.upsert([ClientItem(id: data.itemID(row: row), vector: data.baseRow(row), title: "item \(row)")], token: token))
            }
        }
        recommendLines = recommend
        upsertLines = upsert
        if let ids = data.ids {
            var map: [ItemID: Int64] = [:]
            for (row, id) in ids.enumerated() { map[id] = Int64(row) }
            rowsByID = map
        } else {
            rowsByID = nil
        }
    }

    /// Chooses the next request: its operation, the line, and the query index for searches.
    func next(_ rng: inout SeededGenerator) -> (Operation, [UInt8], Int) {
        let op = mix.pick(Double(rng.nextUnit()))
        switch op {
        case .search:
            let q = Int(rng.next() % UInt64(searchLines.count))
            return (op, searchLines[q], q)
        case .recommend:
            return (op, recommendLines[Int(rng.next() % UInt64(recommendLines.count))], -1)
        case .upsert:
            return (op, upsertLines[Int(rng.next() % UInt64(upsertLines.count))], -1)
        }
    }

    /// recall@k of one search response against the exact truth; nil when the response is not a hit list.
    func recall(response: JSONObject, query: Int) -> Double? {
        guard case .array(let hits)? = response["hits"] else { return nil }
        let truth = data.truth(query, k: min(k, data.meta.truthK))
        guard !truth.isEmpty else { return 1 }
        var found = Set<Int64>()
        for hit in hits {
            guard case .object(let object) = hit else { continue }
            switch object["id"] {
            case .int(let value)?:
                if let rowsByID { if let row = rowsByID[.int(value)] { found.insert(row) } } else { found.insert(value) }
            case .string(let text)?:
                if let row = rowsByID?[.string(text)] { found.insert(row) }
            default: continue
            }
        }
        return Double(truth.filter { found.contains($0) }.count) / Double(truth.count)
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
    /// Monotonic time of the last recorded answer (ns).
    var lastAnswer: UInt64 = 0

    /// Answers kept for checking after the window, so that parsing them (recall, error codes) never
    /// delays the next request or the next read.
    private var unchecked: [(op: Operation, query: Int, response: [UInt8])] = []

    mutating func record(_ op: Operation, nanos: UInt64, response: [UInt8], query: Int) {
        lastAnswer = Swift.max(lastAnswer, nowNanos())
        let value = min(nanos, 60_000_000_000)
        _ = all.record(value)
        _ = byOperation[op.rawValue].record(value)
        unchecked.append((op, query, response))
    }

    /// Checks the kept answers: errors by code, recall of every search answer.
    mutating func settle(_ workload: Workload) {
        for (op, query, response) in unchecked {
            do {
                let object = try SteerClient.check(response)
                if op == .search {
                    if let recall = workload.recall(response: object, query: query) {
                        recallSum += recall
                        recallCount += 1
                    } else {
                        errors["bad_response", default: 0] += 1
                    }
                }
            } catch {
                errors[error.code.rawValue, default: 0] += 1
            }
        }
        unchecked = []
    }

    mutating func merge(_ other: Tally) {
        all.add(other.all)
        for i in byOperation.indices { byOperation[i].add(other.byOperation[i]) }
        sendLag.add(other.sendLag)
        for (code, count) in other.errors { errors[code, default: 0] += count }
        recallSum += other.recallSum
        recallCount += other.recallCount
        sent += other.sent
        lastAnswer = Swift.max(lastAnswer, other.lastAnswer)
    }
}

/// Timing of one level: warm-up, then the measured window.
struct Window: Sendable {
    let warmupNanos: UInt64
    let durationNanos: UInt64
}

enum LoadRunner {
    /// Closed loop: `connections` threads, each sending its next request when the previous one is answered.
    /// Latency is send → answer. Only requests sent inside the measured window count.
    static func closed(host: String, port: Int, connections: Int, window: Window, workload: Workload, seed: UInt64) throws(SteerError) -> (Tally, Double) {
        let clients = try (0..<connections).map { _ throws(SteerError) in try SteerConnection(host: host, port: port) }
        nonisolated(unsafe) let pool = clients // each thread uses only its own connection
        let start = nowNanos()
        let measureStart = start + window.warmupNanos
        let end = measureStart + window.durationNanos
        let tallies = Locked<[Tally]>([])
        let failure = Locked<SteerError?>(nil)
        runThreads(connections) { worker in
            var rng = SeededGenerator(seed: seed &+ UInt64(worker) &* 7919)
            var tally = Tally()
            let connection = pool[worker]
            while true {
                let sendTime = nowNanos()
                if sendTime >= end { break }
                let (op, line, query) = workload.next(&rng)
                do throws(SteerError) {
                    let response = try connection.roundTrip(line)
                    if sendTime >= measureStart {
                        tally.sent += 1
                        tally.record(op, nanos: nowNanos() - sendTime, response: response, query: query)
                    }
                } catch {
                    failure.withLock { $0 = error }
                    break
                }
            }
            tally.settle(workload)
            tallies.withLock { $0.append(tally) }
        }
        if let error = failure.get() { throw error }
        var total = Tally()
        for tally in tallies.get() { total.merge(tally) }
        return (total, Double(window.durationNanos) / 1e9)
    }

    /// Open loop at `rate` requests per second in total, spread over `connections` pipelined connections.
    /// Each request has a scheduled send time (a fixed interval per connection, phases staggered); its
    /// latency runs from that scheduled time to the answer, so a stalled server or a blocked sender is
    /// charged for every request that should have gone out meanwhile (no coordinated omission).
    /// Requests still unanswered `drainNanos` after the window are counted as `unanswered` errors.
    static func open(host: String, port: Int, connections: Int, rate: Double, window: Window, workload: Workload,
                     seed: UInt64, drainNanos: UInt64 = 10_000_000_000) throws(SteerError) -> (Tally, Double) {
        let clients = try (0..<connections).map { _ throws(SteerError) in try SteerConnection(host: host, port: port) }
        nonisolated(unsafe) let pool = clients // each connection: one sender thread writes, one reader thread reads
        let interval = Double(connections) / rate * 1e9
        let start = nowNanos() + 1_000_000
        let measureStart = start + window.warmupNanos
        let end = measureStart + window.durationNanos
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
                let phase = interval * Double(worker) / Double(connections)
                var i = 0.0
                while true {
                    let scheduled = start + UInt64(phase + i * interval)
                    if scheduled >= end { break }
                    i += 1
                    sleep(until: scheduled)
                    let (op, line, query) = workload.next(&rng)
                    queue.push(Pending(op: op, scheduled: scheduled, sent: nowNanos(), query: query))
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
                    if pending.scheduled >= measureStart {
                        tally.sent += 1
                        _ = tally.sendLag.record(min(pending.sent &- pending.scheduled, 60_000_000_000))
                        tally.record(pending.op, nanos: nowNanos() - pending.scheduled, response: line, query: pending.query)
                    }
                }
                let left = queue.remaining(after: measureStart)
                if left > 0 {
                    tally.errors["unanswered", default: 0] += left
                    tally.sent += left
                    connection.shutdownWrite()
                }
                tally.settle(workload)
            tallies.withLock { $0.append(tally) }
            }
        }
        if let error = failure.get() { throw error }
        var total = Tally()
        for tally in tallies.get() { total.merge(tally) }
        // Achieved throughput: answers over the time from the window's start to the last answer (an
        // overloaded server answers the window's requests late, so this is below the offered rate).
        let answered = total.lastAnswer > measureStart ? Double(total.lastAnswer - measureStart) / 1e9 : 0
        return (total, Swift.max(Double(window.durationNanos) / 1e9, answered))
    }
}

struct Pending: Sendable {
    let op: Operation
    let scheduled: UInt64
    /// When the sender got to it (≥ scheduled).
    let sent: UInt64
    let query: Int
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
