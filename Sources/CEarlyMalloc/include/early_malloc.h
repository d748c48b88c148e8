// glibc malloc settings of tweetoscoped, made by a constructor of the executable before `main`,
// while the process has one thread: M_ARENA_MAX only holds for arenas not created yet, and every
// thread that allocates before it is set gets an arena of its own.
//
// - M_MMAP_THRESHOLD 4 MiB: a message batch is not mapped afresh and page-faulted page by page
//   at every batch (issue 17: ~15 % of the event path's CPU; page faults per SEISMIC run 39 k ->
//   11 k); it comes from the arena.
// - M_TRIM_THRESHOLD 32 MiB: an arena keeps up to 32 MiB of free memory before trimming.
// - M_ARENA_MAX 1: one arena for every thread. With glibc's default (an arena per thread, up to
//   8 per core) each arena kept its own free memory, and the peak RSS depended on which threads
//   had allocated what: SEISMIC `full` 47 ± 3 MB at x1 and 52-54 MB at x4 of the input; with one
//   arena 43 MB and 47 MB, the same from run to run, for no measurable CPU on 2 cores (`full`
//   1.70-1.76 CPU s both; the Kafka path 2.2-2.9 µs of daemon CPU per tweet both).
//
// An operator's own GLIBC_TUNABLES for malloc (any `glibc.malloc.` tunable) take precedence:
// then nothing is set here.
#pragma once

/// 1 when the constructor set the malloc options, 0 when GLIBC_TUNABLES had malloc tunables.
int tweetoscope_malloc_tuned(void);
