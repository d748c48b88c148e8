// Structural checks of a configuration document that libyaml's loader does not make: one
// document only, bounded nesting checked in linear time, and no key given twice in a mapping.
import CYaml
import TweetoscopeCore

/// Deepest nesting of sequences and mappings accepted in a configuration (a configuration needs
/// about 4 levels).
public let maxYAMLDepth = 64

/// Checks the event stream of `bytes` before the document is loaded:
/// - nesting deeper than ``maxYAMLDepth`` levels is rejected as soon as it is reached, so the
///   cost is linear in the input (libyaml's scanner does work proportional to the current flow
///   depth for every token, so loading 100,000 nested `[` first took 71 s);
/// - a second document (`---` after a first document) is rejected: libyaml's loader would read
///   the first one only and silently ignore the rest of the file.
///
/// Syntax errors are left to the loader, which reports them with their position.
/// - Throws: ``YAMLSyntaxError`` at the position of the offending node or document.
func checkYAMLStructure(_ bytes: [UInt8], file: String) throws {
    var parser = yaml_parser_t()
    guard yaml_parser_initialize(&parser) == 1 else { return }
    defer { yaml_parser_delete(&parser) }
    try bytes.withUnsafeBufferPointer { buffer in
        yaml_parser_set_input_string(&parser, buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!, buffer.count)
        var depth = 0
        var documents = 0
        while true {
            var event = yaml_event_t()
            guard yaml_parser_parse(&parser, &event) == 1 else { return }  // the loader reports it
            defer { yaml_event_delete(&event) }
            let mark = SourceMark(file: file, line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
            switch event.type {
            case YAML_STREAM_END_EVENT:
                return
            case YAML_DOCUMENT_START_EVENT:
                documents += 1
                if documents > 1 {
                    throw YAMLSyntaxError(mark: mark, message: "a second YAML document starts here: a configuration file holds one document (the loader would ignore everything from here)")
                }
            case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                depth += 1
                if depth > maxYAMLDepth {
                    throw YAMLSyntaxError(mark: mark, message: "nesting deeper than \(maxYAMLDepth) levels")
                }
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                depth -= 1
            default:
                break
            }
        }
    }
}

/// Every key given twice in a mapping, at any level of `node`: YAML keeps only one value per
/// key, so a second `stages:` block (or a second option of a stage) would silently replace or
/// hide the first. One diagnostic per repeated key, at the repetition, naming the first one.
func duplicateKeyDiagnostics(_ node: YAMLNode) -> [ConfigDiagnostic] {
    var found: [ConfigDiagnostic] = []
    var stack = [node]
    while let current = stack.popLast() {
        switch current {
        case .scalar:
            break
        case .sequence(let items, _):
            stack.append(contentsOf: items.reversed())
        case .mapping(let pairs, _):
            var first: [String: SourceMark] = [:]
            for (key, keyMark, value) in pairs {
                if let earlier = first[key] {
                    found.append(ConfigDiagnostic(keyMark, "key `\(key)` is given twice in the same mapping (first at line \(earlier.line), column \(earlier.column)); YAML would keep only one of them"))
                } else {
                    first[key] = keyMark
                }
                stack.append(value)
            }
        }
    }
    return found.sorted { ($0.mark?.line ?? 0, $0.mark?.column ?? 0) < ($1.mark?.line ?? 0, $1.mark?.column ?? 0) }
}

extension ConfigLoader {
    /// Checks a converted option value against its declared physical range
    /// (``OptionSpec/range``): a number, or each number of a list. Every option is checked before
    /// the stage is made, so every out-of-range option of every stage is reported at once.
    static func checkRange(_ value: OptionValue, of spec: OptionSpec, at mark: SourceMark, stage: String,
                           errors: inout [ConfigDiagnostic]) {
        guard let range = spec.range else { return }
        func number(_ v: OptionValue) -> Double? {
            switch v {
            case .int(let i): Double(i)
            case .double(let d): d
            default: nil
            }
        }
        let numbers: [Double]
        switch value {
        case .list(let items): numbers = items.compactMap(number)
        default: numbers = number(value).map { [$0] } ?? []
        }
        for x in numbers where !(x.isFinite && range.contains(x)) {
            errors.append(ConfigDiagnostic(mark, "stage \"\(stage)\": option `\(spec.key)`: \(text(x)) is out of its range \(text(range.lowerBound))...\(text(range.upperBound)) (\(spec.doc))"))
            return
        }
    }

    /// A number as written in a configuration: integers without a fraction.
    private static func text(_ x: Double) -> String {
        if x.isFinite && x == x.rounded() && abs(x) < 1e15 { return String(Int64(x)) }
        return "\(x)"
    }
}

extension ConfigLoader {
    /// Input ports declaring ``PortSpec/sameOptions``: each such option must have the same value
    /// in the consuming stage and in every producer of the bound streams that has the option
    /// (the predictor's `models` and the learner's `mode`); otherwise `run` would ignore every
    /// model it receives.
    static func checkSameOptions(_ stages: [StageConfig], errors: inout [ConfigDiagnostic]) {
        for stage in stages {
            for spec in stage.descriptor.inputs where !spec.sameOptions.isEmpty {
                for (stream, mark) in stage.inputs[spec.name] ?? [] {
                    for producer in stages where producer.outputs.values.contains(where: { $0.stream == stream }) {
                        for key in spec.sameOptions {
                            guard producer.descriptor.options.contains(where: { $0.key == key }),
                                  let mine = stage.options.values[key], let theirs = producer.options.values[key],
                                  mine != theirs else { continue }
                            errors.append(ConfigDiagnostic(mark, "stage \"\(stage.name)\": input `\(spec.name)` reads stream \"\(stream)\" from stage \"\(producer.name)\" whose `\(key)` is \(theirs) while this stage's is \(mine); they must be equal"))
                        }
                    }
                }
            }
        }
    }
}
