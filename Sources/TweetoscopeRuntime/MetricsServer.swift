// The Prometheus endpoint: plain HTTP/1.1 with SwiftNIO: `GET /metrics`, the probes `GET /health`
// and `GET /ready` (Health.swift), and `GET /tap` when the tap is on (Tap.swift); 404 elsewhere.
// NIO lives in the runtime only; TweetoscopeCore renders the exposition.
import NIOCore
import NIOHTTP1
import NIOPosix
import TweetoscopeCore

/// Serves `GET /metrics` (and `HEAD`) with the exposition of ``TweetoscopeMetrics``, `/health`
/// (200 `alive`), `/ready` (200 `ready`, or 503 with one reason per line) and, with the tap on,
/// `/tap`; every other path is 404 and every other method is 405. One event-loop thread.
public final class MetricsServer: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let channel: any NIOCore.Channel
    /// The address actually bound (the port is the one chosen when 0 was asked).
    public let host: String
    public let port: Int

    private init(group: MultiThreadedEventLoopGroup, channel: any NIOCore.Channel, host: String, port: Int) {
        self.group = group
        self.channel = channel
        self.host = host
        self.port = port
    }

    /// `host:port`, an IPv6 address in brackets.
    public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Binds `host:port` and starts serving.
    /// - Throws: the bind error (address in use, unknown host...).
    public static func start(host: String, port: Int) async throws -> MetricsServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler())
                }
            }
        do {
            let channel = try await bootstrap.bind(host: host, port: port).get()
            let bound = channel.localAddress?.port ?? port
            return MetricsServer(group: group, channel: channel, host: host, port: bound)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Closes the listening socket and the connections.
    public func stop() async {
        TapHub.shared.closeAll()
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

/// One HTTP connection: answers each request once its end has arrived.
final class MetricsHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var head: HTTPRequestHead?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body:
            break
        case .end:
            guard let request = head else { return }
            head = nil
            respond(context, request)
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ request: HTTPRequestHead) {
        let parts = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = parts.first.map(String.init) ?? ""
        let query = parts.count > 1 ? String(parts[1]) : ""
        var headers = HTTPHeaders()
        var status: HTTPResponseStatus = .ok
        let body: [UInt8]
        let known = ["/metrics", "/health", "/ready", "/tap"]
        if known.contains(path) && request.method != .GET && request.method != .HEAD {
            status = .methodNotAllowed
            body = Array("only GET \(path) is served\n".utf8)
            headers.add(name: "Allow", value: "GET, HEAD")
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        } else if path == "/metrics" {
            body = TweetoscopeMetrics.exposition()
            headers.add(name: "Content-Type", value: TweetoscopeMetrics.contentType)
        } else if path == "/health" {
            body = Array("alive\n".utf8)
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        } else if path == "/ready" {
            let problems = DaemonHealth.shared.readinessProblems
            status = problems.isEmpty ? .ok : .serviceUnavailable
            body = Array((problems.isEmpty ? "ready\n" : problems.map { "not ready: \($0)\n" }.joined()).utf8)
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        } else if path == "/tap" {
            switch TapRequest.parse(query: query, streams: DaemonHealth.shared.streamNames, enabled: TapHub.shared.isEnabled) {
            case .success(let tap) where request.method == .GET:
                startTap(context, request, tap)
                return
            case .success:
                body = []
            case .failure(let problem):
                status = problem.status
                body = Array((problem.text + "\n").utf8)
            }
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        } else {
            status = .notFound
            body = Array("not found: this endpoint serves GET /metrics, /health, /ready and /tap\n".utf8)
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        }
        headers.add(name: "Content-Length", value: "\(body.count)")
        let keepAlive = request.isKeepAlive
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))),
                      promise: nil)
        if request.method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// A valid `/tap` query: the streams and the message limit (0: none).
struct TapRequest {
    var streams: Set<String>
    var limit: Int

    struct Problem: Error {
        var status: HTTPResponseStatus
        var text: String
    }

    /// Parses `stream=NAME&stream=NAME&limit=N` against the running pipeline's streams.
    static func parse(query: String, streams known: [String], enabled: Bool) -> Result<TapRequest, Problem> {
        guard enabled else {
            return .failure(Problem(status: .notFound, text: "the tap is off: set `tap: true` in the `metrics` section (loopback listen address) and reload"))
        }
        var streams = Set<String>()
        var limit = 0
        for item in query.split(separator: "&") {
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = kv[0], value = kv.count > 1 ? String(kv[1]).removingPercentEncoding : ""
            switch key {
            case "stream": streams.insert(value)
            case "limit":
                guard let n = Int(value), n >= 0 else {
                    return .failure(Problem(status: .badRequest, text: "limit: expected an integer >= 0, found \"\(value)\""))
                }
                limit = n
            default:
                return .failure(Problem(status: .badRequest, text: "unknown parameter `\(key)` (stream=NAME, limit=N)"))
            }
        }
        guard !streams.isEmpty else {
            return .failure(Problem(status: .badRequest, text: "give at least one stream=NAME (streams: \(known.joined(separator: ", ")))"))
        }
        for s in streams.sorted() where !known.contains(s) {
            var text = "unknown stream \"\(s)\""
            if let guess = suggestion(for: s, among: known) { text += "; did you mean \"\(guess)\"?" }
            return .failure(Problem(status: .notFound, text: text + " (streams: \(known.joined(separator: ", ")))"))
        }
        return .success(TapRequest(streams: streams, limit: limit))
    }
}

extension String {
    /// The string with `%XX` escapes and `+` decoded (URL query values); the raw string when malformed.
    var removingPercentEncoding: String {
        var bytes: [UInt8] = []
        var it = Array(utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "+") { bytes.append(UInt8(ascii: " ")); continue }
            if b == UInt8(ascii: "%"), it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(v); it = it.dropFirst(2); continue
            }
            bytes.append(b)
        }
        return String(validating: bytes, as: UTF8.self) ?? self
    }
}

extension MetricsHTTPHandler {
    /// Streams the tap's lines until the limit, the client leaving, or the daemon stopping.
    /// Each write is awaited: a slow client makes this tap's queue fill and drop, never the
    /// pipeline wait.
    func startTap(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ tap: TapRequest) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/x-ndjson")
        headers.add(name: "Connection", value: "close")
        headers.add(name: "Cache-Control", value: "no-store")
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: .ok, headers: headers))),
                              promise: nil)
        let channel = context.channel
        let hub = TapHub.shared
        let id = hub.open(streams: tap.streams)
        channel.closeFuture.whenComplete { _ in hub.close(id) }
        let logger = Logger(label: "tweetoscoped.tap")
        logger.info("tap opened", metadata: ["streams": .string(tap.streams.sorted().joined(separator: ",")),
                                             "limit": .string("\(tap.limit)")])
        Task {
            var sent = 0
            var dropped = 0
            loop: while let (messages, lost) = await hub.next(id) {
                var bytes: [UInt8] = []
                if lost > 0 {
                    dropped += lost
                    bytes += Array("{\"dropped\":\(lost)}\n".utf8)
                }
                for (stream, message) in messages {
                    if tap.limit > 0 && sent >= tap.limit { break }
                    bytes += TapHub.line(stream: stream, message: message)
                    sent += 1
                }
                var buffer = channel.allocator.buffer(capacity: bytes.count)
                buffer.writeBytes(bytes)
                do {
                    try await channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer))).get()
                } catch {
                    break loop
                }
                if tap.limit > 0 && sent >= tap.limit { break }
            }
            hub.close(id)
            if dropped > 0 {
                logger.warning("tap too slow: messages dropped for it (the pipeline did not wait)",
                               metadata: ["dropped": .string("\(dropped)"), "sent": .string("\(sent)")])
            }
            logger.info("tap closed", metadata: ["sent": .string("\(sent)"), "dropped": .string("\(dropped)")])
            try? await channel.writeAndFlush(HTTPServerResponsePart.end(nil)).get()
            try? await channel.close()
        }
    }
}
