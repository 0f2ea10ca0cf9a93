import Testing

@Test func placeholder_SteerIndexTests() { #expect(Bool(true)) }
