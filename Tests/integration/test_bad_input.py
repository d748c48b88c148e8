"""Bad input end to end: a file of real records (data/sample.csv) with bad records of every kind
inserted at seeded random places, run through the daemon (source -> collector -> file sink, the
source's dead letters recorded too). Every good record must be processed (the collector's output
is the one of the clean file), every bad one counted under its reason and stage, dead-lettered
with its line, and the run must exit 0.

The expected counts are computed here by reading the written file back with an independent
classifier (the documented rules of the decoders, README "Rejected records") and a small model
of the collector's rejections; the expected collector output comes from independent.py."""
import json
import math
import random
import re
from collections import Counter, defaultdict

from conftest import ROOT, run
from independent import expected_output, read_cascades
from pipeline import collector, file_sink, stage, write_config

SAMPLE = ROOT / "data" / "sample.csv"
MAX_RECORD_BYTES = 4096
MAX_TIME = 1e12
MAX_MAGNITUDE = 1e12
INT64 = (-(1 << 63), (1 << 63) - 1)
WINDOWS, TERMINATED, MIN_SIZE = (600, 1200), 1800, 10
DEFAULT_COLLECTOR = collector(WINDOWS, TERMINATED, MIN_SIZE)


def rejected_counts(stdout):
    """{(stage, reason): n} from the summary's `rejected records:` line."""
    line = next(l for l in stdout.splitlines() if l.startswith("rejected records:"))
    return {(s, r): int(n) for s, r, n in re.findall(r"(\w+): (\w+)=(\d+)", line)}


def stage_counter(stdout, stage, name):
    line = next(l for l in stdout.splitlines() if l.split()[:1] == [stage])
    return int(re.search(rf"\b{name}=(\d+)", line).group(1))


def dead_letters(path):
    """Counter of (reason, line number) of the dead letters in a file sink's JSON lines."""
    found = Counter()
    for line in path.read_text().splitlines():
        d = json.loads(line)
        assert d["level"] == "WARNING" and d["source"] == "source" and d["t"] > 1_700_000_000
        reason, location, _ = d["message"].split(": ", 2)
        found[(reason, int(location.rsplit(":", 1)[1]))] += 1
    return found


def collector_output(out):
    series = {}
    for line in (out / "cascade_series.jsonl").read_text().splitlines():
        s = json.loads(line)
        series[(s["cid"], s["T_obs"])] = s["tweets"]
    sizes = {}
    for line in (out / "cascade_properties.jsonl").read_text().splitlines():
        s = json.loads(line)
        sizes[(s["cid"], s["T_obs"])] = s["n_tot"]
    return series, sizes


class CollectorModel:
    """The collector's rejections on one source: out_of_order (time before the clock),
    duplicate_tweet, late_event (retweet of an ended cascade), unknown_cascade."""

    def __init__(self):
        self.clock = -math.inf
        self.last = {}        # open cascade -> last time
        self.ended = set()
        self.rejected = Counter()

    def event(self, kind, cid, t):
        if t < self.clock:
            self.rejected["out_of_order"] += 1
            return
        self.clock = t
        for c in [c for c, last in self.last.items() if last + TERMINATED < t]:
            del self.last[c]
            self.ended.add(c)
        if kind == "tweet":
            if cid in self.last or cid in self.ended:
                self.rejected["duplicate_tweet"] += 1
            else:
                self.last[cid] = t
        elif cid in self.last:
            self.last[cid] = t
        else:
            self.rejected["late_event" if cid in self.ended else "unknown_cascade"] += 1


# --------------------------------------------------------------------------------------------
# jsonl source

def json_reason(raw):
    """The reason the `jsonl` source rejects line `raw` (bytes), None for a blank line, or the
    tweet (kind, cascade, t) it accepts."""
    if len(raw) > MAX_RECORD_BYTES:
        return "oversized"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    if not text.strip():
        return None

    def no_constants(name):
        raise ValueError(name)
    try:
        value = json.loads(text, parse_constant=no_constants)
    except ValueError:
        return "invalid_json"
    if not isinstance(value, dict):
        return "invalid_json"
    kind = value.get("type")
    if kind in ("size", "serie", "parameters", "sample", "model", "alert", "stat"):
        return "not_a_tweet"   # (the test only writes well-formed ones)
    if kind not in ("tweet", "retweet"):
        return "unknown_type"
    for field in ("t", "m", "tweet_id"):
        if field not in value:
            return "missing_field"
        v = value[field]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "wrong_type"
    t, m, cid = value["t"], value["m"], value["tweet_id"]
    if isinstance(cid, float) and not (cid.is_integer() and INT64[0] <= cid <= INT64[1]):
        return "out_of_range"
    if isinstance(cid, int) and not INT64[0] <= cid <= INT64[1]:
        return "out_of_range"
    for x, bound in ((t, MAX_TIME), (m, MAX_MAGNITUDE)):
        if x == math.inf:
            return "out_of_range"   # a literal beyond a double (1e400)
        if x < 0:
            return "negative"
        if x > bound:
            return "out_of_range"
    return (kind, int(cid), float(t))


def good_tweets(cascades):
    """The sample's cascades as one source's tweets: cascade k starts at 50·k s; in time order."""
    events = []
    for k, cid in enumerate(sorted(cascades)):
        for i, (t, m) in enumerate(cascades[cid]):
            events.append((t + 50 * k, k, i, cid, m))
    events.sort()
    return [{"type": "tweet" if i == 0 else "retweet", "msg": "None", "t": t, "m": m, "tweet_id": cid}
            for t, _, i, cid, m in events]


BAD_JSON = [
    b'{"type": "tweet", "t": 1, "m": 2, "tweet_id": 3',
    b"not json at all",
    b"[1, 2, 3]",
    b'{"type": "tweet", "t": NaN, "m": 2, "tweet_id": 900001}',
    b'{"type": "tweet", "msg": "\xff\xfe", "t": 1, "m": 2, "tweet_id": 900002}',
    b'{"type": "retweet", "m": 2, "tweet_id": 0}',
    b'{"type": "retweet", "t": 5, "m": 2}',
    b'{"type": "retweet", "t": "5", "m": 2, "tweet_id": 0}',
    b'{"type": "retweet", "t": 5, "m": null, "tweet_id": 0}',
    b'{"type": "retweet", "t": -5, "m": 2, "tweet_id": 0}',
    b'{"type": "retweet", "t": 5, "m": -2, "tweet_id": 0}',
    b'{"type": "retweet", "t": 1e13, "m": 2, "tweet_id": 0}',
    b'{"type": "retweet", "t": 1e400, "m": 2, "tweet_id": 0}',
    b'{"type": "retweet", "t": 5, "m": 3e12, "tweet_id": 0}',
    b'{"type": "tweet", "t": 5, "m": 2, "tweet_id": 1e30}',
    b'{"type": "tweet", "t": 5, "m": 2, "tweet_id": 99999999999999999999}',
    b'{"type": "gossip", "t": 5}',
    b'{"type": "size", "cid": 1, "T_obs": 600, "n_tot": 3, "t_end": 9}',
    b'{"type": "tweet", "msg": "' + b"x" * 5000 + b'", "t": 1, "m": 2, "tweet_id": 900003}',
    b"",
]


def test_jsonl_source_mixed_good_and_bad_lines(daemon, tmp_path):
    cascades = read_cascades(SAMPLE)
    good = [json.dumps(d).encode() for d in good_tweets(cascades)]
    rng = random.Random(20211)
    # Each bad kind 3 times at random places; after some good lines a duplicate of an already
    # opened cascade's tweet (same time as that line: the clock does not move) or an event before
    # the clock (one second earlier).
    inserts = defaultdict(list)
    for bad in BAD_JSON * 3:
        inserts[rng.randrange(len(good) + 1)].append(bad)
    opened = []
    for i, line in enumerate(good):
        d = json.loads(line)
        if d["type"] == "tweet":
            opened.append(d["tweet_id"])
        if i > 100 and rng.random() < 0.004:
            inserts[i + 1].append(json.dumps(dict(d, type="tweet", tweet_id=rng.choice(opened))).encode())
        if i > 100 and d["t"] >= 1 and rng.random() < 0.004:
            inserts[i + 1].append(json.dumps(dict(d, t=d["t"] - 1)).encode())
    lines = []
    for i in range(len(good) + 1):
        lines += inserts.get(i, [])
        if i < len(good):
            lines.append(good[i])
    path = tmp_path / "tweets.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    # Expected counts, from the file as written.
    source_rejects, letters = Counter(), Counter()
    model = CollectorModel()
    accepted = 0
    for number, raw in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
        verdict = json_reason(raw)
        if verdict is None:
            continue
        if isinstance(verdict, str):
            source_rejects[verdict] += 1
            letters[(verdict, number)] += 1
        else:
            accepted += 1
            model.event(*verdict)
    assert len(source_rejects) == 9 and model.rejected["duplicate_tweet"] > 0 and model.rejected["out_of_order"] > 0

    out = tmp_path / "out"
    cfg = write_config(tmp_path / "jsonl.yaml", ["replay", "collector", "file"],
                       stage("source", "jsonl", outputs={"tweets": "tweets", "rejected": "dead_letters"},
                             path=path, max_record_bytes=MAX_RECORD_BYTES),
                       DEFAULT_COLLECTOR, file_sink(out, ["cascade_series", "cascade_properties", "dead_letters"]))
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    want = {("source", k): n for k, n in source_rejects.items()}
    want.update({("collector", k): n for k, n in model.rejected.items()})
    assert rejected_counts(r.stdout) == want
    assert stage_counter(r.stdout, "source", "events") == accepted
    assert stage_counter(r.stdout, "source", "dead_letters") == sum(letters.values())
    assert dead_letters(out / "dead_letters.jsonl") == letters
    # Every good record processed: the collector's output is the clean file's.
    want_series, want_sizes, dropped = expected_output(cascades, WINDOWS, TERMINATED, MIN_SIZE)
    assert model.rejected["late_event"] == dropped
    series, sizes = collector_output(out)
    assert sizes == want_sizes and series == want_series
    # The log names the reason and the line, rate-limited (at most 5 lines per reason here).
    assert re.search(rf"{re.escape(str(path))}:\d+: invalid UTF-8 at byte \d+; record skipped", r.stderr)
    assert len(re.findall(r"reason=invalid_json", r.stderr)) <= 5


# --------------------------------------------------------------------------------------------
# replay source (long-format CSV)

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
NON_FINITE_WORDS = {"nan", "inf", "infinity"}


def csv_number(field, integer):
    """(value, None) or (None, reason) for one numeric CSV field (blanks around it allowed)."""
    f = field.strip(" \t")
    if f.lower().lstrip("+-") in NON_FINITE_WORDS:
        return None, "non_finite"
    if integer:
        if not re.fullmatch(r"[+-]?\d+", f):
            return None, "wrong_type"
        v = int(f)
        return (v, None) if INT64[0] <= v <= INT64[1] else (None, "out_of_range")
    if not NUMBER.fullmatch(f):
        return None, "wrong_type"
    v = float(f)
    return (v, None) if math.isfinite(v) else (None, "non_finite")


def csv_reason(raw, state):
    """The reason the `replay` source rejects data row `raw` (bytes), None for an accepted or
    blank row. `state` = {"seen": set, "current": id, "last": t} follows the contiguity rules."""
    if len(raw) > MAX_RECORD_BYTES:
        return "oversized"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    if not text.strip(" \t"):
        return None
    fields = text.split(",")
    if len(fields) != 3:
        return "invalid_csv"
    cid, e1 = csv_number(fields[0], True)
    t, e2 = csv_number(fields[1], False)
    m, e3 = csv_number(fields[2], False)
    if e1 or e2 or e3:
        return e1 or e2 or e3
    if t < 0 or m < 0:
        return "negative"
    if t > MAX_TIME or m > MAX_MAGNITUDE:
        return "out_of_range"
    if cid != state["current"]:
        if cid in state["seen"]:
            return "not_contiguous"
        state["seen"].add(cid)
        state["current"] = cid
    elif t < state["last"]:
        return "out_of_order"
    state["last"] = t
    return None


BAD_CSV = [
    b"1,5", b"1,2,3,4", b"x,1,1", b"0,abc,1", b"0,1,", b"0,nan,1", b"0,1,inf", b"0,1e400,1",
    b"99999999999999999999,1,1", b"0,-1,1", b"0,1,-1", b"0,1e13,1", b"0,1,2e12", b"0,1,\xff",
    b"0,1," + b"9" * 5000, b"", b"  ",
]


def test_replay_source_mixed_good_and_bad_rows(daemon, tmp_path):
    rows = SAMPLE.read_bytes().split(b"\n")
    header, good = rows[0], [r for r in rows[1:] if r]
    rng = random.Random(7)
    inserts = defaultdict(list)
    for bad in BAD_CSV * 3:
        inserts[rng.randrange(1, len(good) + 1)].append(bad)
    # Rows that parse but break the layout: a row of an earlier cascade (not contiguous) and a
    # row one second before the previous one of its cascade (out of order).
    previous_ids = []
    for i, row in enumerate(good):
        cid, t, _ = row.split(b",")
        if not previous_ids or previous_ids[-1] != cid:
            previous_ids.append(cid)
        if len(previous_ids) > 2 and rng.random() < 0.003:
            inserts[i + 1].append(rng.choice(previous_ids[:-1]) + b",1,1")
        if float(t) >= 1 and rng.random() < 0.003:
            inserts[i + 1].append(cid + b"," + str(float(t) - 1).encode() + b",7")
    lines = [header]
    for i in range(len(good) + 1):
        lines += inserts.get(i, [])
        if i < len(good):
            lines.append(good[i])
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")

    expected, letters = Counter(), Counter()
    state = {"seen": set(), "current": None, "last": 0.0}
    accepted = 0
    for number, raw in enumerate(path.read_bytes().split(b"\n")[1:-1], start=2):
        reason = csv_reason(raw, state)
        if reason:
            expected[("source", reason)] += 1
            letters[(reason, number)] += 1
        elif raw.strip(b" \t"):
            accepted += 1
    assert len(expected) == 9 and expected[("source", "not_contiguous")] > 0 and expected[("source", "out_of_order")] > 0

    out = tmp_path / "out"
    cfg = write_config(tmp_path / "replay.yaml", ["replay", "collector", "file"],
                       stage("source", "replay", outputs={"tweets": "tweets", "rejected": "dead_letters"},
                             path=path, sources=2, seed=3, max_record_bytes=MAX_RECORD_BYTES),
                       DEFAULT_COLLECTOR, file_sink(out, ["cascade_series", "cascade_properties", "dead_letters"]))
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    want_series, want_sizes, dropped = expected_output(read_cascades(SAMPLE), WINDOWS, TERMINATED, MIN_SIZE)
    expected[("collector", "late_event")] = dropped
    assert rejected_counts(r.stdout) == expected
    assert stage_counter(r.stdout, "source", "events") == accepted == len(good)
    assert dead_letters(out / "dead_letters.jsonl") == letters
    series, sizes = collector_output(out)
    assert sizes == want_sizes and series == want_series
