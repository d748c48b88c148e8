// A dedicated OS thread that runs blocking librdkafka calls (polls with timeouts, synchronous
// commits, closing a consumer) one after the other, so that Swift concurrency's cooperative
// threads never block on the network.
import Dispatch
import Glibc
import Synchronization

/// Names a thread as `top` and `gdb` list it (at most 15 bytes) with pthread_setname_np, a GNU
/// extension that the Glibc module does not show, looked up at run time.
private func setThreadName(_ thread: pthread_t, _ name: String) -> Int32 {
    typealias SetName = @convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32
    guard let symbol = dlsym(nil, "pthread_setname_np") else { return -1 }  // nil: RTLD_DEFAULT
    return unsafeBitCast(symbol, to: SetName.self)(thread, name)
}

/// A serial executor of blocking jobs on its own pthread.
final class BlockingWorker: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var jobs: [() -> Void] = []
    private var stopping = false
    private var thread = pthread_t()
    private var joined = false

    init(name: String) {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
        let box = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let worker = Unmanaged<BlockingWorker>.fromOpaque(arg!).takeRetainedValue()
            worker.loop()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        _ = setThreadName(thread, String(name.prefix(15)))
    }

    deinit {
        pthread_mutex_destroy(mutex)
        pthread_cond_destroy(cond)
        mutex.deallocate()
        cond.deallocate()
    }

    private func loop() {
        while true {
            pthread_mutex_lock(mutex)
            while jobs.isEmpty && !stopping { pthread_cond_wait(cond, mutex) }
            if jobs.isEmpty && stopping {
                pthread_mutex_unlock(mutex)
                return
            }
            let job = jobs.removeFirst()
            pthread_mutex_unlock(mutex)
            job()
        }
    }

    /// Queues `job` on the thread without waiting for it.
    func submit(_ job: @escaping () -> Void) {
        pthread_mutex_lock(mutex)
        jobs.append(job)
        pthread_cond_signal(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Runs `body` on the thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (cont: CheckedContinuation<T, Never>) in
            submit { cont.resume(returning: body()) }
        }
    }

    /// Runs `body` on the thread and returns its result, or nil once `timeout` has passed
    /// first: the job goes on (a blocking librdkafka call cannot be interrupted) and its result
    /// is dropped. For shutdown steps that must not wait forever (closing a consumer whose topic
    /// was deleted, a synchronous commit to an unreachable coordinator).
    func run<T: Sendable>(timeout: Duration, _ body: @escaping @Sendable () -> T) async -> T? {
        let once = ResumeOnce<T?>()
        return await withCheckedContinuation { (cont: CheckedContinuation<T?, Never>) in
            once.set(cont)
            submit { once.resume(body()) }
            let ms = max(0, Int(timeout.clampedMilliseconds))
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(ms)) { once.resume(nil) }
        }
    }

    /// Lets the queued jobs finish, then ends the thread and waits for it.
    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        let alreadyJoined = joined
        joined = true
        pthread_cond_signal(cond)
        pthread_mutex_unlock(mutex)
        if !alreadyJoined { pthread_join(thread, nil) }
    }
}

extension Duration {
    /// Whole milliseconds, clamped to Int32: the timeouts librdkafka's C API takes.
    var clampedMilliseconds: Int32 {
        Int32(clamping: components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000)
    }
}

/// A continuation resumed by whichever of two events comes first.
final class ResumeOnce<T: Sendable>: Sendable {
    private let state = Mutex<(cont: CheckedContinuation<T, Never>?, done: Bool)>((nil, false))

    func set(_ cont: CheckedContinuation<T, Never>) {
        state.withLock { $0.cont = cont }
    }

    func resume(_ value: T) {
        let cont: CheckedContinuation<T, Never>? = state.withLock { s in
            guard !s.done, let c = s.cont else { return nil }
            s.done = true
            s.cont = nil
            return c
        }
        cont?.resume(returning: value)
    }
}
