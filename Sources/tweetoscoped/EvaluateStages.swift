// In-process stages of `tweetoscoped evaluate`: a source that sends messages held in memory and a
// sink that keeps what it reads, so the command can drive the project's own plugins (collector,
// estimator, predictor, learner) through the runtime's Pipeline without files in between.
import Synchronization
import TweetoscopeCore

/// Messages handed to `evaluate_input` stages and collected by `evaluate_output` stages, by slot
/// name (an option of both stage types).
final class EvaluationSlots: Sendable {
    static let shared = EvaluationSlots()
    private let inputs = Mutex<[String: [Message]]>([:])
    private let outputs = Mutex<[String: [Message]]>([:])

    /// Makes `messages` what the `evaluate_input` stage of `slot` sends.
    func provide(_ slot: String, _ messages: [Message]) { inputs.withLock { $0[slot] = messages } }

    /// What the input stage of `slot` sends (taken: a slot is sent once).
    func take(_ slot: String) -> [Message] { inputs.withLock { $0.removeValue(forKey: slot) ?? [] } }

    func append(_ slot: String, _ messages: [Message]) { outputs.withLock { $0[slot, default: []] += messages } }

    /// What the output stage of `slot` received, in arrival order (taken).
    func collected(_ slot: String) -> [Message] { outputs.withLock { $0.removeValue(forKey: slot) ?? [] } }

    /// The in-process stage types, registered next to the plugins' by `evaluate`.
    static let descriptors: [StageDescriptor] = [
        StageDescriptor(
            type: "evaluate_input",
            summary: "tweetoscoped evaluate: sends messages held in memory, then ends.",
            inputs: [],
            outputs: [PortSpec("messages", kinds: Set(MessageKind.allCases), doc: "the slot's messages, in order")],
            options: [OptionSpec("slot", .string, required: true, doc: "name of the messages to send")],
            make: { _, options in MemoryInputStage(slot: try options.string("slot")) }),
        StageDescriptor(
            type: "evaluate_output",
            summary: "tweetoscoped evaluate: keeps every message it reads in memory.",
            inputs: [PortSpec("messages", kinds: Set(MessageKind.allCases), multiple: true, doc: "streams to keep")],
            outputs: [],
            options: [OptionSpec("slot", .string, required: true, doc: "name under which the messages are kept")],
            make: { _, options in MemoryOutputStage(slot: try options.string("slot")) }),
    ]
}

/// Sends the messages of its slot in batches of 256, in order.
final class MemoryInputStage: Stage {
    let slot: String
    init(slot: String) { self.slot = slot }

    func run(_ context: StageContext) async throws {
        let messages = EvaluationSlots.shared.take(slot)
        guard let output = context.output("messages") else { return }
        var start = 0
        while start < messages.count, !context.stopRequested {
            let end = min(start + 256, messages.count)
            await output.send(Array(messages[start..<end]))
            start = end
        }
        context.counters.add("sent", messages.count)
    }
}

/// Keeps every message of its inputs under its slot.
final class MemoryOutputStage: Stage {
    let slot: String
    init(slot: String) { self.slot = slot }

    func run(_ context: StageContext) async throws {
        let slot = self.slot
        await withTaskGroup(of: Void.self) { group in
            for (_, input) in context.allInputs {
                group.addTask {
                    while let batch = await input.next() {
                        EvaluationSlots.shared.append(slot, batch)
                        context.counters.add("received", batch.count)
                    }
                }
            }
        }
    }
}
