"""An independent model of the collector's output, computed straight from a `cascade,t,m` file.

Collector semantics (README, spec §3): a cascade ends at its first gap longer than `terminated`
seconds (later events are late and dropped), or at the end of the stream; its series for window W
holds its kept events with t <= W and exists if it has >= min_size of them; its size (one per
window) is the number of kept events, sent if >= min_size.
"""
import csv
import gzip
from collections import defaultdict


def read_cascades(path):
    """{cascade id: [(t, m), ...]} from a `cascade,t,m` CSV (optionally gzip-compressed)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    cascades = defaultdict(list)
    with opener(path, "rt", newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["cascade", "t", "m"]
        for cid, t, m in reader:
            cascades[int(cid)].append((float(t), float(m)))
    return cascades


def expected_output(cascades, windows, terminated, min_size):
    """(series, sizes, dropped): series {(cid, W): [[t, m], ...]}, sizes {(cid, W): n_tot},
    dropped = number of late events."""
    series, sizes, dropped = {}, {}, 0
    for cid, events in cascades.items():
        kept = [events[0]]
        for event in events[1:]:
            if event[0] - kept[-1][0] > terminated:
                break
            kept.append(event)
        dropped += len(events) - len(kept)
        for w in windows:
            observed = [[t, m] for t, m in kept if t <= w]
            if len(observed) >= min_size:
                series[(cid, w)] = observed
            if len(kept) >= min_size:
                sizes[(cid, w)] = len(kept)
    return series, sizes, dropped
