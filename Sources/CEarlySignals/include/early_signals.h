// The stop and reload signals of tweetoscoped (SIGHUP, SIGINT, SIGTERM), from before `main`: a
// constructor of the executable blocks them while the process has one thread (every thread
// created later inherits the mask) and catches them with a handler that only records them
// (libdispatch's main thread waits in sigsuspend() with an empty mask, where a signal with its
// default action would end the process). `tweetoscoped run` then takes them through libdispatch's
// signal sources (swift-service-lifecycle's UnixSignals) and re-sends the ones recorded before
// those sources were registered: a signal that arrives during start-up waits instead of killing
// the process (SIGHUP's default action). What no process can catch is a signal sent before its
// first instruction runs, while the dynamic loader maps the libraries.
#pragma once

/// Restores the default actions of the three signals, unblocks them in the calling thread and
/// raises the ones recorded so far (for commands other than `run`: Ctrl-C ends `top`).
void tweetoscope_unblock_stop_signals(void);

/// Sends to the process, once each, the signals recorded before their real handlers were
/// installed; returns how many. Call it once libdispatch's signal sources are registered.
int tweetoscope_redeliver_early_signals(void);
