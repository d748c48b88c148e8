#include "early_signals.h"
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static const int stop_signal_numbers[] = {SIGHUP, SIGINT, SIGTERM};
enum { stop_signal_count = 3 };

/// Bit `n` set: signal `n` arrived before its real handler was installed.
static int early_pending;

static void stop_signals(sigset_t *set) {
    sigemptyset(set);
    for (int i = 0; i < stop_signal_count; i++) sigaddset(set, stop_signal_numbers[i]);
}

static void record_early_signal(int signo) {
    __atomic_fetch_or(&early_pending, 1 << signo, __ATOMIC_SEQ_CST);
}

__attribute__((constructor)) static void tweetoscope_block_stop_signals(void) {
    sigset_t set;
    stop_signals(&set);
    // Blocked in this (the only) thread, so every later thread inherits the mask; and caught,
    // because libdispatch's main thread waits in sigsuspend() with an empty mask, where a
    // blocked-elsewhere signal with its default action would end the process.
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = record_early_signal;
    action.sa_mask = set;
    action.sa_flags = SA_RESTART;
    for (int i = 0; i < stop_signal_count; i++) sigaction(stop_signal_numbers[i], &action, 0);
    pthread_sigmask(SIG_BLOCK, &set, 0);
}

static int take_early_signals(void) {
    return __atomic_exchange_n(&early_pending, 0, __ATOMIC_SEQ_CST);
}

void tweetoscope_unblock_stop_signals(void) {
    sigset_t set;
    stop_signals(&set);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    for (int i = 0; i < stop_signal_count; i++) sigaction(stop_signal_numbers[i], &action, 0);
    pthread_sigmask(SIG_UNBLOCK, &set, 0);
    int pending = take_early_signals();
    for (int i = 0; i < stop_signal_count; i++)
        if (pending & (1 << stop_signal_numbers[i])) raise(stop_signal_numbers[i]);
}

int tweetoscope_redeliver_early_signals(void) {
    int pending = take_early_signals();
    int count = 0;
    for (int i = 0; i < stop_signal_count; i++) {
        if (pending & (1 << stop_signal_numbers[i])) {
            kill(getpid(), stop_signal_numbers[i]);
            count++;
        }
    }
    return count;
}
