// Environment interpolation in configuration values, as Docker Compose and Vector do it:
// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `$VAR`,
// and `$$` for a literal `$`. Applied to every scalar value of the document (never to keys),
// before any other check, so `port: ${PORT:-9464}` is an integer once expanded.
import Glibc

/// Where an interpolated value came from: recorded per scalar for error messages. Never holds
/// the value itself (it may be a secret).
public struct InterpolationNote: Sendable, Equatable {
    /// The references of the scalar, as written (`${KAFKA_BROKERS}`), with their source:
    /// "from the environment" or "from its default (KAFKA_BROKERS unset)".
    public var sources: [String]

    public var description: String { "value interpolated: " + sources.joined(separator: ", ") }
}

/// Expands environment references in the scalar values of YAML documents.
public struct Interpolator: Sendable {
    /// The value of a variable, nil when unset.
    private let lookup: @Sendable (String) -> String?

    /// Variables from `environment` only (tests, or a prepared environment).
    public init(environment: [String: String]) {
        self.lookup = { environment[$0] }
    }

    /// Variables from the process environment (getenv).
    public static func process() -> Interpolator {
        Interpolator { name in getenv(name).map { String(cString: $0) } }
    }

    private init(lookup: @escaping @Sendable (String) -> String?) {
        self.lookup = lookup
    }

    /// `node` with every scalar value expanded. Problems (an unset variable without default, a
    /// `${VAR:?message}` whose variable is unset or empty, an unterminated `${`) go to `errors`
    /// at their own line and column; `notes` gets, for each expanded scalar's position, where its
    /// value came from.
    public func interpolate(_ node: YAMLNode, errors: inout [ConfigDiagnostic],
                            notes: inout [SourceMark: InterpolationNote]) -> YAMLNode {
        switch node {
        case .scalar(let text, let plain, let mark):
            guard text.contains("$") else { return node }
            var sources: [String] = []
            let expanded = expand(text, plain: plain, mark: mark, errors: &errors, sources: &sources)
            if !sources.isEmpty { notes[mark] = InterpolationNote(sources: sources) }
            return .scalar(expanded, plain: plain, mark)
        case .sequence(let items, let mark):
            return .sequence(items.map { interpolate($0, errors: &errors, notes: &notes) }, mark)
        case .mapping(let pairs, let mark):
            return .mapping(pairs.map { ($0.key, $0.keyMark, interpolate($0.value, errors: &errors, notes: &notes)) }, mark)
        }
    }

    /// Expands one string.
    ///
    /// - Parameters:
    ///   - plain: whether the scalar is plain (unquoted): the column of a reference is then the
    ///     scalar's column plus its offset; a quoted scalar starts one column later.
    ///   - sources: receives one entry per reference expanded.
    func expand(_ text: String, plain: Bool, mark: SourceMark, errors: inout [ConfigDiagnostic],
                sources: inout [String]) -> String {
        let chars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        func position(_ offset: Int) -> SourceMark {
            // Line and column of chars[offset] in the file (exact for plain and quoted scalars
            // without escapes; block scalars count their lines from the mark's).
            var line = mark.line, column = mark.column + (plain ? 0 : 1)
            for c in chars[..<offset] {
                if c == "\n" { line += 1; column = 1 } else { column += 1 }
            }
            return SourceMark(file: mark.file, line: line, column: column)
        }
        func isNameStart(_ c: Unicode.Scalar) -> Bool { c == "_" || (c.isASCII && c.properties.isAlphabetic) }
        func isName(_ c: Unicode.Scalar) -> Bool { isNameStart(c) || (c.isASCII && c.properties.numericType != nil) }
        while i < chars.count {
            let c = chars[i]
            guard c == "$", i + 1 < chars.count else { out.append(c); i += 1; continue }
            let next = chars[i + 1]
            if next == "$" { out.append("$"); i += 2; continue }
            if isNameStart(next) {
                // $VAR: the longest name.
                var j = i + 1
                while j < chars.count, isName(chars[j]) { j += 1 }
                let name = String(String.UnicodeScalarView(chars[(i + 1)..<j]))
                if let value = lookup(name) {
                    out.append(contentsOf: value.unicodeScalars)
                    sources.append("$\(name) from the environment")
                } else {
                    errors.append(ConfigDiagnostic(position(i), "environment variable \(name) is not set (write $$ for a literal $, or ${\(name):-default} for a default)"))
                }
                i = j
                continue
            }
            guard next == "{" else { out.append(c); i += 1; continue }
            guard let close = chars[(i + 2)...].firstIndex(of: "}") else {
                errors.append(ConfigDiagnostic(position(i), "unterminated ${: expected ${NAME}, ${NAME:-default} or ${NAME:?message} (write $$ for a literal $)"))
                out.append(contentsOf: chars[i...])
                break
            }
            let body = String(String.UnicodeScalarView(chars[(i + 2)..<close]))
            let written = "${\(body)}"
            i = close + 1
            var nameEnd = body.startIndex
            while nameEnd < body.endIndex, body[nameEnd].unicodeScalars.allSatisfy({ nameEnd == body.startIndex ? isNameStart($0) : isName($0) }) {
                nameEnd = body.index(after: nameEnd)
            }
            let name = String(body[..<nameEnd])
            let rest = body[nameEnd...]
            guard !name.isEmpty else {
                errors.append(ConfigDiagnostic(position(close - body.unicodeScalars.count - 2), "\(written): expected a variable name ([A-Za-z_][A-Za-z0-9_]*) after ${"))
                continue
            }
            let at = position(close - body.unicodeScalars.count - 2)
            let value = lookup(name)
            // `:` in the operator also treats an empty value as unset.
            let colon = rest.hasPrefix(":")
            let op = colon ? rest.dropFirst() : rest
            let missing = value == nil || (colon && value!.isEmpty)
            if op.isEmpty && !colon {
                if let value {
                    out.append(contentsOf: value.unicodeScalars)
                    sources.append("\(written) from the environment")
                } else {
                    errors.append(ConfigDiagnostic(at, "environment variable \(name) is not set (use ${\(name):-default} for a default)"))
                }
            } else if op.hasPrefix("-") {
                let fallback = String(op.dropFirst())
                if missing {
                    out.append(contentsOf: fallback.unicodeScalars)
                    sources.append("\(written) from its default (\(name) \(value == nil ? "unset" : "empty"))")
                } else {
                    out.append(contentsOf: value!.unicodeScalars)
                    sources.append("\(written) from the environment")
                }
            } else if op.hasPrefix("?") {
                if missing {
                    let message = op.dropFirst()
                    errors.append(ConfigDiagnostic(at, "environment variable \(name) is \(value == nil ? "not set" : "empty")\(message.isEmpty ? "" : ": \(message)")"))
                } else {
                    out.append(contentsOf: value!.unicodeScalars)
                    sources.append("\(written) from the environment")
                }
            } else {
                errors.append(ConfigDiagnostic(at, "\(written): unknown form; expected ${\(name)}, ${\(name):-default}, ${\(name)-default}, ${\(name):?message} or ${\(name)?message}"))
            }
        }
        return String(out)
    }
}
