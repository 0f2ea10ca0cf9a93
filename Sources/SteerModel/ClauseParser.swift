import Foundation

/// Whether a clause steers towards (`+`) or away from (`-`) what it names.
public enum Polarity: String, Sendable, Hashable {
    case positive = "+"
    case negative = "-"
}

/// One clause of a prompt: the text the prompt encoder embeds and its polarity.
public struct Clause: Sendable, Hashable, CustomStringConvertible {
    public let text: String
    public let polarity: Polarity

    public init(text: String, polarity: Polarity) {
        self.text = text
        self.polarity = polarity
    }

    public var description: String { "(\(polarity.rawValue) \(text))" }
}

/// The clause parser of docs/clause-parser.md §1 (the same rules as `Tools/train/steer_train/clauses.py`,
/// tested against the shared `spec/clause_cases.json`).
public enum ClauseParser {
    /// At most this many clauses per prompt.
    public static let maxClauses = 8

    /// Characters that end a chunk.
    static let separators: Set<Unicode.Scalar> = Set(",;.!?:()[]{}<>|/\\\t\n\r".unicodeScalars)
    /// Characters trimmed from both ends of every word.
    static let trimmed: Set<Unicode.Scalar> = Set("'\"\u{201C}\u{201D}\u{00AB}\u{00BB}-_*~`#".unicodeScalars)

    static let filler: Set<String> = [
        "a", "an", "anything", "everything", "film", "films", "i", "just", "maybe", "me", "movie", "movies", "my",
        "one", "ones", "please", "pls", "really", "show", "shows", "some", "something", "stuff", "the", "thing",
        "things", "us", "very", "we",
    ]

    enum Action { case split, negate, affirm }

    static let splitWords = ["but", "and", "or", "nor", "&", "+", "plus", "yet", "though", "although", "however",
                             "while", "whereas", "then"]
    static let negatePhrases = [
        "no", "not", "without", "except", "excluding", "exclude", "avoid", "never", "less", "fewer", "minus", "skip",
        "none", "neither", "nothing", "hate", "dont", "don't", "anything but", "everything but", "all but",
        "anything except", "everything except", "other than", "rather than", "instead of", "no more", "don't want",
        "dont want", "do not want", "stay away from", "nothing like", "less of",
    ]
    static let affirmPhrases = [
        "more", "with", "want", "like", "love", "prefer", "give", "show me", "give me", "recommend", "i want",
        "i'd like", "i would like", "in the mood for", "i'm in the mood for", "looking for", "i'm looking for",
        "more of",
    ]

    static let phrases: [[String]: Action] = {
        var table: [[String]: Action] = [:]
        for p in splitWords { table[p.split(separator: " ").map(String.init)] = .split }
        for p in negatePhrases { table[p.split(separator: " ").map(String.init)] = .negate }
        for p in affirmPhrases { table[p.split(separator: " ").map(String.init)] = .affirm }
        return table
    }()
    static let longestPhrase = phrases.keys.map(\.count).max() ?? 1

    /// NFKC, full lowercase, typographic apostrophes (U+2019, U+2018, U+02BC) → `'`.
    public static func normalize(_ text: String) -> String {
        let lowered = UnicodeText.pythonLower(text.precomposedStringWithCompatibilityMapping)
        var out = String.UnicodeScalarView()
        for scalar in lowered.unicodeScalars {
            switch scalar.value {
            case 0x2019, 0x2018, 0x02BC: out.append("'")
            default: out.append(scalar)
            }
        }
        return String(out)
    }

    /// Python's `str.isspace()`: Unicode White_Space plus the separators U+001C…U+001F.
    static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
    }

    /// Splits on whitespace runs, dropping empty words.
    static func whitespaceWords(_ text: some Sequence<Unicode.Scalar>) -> [String] {
        var words: [String] = []
        var current = String.UnicodeScalarView()
        for scalar in text {
            if isSpace(scalar) {
                if !current.isEmpty { words.append(String(current)) }
                current = String.UnicodeScalarView()
            } else {
                current.append(scalar)
            }
        }
        if !current.isEmpty { words.append(String(current)) }
        return words
    }

    /// Removes `trimmed` characters from both ends.
    static func trim(_ word: String) -> String {
        let scalars = Array(word.unicodeScalars)
        var start = 0
        var end = scalars.count
        while start < end, trimmed.contains(scalars[start]) { start += 1 }
        while end > start, trimmed.contains(scalars[end - 1]) { end -= 1 }
        return String(String.UnicodeScalarView(scalars[start..<end]))
    }

    /// The prompt's clauses, at most `maxClauses`; nil, empty or filler-only prompts give none.
    public static func parse(_ prompt: String?) -> [Clause] {
        guard let prompt, !prompt.isEmpty else { return [] }
        var clauses: [Clause] = []
        var chunk: [Unicode.Scalar] = []
        var chunks: [[Unicode.Scalar]] = []
        for scalar in normalize(prompt).unicodeScalars {
            if separators.contains(scalar) {
                chunks.append(chunk)
                chunk = []
            } else {
                chunk.append(scalar)
            }
        }
        chunks.append(chunk)
        for chunk in chunks {
            let words = whitespaceWords(chunk).compactMap { raw -> String? in
                let word = raw == "&" || raw == "+" ? raw : trim(raw)
                return word.isEmpty ? nil : word
            }
            parseChunk(words, into: &clauses)
            if clauses.count >= maxClauses { break }
        }
        return Array(clauses.prefix(maxClauses))
    }

    /// Step 4 of docs/clause-parser.md for one chunk.
    static func parseChunk(_ words: [String], into clauses: inout [Clause]) {
        var polarity = Polarity.positive
        var previous = Polarity.positive
        var content: [String] = []
        func close() {
            guard !content.isEmpty else { return }
            clauses.append(Clause(text: content.joined(separator: " "), polarity: polarity))
            previous = polarity
            content = []
        }
        var i = 0
        while i < words.count {
            var match: (action: Action, length: Int)?
            for length in stride(from: min(longestPhrase, words.count - i), through: 1, by: -1) {
                if let action = phrases[Array(words[i..<(i + length)])] {
                    match = (action, length)
                    break
                }
            }
            guard let (action, length) = match else {
                if !filler.contains(words[i]) { content.append(words[i]) }
                i += 1
                continue
            }
            let phrase = words[i..<(i + length)].joined(separator: " ")
            i += length
            switch action {
            case .split:
                close()
                polarity = phrase == "nor" ? .negative : phrase == "or" ? previous : .positive
            case .negate:
                close()
                polarity = .negative
            case .affirm:
                if !content.isEmpty {
                    close()
                    polarity = .positive
                }
            }
        }
        close()
    }
}
