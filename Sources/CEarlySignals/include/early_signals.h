// The stop and reload signals of tweetoscoped (SIGHUP, SIGINT, SIGTERM) are blocked in every
// thread from before `main`: a constructor of the executable blocks them while the process has
// one thread, so every thread created later inherits the mask. `tweetoscoped run` then reads them
// from a signalfd (libdispatch's signal sources, swift-service-lifecycle's UnixSignals): one that
// arrives during start-up waits instead of killing the process (SIGHUP's default action).
#pragma once

/// Unblocks the three signals in the calling thread (for commands other than `run`, which keep
/// the default actions: Ctrl-C ends `top`).
void tweetoscope_unblock_stop_signals(void);
