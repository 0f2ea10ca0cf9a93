import Testing

@Test func placeholder_SteerStoreTests() { #expect(Bool(true)) }
