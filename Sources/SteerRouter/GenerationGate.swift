import SteerCore
import SteerEngine

/// Holds reads back while the router swaps generations: `close()` stops new reads from starting and
/// waits for the running ones; `open()` lets the held ones go. Reads never see a half-swapped cluster.
final class GenerationGate: Sendable {
    private struct State {
        var open = true
        var running = 0
        var held: [CheckedContinuation<Void, Never>] = []
        var drained: CheckedContinuation<Void, Never>?
    }

    private let state = Locked(State())

    /// Counts the caller as running until `leave()` when the gate is open; false (nothing counted) when
    /// it is closed.
    func tryEnter() -> Bool {
        state.withLock { state in
            guard state.open else { return false }
            state.running += 1
            return true
        }
    }

    /// Waits while the gate is closed, then counts the caller as running until `leave()`.
    func enter() async {
        let admitted = state.withLock { state -> Bool in
            guard state.open else { return false }
            state.running += 1
            return true
        }
        if admitted { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.open {
                    state.running += 1
                    return true
                }
                state.held.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    func leave() {
        let drained = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.running -= 1
            guard !state.open, state.running == 0 else { return nil }
            defer { state.drained = nil }
            return state.drained
        }
        drained?.resume()
    }

    /// Closes the gate and returns once no read is running.
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                state.open = false
                if state.running == 0 { return true }
                state.drained = continuation
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Opens the gate and releases the held reads.
    func open() {
        let held = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            state.running += state.held.count
            defer { state.held = [] }
            return state.held
        }
        for continuation in held { continuation.resume() }
    }

    /// Reads waiting for the gate (for `stats`).
    var heldCount: Int { state.withLock { $0.held.count } }
}
