import Testing

@testable import SteerRouter

@Suite struct GenerationGateTests {
    @Test func closeWaitsForRunningReadsAndHoldsNewOnesUntilOpen() async {
        let gate = GenerationGate()
        #expect(gate.tryEnter())
        await gate.enter()
        let closed = Task {
            await gate.close()
            return true
        }
        // Wait until the close took effect (new reads are refused); two reads are still running, so the
        // close cannot finish until both leave.
        while gate.tryEnter() {
            gate.leave()
            await Task.yield()
        }
        gate.leave()
        #expect(!gate.tryEnter())
        gate.leave()
        #expect(await closed.value)

        let held = Task {
            await gate.enter()
            gate.leave()
            return true
        }
        while gate.heldCount == 0 { await Task.yield() }
        #expect(gate.heldCount == 1)
        gate.open()
        #expect(await held.value)
        #expect(gate.heldCount == 0)
        #expect(gate.tryEnter())
        gate.leave()
    }
}
