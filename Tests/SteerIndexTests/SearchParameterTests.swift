import SteerCore
@testable import SteerIndex
import Testing

@Suite struct SearchParameterTests {
    @Test func efSearchPerCallChangesHNSWResults() throws {
        let data = Fixtures.standard
        let index = try makeIndex("HNSW8,efC16", data)
        let narrow = try index.search(data.queries, k: 10, parameters: .init(efSearch: 10))
        let wide = try index.search(data.queries, k: 10, parameters: .init(efSearch: 400))
        let rn = recall(narrow, Fixtures.standardTruthIP), rw = recall(wide, Fixtures.standardTruthIP)
        #expect(rw > rn + 0.02, "ef 400 recall \(rw) vs ef 10 recall \(rn)")
        #expect(rw >= 0.97)
        // The default is used when the call does not say, and it is settable.
        index.defaultEfSearch = 400
        #expect(try index.search(data.queries, k: 10) == wide)
        #expect(index.defaultEfSearch == 400)
    }

    @Test func nprobePerCallChangesIVFResults() throws {
        let data = Fixtures.standard
        let index = try makeIndex("IVF64,Flat", data)
        let one = try index.search(data.queries, k: 10, parameters: .init(nprobe: 1))
        let all = try index.search(data.queries, k: 10, parameters: .init(nprobe: 64))
        let r1 = recall(one, Fixtures.standardTruthIP), rAll = recall(all, Fixtures.standardTruthIP)
        #expect(r1 < 0.9, "nprobe 1 recall \(r1)")
        #expect(rAll == 1.0, "probing every list of IVF-Flat is exact, got \(rAll)")
        // nprobe beyond the list count is clamped.
        #expect(try index.search(data.queries, k: 10, parameters: .init(nprobe: 10_000)) == all)
        index.defaultNprobe = 1
        #expect(try index.search(data.queries, k: 10) == one)
    }

    /// Concurrent searches with different efSearch / nprobe get exactly what each gets alone (faiss
    /// 1.7.3 only honours the shared hnsw.efSearch field, which would make this a data race).
    @Test(arguments: ["HNSW8,efC16", "IVF64,Flat"])
    func concurrentSearchesWithDifferentParameters(factory: String) async throws {
        let data = Fixtures.standard
        let index = try makeIndex(factory, data)
        let settings = [1, 2, 4, 10, 40, 200]
        func parameters(_ value: Int) -> SearchParameters {
            factory.hasPrefix("HNSW") ? .init(efSearch: value) : .init(nprobe: value)
        }
        var serial: [Int: [[ScoredLabel]]] = [:]
        for value in settings { serial[value] = try index.search(data.queries, k: 10, parameters: parameters(value)) }
        let expected = serial
        #expect(Set(settings.map { expected[$0]! }.map { $0.map { $0.map(\.label) } }).count > 2, "settings must matter")
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for task in 0..<12 {
                group.addTask {
                    var ok = true
                    for round in 0..<4 {
                        let value = settings[(task + round) % settings.count]
                        // One query per call, as the server does.
                        for q in 0..<20 {
                            let got = try index.search(data.query(q), k: 10, parameters: parameters(value))
                            ok = ok && got[0] == expected[value]![q]
                        }
                    }
                    return ok
                }
            }
            for try await ok in group { #expect(ok) }
        }
    }

    @Test func searchesBatchesAndShortResults() throws {
        let index = try VectorIndex(spec: IndexSpec(parsing: "HNSW8"), dimension: 2, metric: .innerProduct)
        #expect(try index.search([1, 0], k: 5) == [[]], "empty index gives empty lists")
        try index.add([1, 0, 0, 1, -1, 0], labels: [10, 11, 12])
        let found = try index.search([1, 0, 0, 1], k: 5)
        #expect(found.count == 2)
        #expect(found[0].map(\.label) == [10, 11, 12])
        #expect(found[1].map(\.label).first == 11)
        #expect(try index.search([], k: 3).isEmpty)
    }

    /// Searches running while another task removes, re-adds and compacts: every answer is complete and
    /// ordered (the reader-writer lock serialises mutations against searches).
    @Test(arguments: ["HNSW16", "IVF32,Flat", "Flat"])
    func searchesDuringMutations(factory: String) async throws {
        let data = Fixtures.small
        let index = try makeIndex(factory, data)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                for round in 0..<6 {
                    let labels = data.labels.filter { Int($0) % 6 == round }
                    try index.remove(labels: labels)
                    let rows = labels.map { Int($0) - 1000 }
                    try index.add(rows.flatMap { data.row($0) }, labels: labels)
                    if round == 3 { try index.compact() }
                }
                return true
            }
            for reader in 0..<4 {
                group.addTask {
                    var ok = true
                    for q in 0..<40 {
                        let found = try index.search(data.query((q + reader) % data.queryCount), k: 10, parameters: .init(nprobe: 8))[0]
                        ok = ok && found.count == 10 && zip(found, found.dropFirst()).allSatisfy { $0.score >= $1.score }
                    }
                    return ok
                }
            }
            for try await ok in group { #expect(ok) }
        }
        #expect(index.count == data.baseCount)
    }
}
