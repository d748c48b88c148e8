#include "early_malloc.h"
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

static int tuned;

__attribute__((constructor)) static void tweetoscope_tune_malloc(void) {
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (tunables && strstr(tunables, "glibc.malloc.")) return;
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
    mallopt(M_ARENA_MAX, 1);
    tuned = 1;
}

int tweetoscope_malloc_tuned(void) { return tuned; }
