// A YAML document tree with source positions, parsed by the system libyaml.
import CYaml

/// A position in a configuration file; line and column are 1-based.
public struct SourceMark: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// One node of a YAML document.
public indirect enum YAMLNode: Sendable {
    /// A scalar; `plain` is false for quoted or block scalars, which are always strings.
    case scalar(String, plain: Bool, SourceMark)
    case sequence([YAMLNode], SourceMark)
    /// A mapping, in document order; keys are scalars.
    case mapping([(key: String, keyMark: SourceMark, value: YAMLNode)], SourceMark)

    public var mark: SourceMark {
        switch self {
        case .scalar(_, _, let m), .sequence(_, let m), .mapping(_, let m): m
        }
    }

    /// A short name of the node's kind, for error messages.
    public var kindName: String {
        switch self {
        case .scalar(let s, let plain, _):
            if plain, s.isEmpty || s == "~" || s == "null" { return "null" }
            return "scalar \"\(s)\""
        case .sequence: return "a list"
        case .mapping: return "a mapping"
        }
    }
}

/// A YAML syntax error with its position.
public struct YAMLSyntaxError: Error, Sendable {
    public var mark: SourceMark
    public var message: String
}

/// Most nodes of a document once aliases are expanded: a few aliases of aliases could otherwise
/// expand to billions of nodes ("billion laughs").
public let maxYAMLNodes = 100_000

/// Parses YAML text into a node tree with libyaml. An empty document gives nil.
///
/// - Throws: `YAMLSyntaxError` at the position libyaml reports; for a second document or nesting
///   deeper than ``maxYAMLDepth`` (``checkYAMLStructure(_:file:)``); also for aliases nested deeper
///   than 64 levels (libyaml resolves aliases to shared nodes, so a cycle guard is needed), and
///   for documents of more than ``maxYAMLNodes`` nodes after alias expansion.
public func parseYAML(_ text: String, file: String) throws -> YAMLNode? {
    var parser = yaml_parser_t()
    guard yaml_parser_initialize(&parser) == 1 else {
        throw YAMLSyntaxError(mark: SourceMark(file: file, line: 1, column: 1), message: "cannot initialise libyaml")
    }
    defer { yaml_parser_delete(&parser) }
    let bytes = Array(text.utf8)
    try checkYAMLStructure(bytes, file: file)  // one document, bounded depth (YAMLChecks.swift)
    var document = yaml_document_t()
    let loaded = bytes.withUnsafeBufferPointer { buffer -> Int32 in
        yaml_parser_set_input_string(&parser, buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!, buffer.count)
        return yaml_parser_load(&parser, &document)
    }
    guard loaded == 1 else {
        let problem = parser.problem.map { String(cString: $0) } ?? "syntax error"
        let context = parser.context.map { String(cString: $0) + ": " } ?? ""
        let mark = parser.problem_mark
        throw YAMLSyntaxError(mark: SourceMark(file: file, line: Int(mark.line) + 1, column: Int(mark.column) + 1),
                              message: "invalid YAML: \(context)\(problem)")
    }
    defer { yaml_document_delete(&document) }
    guard let root = yaml_document_get_root_node(&document) else { return nil }

    var nodes = 0
    func convert(_ node: UnsafeMutablePointer<yaml_node_t>, depth: Int) throws -> YAMLNode {
        let n = node.pointee
        let mark = SourceMark(file: file, line: Int(n.start_mark.line) + 1, column: Int(n.start_mark.column) + 1)
        guard depth < 64 else { throw YAMLSyntaxError(mark: mark, message: "nesting deeper than 64 levels") }
        nodes += 1
        guard nodes <= maxYAMLNodes else {
            throw YAMLSyntaxError(mark: mark, message: "more than \(maxYAMLNodes) nodes once aliases are expanded")
        }
        switch n.type {
        case YAML_SCALAR_NODE:
            let s = n.data.scalar
            let value = String(decoding: UnsafeBufferPointer(start: s.value, count: s.length), as: UTF8.self)
            return .scalar(value, plain: s.style == YAML_PLAIN_SCALAR_STYLE, mark)
        case YAML_SEQUENCE_NODE:
            var items: [YAMLNode] = []
            var item = n.data.sequence.items.start
            while let current = item, current != n.data.sequence.items.top {
                if let child = yaml_document_get_node(&document, current.pointee) {
                    items.append(try convert(child, depth: depth + 1))
                }
                item = current + 1
            }
            return .sequence(items, mark)
        case YAML_MAPPING_NODE:
            var pairs: [(key: String, keyMark: SourceMark, value: YAMLNode)] = []
            var pair = n.data.mapping.pairs.start
            while let current = pair, current != n.data.mapping.pairs.top {
                guard let k = yaml_document_get_node(&document, current.pointee.key),
                      let v = yaml_document_get_node(&document, current.pointee.value) else { break }
                let key = try convert(k, depth: depth + 1)
                guard case .scalar(let name, _, let keyMark) = key else {
                    throw YAMLSyntaxError(mark: key.mark, message: "mapping keys must be scalars")
                }
                pairs.append((name, keyMark, try convert(v, depth: depth + 1)))
                pair = current + 1
            }
            return .mapping(pairs, mark)
        default:
            return .scalar("", plain: true, mark)
        }
    }
    return try convert(root, depth: 0)
}

/// The version of the libyaml library in use, e.g. "0.2.5".
public var libyamlVersion: String { String(cString: yaml_get_version_string()) }
