import Testing

@Test func placeholder_CFaissKernelsTests() { #expect(Bool(true)) }
