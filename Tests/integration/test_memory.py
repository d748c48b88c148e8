"""Issue 17, memory: `tweetoscoped` sets glibc's malloc options before `main` (CEarlyMalloc), one
arena for every thread; an operator's GLIBC_TUNABLES take precedence.

The arenas are counted from outside, in /proc/<pid>/maps: glibc gives every arena but the main
one a heap of its own, reserved as one 64 MiB mapping aligned on 64 MiB (HEAP_MAX_SIZE on 64-bit
systems, malloc/arena.c), of which the part in use is read-write and the rest inaccessible. So a
run of adjacent anonymous mappings starting on a 64 MiB boundary, read-write then `---p`, adding
up to exactly 64 MiB, is one such heap. Thread stacks (8 MiB plus a guard page) never match."""
import os
import signal
import subprocess
import time

from conftest import ROOT

HEAP = 64 << 20


def arena_heaps(pid):
    """Number of non-main malloc arena heaps mapped by `pid`."""
    regions = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            start, end = (int(x, 16) for x in parts[0].split("-"))
            anonymous = len(parts) < 6
            regions.append((start, end, parts[1], anonymous))
    count = 0
    for i, (start, end, perms, anonymous) in enumerate(regions):
        if not anonymous or start % HEAP or not perms.startswith("rw"):
            continue
        size = end - start
        j = i + 1
        while size < HEAP and j < len(regions) and regions[j][0] == start + size and regions[j][3] \
                and regions[j][2] == "---p":
            size += regions[j][1] - regions[j][0]
            j += 1
        if size == HEAP:
            count += 1
    return count


def running_daemon(daemon, tmp_path, env):
    """Starts a replay at 100x real time (it runs for minutes) with a collector, an estimator
    and a file sink; returns the process after 3 s of running."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""\
log_level: info
plugins: [replay, collector, estimator, file]
stages:
  source:
    type: replay
    outputs: {{ tweets: tweets }}
    path: {ROOT / "data" / "sample.csv"}
    time_acceleration: 100
  collector:
    type: collector
    inputs: {{ tweets: tweets }}
    outputs: {{ series: cascade_series, sizes: cascade_properties }}
    windows: [600]
    terminated: 1800
  estimator:
    type: estimator
    inputs: {{ series: cascade_series }}
    outputs: {{ parameters: cascade_properties }}
  sink:
    type: file
    inputs: {{ streams: [cascade_series, cascade_properties] }}
    directory: {out}
""")
    p = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(3)
    if p.poll() is not None:
        raise AssertionError(f"the daemon ended early ({p.returncode}): {p.communicate()[1][-2000:]}")
    return p


def stop(p):
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    return err


def test_one_malloc_arena_unless_the_operator_sets_glibc_tunables(daemon, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    p = running_daemon(daemon, tmp_path / "default", env)
    try:
        heaps = arena_heaps(p.pid)
    finally:
        err = stop(p)
    assert heaps == 0, f"{heaps} arena heaps with the daemon's own malloc options"
    assert 'malloc=one arena' in err, err[-2000:]

    # The operator's tunables win: glibc's own default of one arena per thread comes back, and
    # the stage threads that allocate get arena heaps of their own.
    env["GLIBC_TUNABLES"] = "glibc.malloc.arena_max=8"
    p = running_daemon(daemon, tmp_path / "tunables", env)
    try:
        heaps = arena_heaps(p.pid)
    finally:
        err = stop(p)
    assert heaps >= 1, "no arena heap under GLIBC_TUNABLES=glibc.malloc.arena_max=8"
    assert "malloc=GLIBC_TUNABLES" in err, err[-2000:]
