/// Clause → catalog tags (docs/clause-parser.md §2): every tag whose stemmed match words occur as a
/// contiguous run in the clause's match words; if none, the single tag whose name embedding is nearest
/// to the clause embedding, when that cosine reaches the threshold.
public struct TagMapper: Sendable {
    /// The tag vocabulary, in the order of `tag_embeddings`' rows.
    public let tags: [String]
    /// `tags.count × 384`, L2-normalised MiniLM embeddings of the tag names.
    public let tagEmbeddings: [Float]
    public let threshold: Float
    let tagWords: [[String]]

    public init(tags: [String], tagEmbeddings: [Float], threshold: Float) {
        precondition(tagEmbeddings.count == tags.count * MiniLMEncoder.dimension)
        self.tags = tags
        self.tagEmbeddings = tagEmbeddings
        self.threshold = threshold
        tagWords = tags.map(Self.matchWords)
    }

    /// Crude singular: drop a final `'s`; then `…ies` (length > 4) → `…y`, or a final `s` (length > 3,
    /// not `ss`) removed.
    public static func stem(_ word: String) -> String {
        var scalars = Array(word.unicodeScalars)
        if scalars.count >= 2, scalars[scalars.count - 2] == "'", scalars[scalars.count - 1] == "s" {
            scalars.removeLast(2)
        }
        let n = scalars.count
        if n > 4, scalars[n - 3] == "i", scalars[n - 2] == "e", scalars[n - 1] == "s" {
            scalars.removeLast(3)
            scalars.append("y")
        } else if n > 3, scalars[n - 1] == "s", scalars[n - 2] != "s" {
            scalars.removeLast()
        }
        return String(String.UnicodeScalarView(scalars))
    }

    /// Normalise, `-` → space, split on whitespace, trim, drop empty words, stem.
    public static func matchWords(_ text: String) -> [String] {
        let spaced = ClauseParser.normalize(text).unicodeScalars.map { $0 == "-" ? " " : $0 }
        return ClauseParser.whitespaceWords(spaced).compactMap { raw in
            let word = ClauseParser.trim(raw)
            return word.isEmpty ? nil : stem(word)
        }
    }

    /// Tag indices (ascending) whose match words occur contiguously in `text`'s.
    public func exactMatches(_ text: String) -> [Int] {
        let words = Self.matchWords(text).map { Array($0.utf8) }
        var hits: [Int] = []
        for (j, tagWords) in tagWords.enumerated() {
            let pattern = tagWords.map { Array($0.utf8) }
            let k = pattern.count
            guard k > 0, k <= words.count else { continue }
            for start in 0...(words.count - k) where Array(words[start..<(start + k)]) == pattern {
                hits.append(j)
                break
            }
        }
        return hits
    }

    /// Tag indices for one clause; `embedding` is the clause's normalised MiniLM vector.
    public func map(_ text: String, embedding: [Float]) -> [Int] {
        let hits = exactMatches(text)
        if !hits.isEmpty || tags.isEmpty { return hits }
        let (best, similarity) = nearest(embedding)
        return similarity >= threshold ? [best] : []
    }

    /// The tag with the highest cosine (lowest index on ties) and that cosine.
    public func nearest(_ embedding: [Float]) -> (index: Int, similarity: Float) {
        let d = MiniLMEncoder.dimension
        var best = 0
        var bestSimilarity = -Float.infinity
        tagEmbeddings.withUnsafeBufferPointer { t in
            embedding.withUnsafeBufferPointer { e in
                for j in 0..<tags.count {
                    let s = Dense.dot(t.baseAddress! + j * d, e.baseAddress!, count: d)
                    if s > bestSimilarity {
                        best = j
                        bestSimilarity = s
                    }
                }
            }
        }
        return (best, bestSimilarity)
    }
}
