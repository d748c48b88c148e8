// `tweetoscoped graph`: the pipeline of a configuration as a Graphviz DOT digraph, like
// `vector graph`: stages are boxes, streams ellipses, and the topics of stages with a `topic`
// option (the Kafka sources and sinks) cylinders at the edges of the graph.
import TweetoscopeCore

/// Renders a validated configuration as DOT.
public enum PipelineGraph {
    /// The DOT text of `config`: `digraph tweetoscope { ... }`, nodes and edges in
    /// configuration order (the same configuration always gives the same text).
    ///
    /// Node ids: `stage:<name>`, `stream:<name>`, `topic:<brokers>/<topic>`. Edges: producer stage
    /// -> stream (labelled with the output port), stream -> consumer stage (input port); a stage
    /// with a `topic` option and no input reads its topic (topic -> stage), one with no output
    /// writes it (stage -> topic).
    public static func dot(_ config: PipelineConfig) -> String {
        var lines = ["digraph tweetoscope {", "  rankdir=LR;", "  node [fontname=\"Helvetica\"];",
                     "  edge [fontname=\"Helvetica\", fontsize=10];"]
        var streams: [String] = []
        var topics: [String] = []
        for stage in config.stages {
            lines.append("  \(quote("stage:\(stage.name)")) [shape=box, style=rounded, label=\(quote("\(stage.name)\n(\(stage.type))"))];")
            for port in stage.outputs.keys.sorted() where !streams.contains(stage.outputs[port]!.stream) {
                streams.append(stage.outputs[port]!.stream)
            }
            for port in stage.inputs.keys.sorted() {
                for b in stage.inputs[port]! where !streams.contains(b.stream) { streams.append(b.stream) }
            }
        }
        for s in streams { lines.append("  \(quote("stream:\(s)")) [shape=ellipse, label=\(quote(s))];") }
        var edges: [String] = []
        for stage in config.stages {
            let id = quote("stage:\(stage.name)")
            for port in stage.outputs.keys.sorted() {
                edges.append("  \(id) -> \(quote("stream:\(stage.outputs[port]!.stream)")) [label=\(quote(port))];")
            }
            for port in stage.inputs.keys.sorted() {
                for b in stage.inputs[port]! {
                    edges.append("  \(quote("stream:\(b.stream)")) -> \(id) [label=\(quote(port))];")
                }
            }
            if case .string(let topic)? = stage.options.values["topic"] {
                let brokers: String
                if case .string(let b)? = stage.options.values["brokers"] { brokers = b } else { brokers = "" }
                let topicID = "topic:\(brokers)/\(topic)"
                if !topics.contains(topicID) {
                    topics.append(topicID)
                    let label = brokers.isEmpty ? "topic \(topic)" : "Kafka topic \(topic)\n\(brokers)"
                    lines.append("  \(quote(topicID)) [shape=cylinder, label=\(quote(label))];")
                }
                if stage.inputs.isEmpty { edges.append("  \(quote(topicID)) -> \(id) [style=dashed];") }
                if stage.outputs.isEmpty { edges.append("  \(id) -> \(quote(topicID)) [style=dashed];") }
            }
        }
        return (lines + edges + ["}"]).joined(separator: "\n") + "\n"
    }

    /// A DOT double-quoted string (quotes and backslashes escaped, newlines as `\n`).
    static func quote(_ s: String) -> String {
        var out = "\""
        for c in s {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out + "\""
    }
}
