import Dispatch
import SteerCore

/// Saves engines' own indexes in the background (`steer serve --index-save-seconds`), so that a server
/// killed without a clean shutdown reopens from a recent `DIR/index/index.bin` and replays only the
/// store's changes since it, instead of rebuilding every vector from the store (docs/operations.md,
/// "Restarts and crashes").
///
/// Each tick (every `interval`, on the checkpointer's own queue, never an event loop) asks `engines()`
/// for the engines serving now (the default one and every named collection's) and calls
/// `RetrievalEngine.saveIndex()` on each whose store sequence moved since that engine's last save by this
/// checkpointer. `saveIndex` holds the engine's writer lock while it writes the file: searches go on,
/// writes wait for the save (for a Flat index of n d-dimensional vectors the file is 4·n·d bytes), and
/// its order — index first, then `index.json` with the sequence it reflects, then trimming the store's
/// change log — means a crash at any point replays changes at worst twice (idempotent), never loses
/// one. An engine serving a swapped-in generation is skipped by `saveIndex` itself (its restart reloads
/// the generation directory). A failed save is reported to `onError` and tried again on the next tick.
///
/// Threading: `start` and `stop` from any thread; ticks never overlap (one serial queue). `stop` waits
/// for a running tick to end.
public final class IndexCheckpointer: Sendable {
    /// The time between ticks.
    public let interval: Duration
    private let engines: @Sendable () -> [RetrievalEngine]
    private let onError: @Sendable (_ dataDirectory: String, SteerError) -> Void
    private let queue = DispatchQueue(label: "steer.index-checkpoints", qos: .utility)
    /// Per data directory: the store sequence at this checkpointer's last save of it.
    private let saved = Locked<[String: UInt64]>([:])
    private let timer = Locked<(any DispatchSourceTimer)?>(nil)

    /// - Parameters:
    ///   - interval: the time between ticks (at least 1 ms).
    ///   - engines: the engines to consider at each tick.
    ///   - onError: called with an engine's data directory and the error of a failed save.
    public init(interval: Duration, engines: @escaping @Sendable () -> [RetrievalEngine],
                onError: @escaping @Sendable (_ dataDirectory: String, SteerError) -> Void = { _, _ in }) {
        self.interval = max(interval, .milliseconds(1))
        self.engines = engines
        self.onError = onError
    }

    /// Starts ticking (the first tick one interval from now). Idempotent.
    public func start() {
        timer.withLock { current in
            guard current == nil else { return }
            let source = DispatchSource.makeTimerSource(queue: queue)
            let (seconds, attoseconds) = interval.components
            let nanoseconds = Int(clamping: seconds) &* 1_000_000_000 &+ Int(attoseconds / 1_000_000_000)
            source.schedule(deadline: .now() + .nanoseconds(nanoseconds), repeating: .nanoseconds(nanoseconds), leeway: .milliseconds(100))
            source.setEventHandler { [weak self] in _ = self?.saveChanged() }
            source.resume()
            current = source
        }
    }

    /// Stops ticking and waits for a running tick to end. Idempotent.
    public func stop() {
        let source = timer.withLock { current in
            let was = current
            current = nil
            return was
        }
        source?.cancel()
        queue.sync {}
    }

    /// One tick, synchronously: saves every engine whose store moved since its last save here.
    ///
    /// - Returns: the data directories saved.
    @discardableResult
    public func saveChanged() -> [String] {
        var done: [String] = []
        for engine in engines() {
            let directory = engine.configuration.dataDirectory
            let sequence = engine.store.latestSequence
            guard saved.withLock({ $0[directory] }) != sequence else { continue }
            do throws(SteerError) {
                let after = try engine.saveIndex()
                saved.withLock { $0[directory] = after }
                done.append(directory)
            } catch {
                // A closed engine (a collection dropped meanwhile, or shutdown) is not an error.
                if error.code != .unavailable { onError(directory, error) }
            }
        }
        return done
    }
}
