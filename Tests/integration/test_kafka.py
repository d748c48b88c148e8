"""The Kafka transport against a real broker (noida-db 0.2.3, started by scripts/kafka-broker).

- interop: course-format tweets written by a plain Python producer (keyed by source id, as the
  2021 generator does) go through a daemon `kafka_source -> collector -> estimator -> kafka_sink`;
  a plain Python consumer written to the spec reads `cascade_series` and `cascade_properties`
  with json.loads and checks types, fields and keys, and the same (cid, T_obs) as the in-memory
  pipeline on the same tweets.
- split pipeline: two ingest daemons in one consumer group share a 4-partition `tweets` topic,
  a third daemon reads `cascade_properties` into files: same parameters and sizes as one daemon
  with in-memory streams.
- bad records: undecodable records are counted and skipped, their offsets committed.

The Python client is PyPI's confluent-kafka (installed here if missing). Every test uses its own
topic names, so tests do not see each other's records. Set TWEETOSCOPED to test another build
of the daemon than .build/release.
"""
import csv
import heapq
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, run, unavailable

# The course's topics (spec §1). Alerts, stats, samples and models join the checks below once
# the predictor and learner stages exist.
COURSE_TOPICS = ["tweets", "cascade_series", "cascade_properties", "alerts", "stats", "samples", "models", "logs"]
PARTITIONS = 4
# noida-db ignores fetch size limits (see scripts/kafka-broker).
CLIENT_CONFIG = {"receive.message.max.bytes": "1000000000"}


# ---------------------------------------------------------------------------------------------
# Broker and clients

def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="session")
def ck():
    """The confluent_kafka module (pip-installed if missing)."""
    try:
        import confluent_kafka
    except ImportError:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "confluent-kafka"],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            unavailable(f"cannot install confluent-kafka: {r.stderr.strip()[-500:]}")
        import confluent_kafka
    return confluent_kafka


class Broker:
    """A running test broker and plain Python clients written to the spec."""

    def __init__(self, ck, bootstrap):
        self.ck = ck
        self.bootstrap = bootstrap

    def course_topics(self, prefix):
        """Creates the course's topics as `<prefix>-<name>` with 4 partitions; name -> topic."""
        from confluent_kafka.admin import AdminClient, NewTopic
        names = {t: f"{prefix}-{t}" for t in COURSE_TOPICS}
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for topic, future in admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names.values()]).items():
            future.result(timeout=30)
        return names

    def produce(self, topic, records):
        """Writes (key bytes or None, value bytes) records in order; returns their partitions."""
        p = self.ck.Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5})
        partitions, errors = [], []

        def report(err, msg):
            if err is not None:
                errors.append(err)
            else:
                partitions.append(msg.partition())

        for key, value in records:
            while True:
                try:
                    p.produce(topic, value=value, key=key, on_delivery=report)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        assert p.flush(60) == 0
        assert not errors, errors[:3]
        return partitions

    def consume_all(self, topic, timeout=60):
        """Every record of `topic` from the beginning: [(partition, offset, key, value)]."""
        tp = self.ck.TopicPartition
        c = self.ck.Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"check-{uuid.uuid4()}",
                              "enable.auto.commit": False, **CLIENT_CONFIG})
        try:
            parts = list(c.list_topics(topic, timeout=30).topics[topic].partitions)
            ends = {p: c.get_watermark_offsets(tp(topic, p), timeout=30)[1] for p in parts}
            c.assign([tp(topic, p, self.ck.OFFSET_BEGINNING) for p in parts])
            done = {p: ends[p] == 0 for p in ends}
            out = []
            deadline = time.time() + timeout
            while not all(done.values()):
                assert time.time() < deadline, f"{topic}: timed out, read {len(out)} records, ends {ends}"
                m = c.poll(0.5)
                if m is None:
                    continue
                assert m.error() is None, m.error()
                out.append((m.partition(), m.offset(), m.key(), m.value()))
                if m.offset() + 1 >= ends[m.partition()]:
                    done[m.partition()] = True
            return out
        finally:
            c.close()

    def lag(self, group, topic):
        """Records of `topic` not yet committed by `group`."""
        tp = self.ck.TopicPartition
        c = self.ck.Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            parts = [tp(topic, p) for p in range(PARTITIONS)]
            committed = c.committed(parts, timeout=10)
            total = 0
            for part, com in zip(parts, committed):
                high = c.get_watermark_offsets(part, timeout=10)[1]
                total += high - (com.offset if com.offset >= 0 else 0)
            return total
        finally:
            c.close()


@pytest.fixture(scope="session")
def broker(ck, tmp_path_factory):
    """A fresh noida-db broker on a free port for the session (skips if it cannot start; fails
    under CI=true). The start waits up to KAFKA_BROKER_WAIT seconds (scripts/kafka-broker)."""
    port = _free_port()
    env = dict(os.environ, TMPDIR=str(tmp_path_factory.mktemp("broker")), PYTHON=sys.executable)
    script = ROOT / "scripts" / "kafka-broker"
    try:
        r = subprocess.run([str(script), "start", str(port)], env=env, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        unavailable(f"the test broker did not start: {e}")
    if r.returncode != 0:
        unavailable(f"the test broker did not start: {r.stderr.strip()[-800:]}")
    bootstrap = re.search(r"BOOTSTRAP=(\S+)", r.stdout).group(1)
    yield Broker(ck, bootstrap)
    subprocess.run([str(script), "stop", str(port)], env=env, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def tweetoscoped(request):
    """The daemon under test: $TWEETOSCOPED, else the release build."""
    exe = os.environ.get("TWEETOSCOPED")
    return Path(exe) if exe else request.getfixturevalue("daemon")


# ---------------------------------------------------------------------------------------------
# Course-format tweets, as the 2021 generator writes them (spec §1.1, §2.3)

def read_cascades(paths):
    """`cascade,t,m` files -> list of cascades, each a list of (t, m) in file order."""
    cascades = []
    for path in paths:
        by_id = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                by_id.setdefault(row["cascade"], []).append((float(row["t"]), float(row["m"])))
        cascades.extend(by_id.values())
    return cascades


def course_tweets(paths, sources, seed, max_cascades=5, start_range=600):
    """Replays the cascades like the course generator: shuffled, cut into `sources` folds, each
    source on its own clock with up to `max_cascades` cascades running, each starting at a
    uniform whole second in [now, now + start_range]; tweet_id counts cascade starts.
    Returns [(source, value)] with value the generator's JSON text, sources merged by time."""
    rng = random.Random(seed)
    cascades = read_cascades(paths)
    order = list(range(len(cascades)))
    rng.shuffle(order)
    fold = (len(order) + sources - 1) // sources
    next_id = [0]
    events = []
    for source in range(sources):
        todo = order[source * fold:(source + 1) * fold]
        heap, now, seq = [], 0, 0

        def start(now):
            nonlocal seq
            index = todo.pop(0)
            cid = next_id[0]
            next_id[0] += 1
            begin = now + int(rng.uniform(0, start_range))
            for i, (t, m) in enumerate(cascades[index]):
                heapq.heappush(heap, (begin + int(t + 0.5), seq, cid, index, i == 0, m))
                seq += 1
            return begin

        for _ in range(min(max_cascades, len(todo))):
            start(now)
        pending_ends = {}
        while heap:
            t, _, cid, index, first, m = heapq.heappop(heap)
            now = t
            value = (f'{{"type": "{"tweet" if first else "retweet"}", "msg": "None", "t": {t}, '
                     f'"m": {m:g}, "tweet_id": {cid}, "info": "cascade={index}"}}')
            events.append((t, source, value))
            pending_ends[cid] = pending_ends.get(cid, len(cascades[index])) - 1
            if pending_ends[cid] == 0 and todo:
                start(now)
    events.sort(key=lambda e: (e[0], e[1]))
    return [(s, v) for _, s, v in events]


def tweet_records(events):
    return [(str(s).encode(), v.encode()) for s, v in events]


# ---------------------------------------------------------------------------------------------
# Daemon configurations

def kafka_options(broker, topic, **extra):
    lines = [f"    brokers: {broker.bootstrap}", f"    topic: {topic}"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in extra.items()]
    lines.append(f"    librdkafka: {json.dumps(CLIENT_CONFIG)}")
    return "\n".join(lines)


PROCESSING = """
  collector:
    type: collector
    inputs: { tweets: tweets }
    outputs: { series: cascade_series, sizes: cascade_properties }
    windows: [600, 1200]
    terminated: 1800
    min_cascade_size: 10
  estimator:
    type: estimator
    inputs: { series: cascade_series }
    outputs: { parameters: cascade_properties }
"""


# The predictor in mode `none` (raw Hawkes forecast, no learner): its alerts and stats depend only
# on the (parameters, size) pairs, not on their arrival order, so Kafka and memory must agree.
PREDICTION = """
  predictor:
    type: predictor
    inputs: { properties: [cascade_properties] }
    outputs: { alerts: alerts, stats: stats }
    mode: none
"""


def reference_run(daemon, events, tmp_path):
    """The in-memory pipeline (jsonl -> collector -> estimator -> file) on the same tweets;
    returns {stream: [value text]}."""
    lines = tmp_path / "tweets.jsonl"
    lines.write_text("".join(v[:-1] + f', "source": {s}}}\n' for s, v in events))
    out = tmp_path / "reference"
    cfg = tmp_path / "reference.yaml"
    cfg.write_text(f"""
plugins: [replay, collector, estimator, predictor, file]
progress_interval: 0
stages:
  source:
    type: jsonl
    outputs: {{ tweets: tweets }}
    path: {lines}
{PROCESSING}
{PREDICTION}
  sink:
    type: file
    inputs: {{ streams: [cascade_series, cascade_properties, alerts, stats] }}
    directory: {out}
""")
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    return {s: (out / f"{s}.jsonl").read_text().splitlines()
            for s in ("cascade_series", "cascade_properties", "alerts", "stats")}


# ---------------------------------------------------------------------------------------------
# Checks written to the spec (§1.2, §1.3), on raw Kafka records

def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_series(key, value):
    assert key is None, f"cascade_series must have no key, got {key!r}"
    v = json.loads(value)
    assert v["type"] == "serie"
    assert isinstance(v["cid"], int) and isinstance(v["msg"], str) and isinstance(v["T_obs"], int)
    tweets = v["tweets"]
    assert isinstance(tweets, list) and tweets and all(isinstance(p, list) and len(p) == 2 for p in tweets)
    assert all(is_number(t) and is_number(m) and m >= 0 for t, m in tweets)
    assert tweets[0][0] == 0, "times are relative to the original tweet"
    times = [t for t, _ in tweets]
    assert times == sorted(times) and times[-1] <= v["T_obs"]
    return v


def check_properties(key, value):
    v = json.loads(value)
    assert key == str(v["T_obs"]).encode(), f"cascade_properties is keyed by T_obs: key {key!r}, value {value!r}"
    assert isinstance(v["cid"], int) and isinstance(v["T_obs"], int)
    if v["type"] == "size":
        assert isinstance(v["n_tot"], int) and v["n_tot"] >= 1 and is_number(v["t_end"])
    else:
        assert v["type"] == "parameters", v
        assert isinstance(v["msg"], str) and isinstance(v["n_obs"], int) and v["n_obs"] >= 1
        assert is_number(v["n_supp"]) and v["n_supp"] >= 0
        p, beta = v["params"]
        assert is_number(p) and is_number(beta) and p > 0 and beta > 0
        assert is_number(v["n_star"]) and 0 < v["n_star"] <= 1 and is_number(v["G1"])
    return v


def check_alert(key, value):
    assert key is None, f"alerts must have no key, got {key!r}"
    v = json.loads(value)
    assert v["type"] == "alert" and isinstance(v["cid"], int) and isinstance(v["msg"], str)
    assert isinstance(v["T_obs"], int) and is_number(v["n_tot"]) and v["n_tot"] >= 1
    return v


def check_stat(key, value):
    assert key is None, f"stats must have no key, got {key!r}"
    v = json.loads(value)
    assert v["type"] == "stat" and isinstance(v["cid"], int) and isinstance(v["T_obs"], int)
    assert is_number(v["ARE"]) and v["ARE"] >= 0
    return v


# Output topics of the processing daemon and their spec checks (spec §1.2, 1.3, 1.6, 1.7).
CHECKS = {"cascade_series": check_series, "cascade_properties": check_properties,
          "alerts": check_alert, "stats": check_stat}


def windows_of(values, kind):
    return {(v["cid"], v["T_obs"]) for v in values if v["type"] == kind}


def sizes_of(values):
    return {(v["cid"], v["T_obs"]): v["n_tot"] for v in values if v["type"] == "size"}


def counter(text, name):
    found = re.findall(rf"\b{re.escape(name)}=(\d+)", text)
    return sum(map(int, found))


# ---------------------------------------------------------------------------------------------
# Tests

def test_interop_with_course_clients(broker, tweetoscoped, shared, tmp_path):
    topics = broker.course_topics("interop")
    events = course_tweets([shared / "data" / "real" / "smh.csv"], sources=4, seed=3)
    broker.produce(topics["tweets"], tweet_records(events))
    reference = reference_run(tweetoscoped, events, tmp_path)

    cfg = tmp_path / "processing.yaml"
    cfg.write_text(f"""
plugins: [kafka, collector, estimator, predictor]
progress_interval: 0
stages:
  source:
    type: kafka_source
    outputs: {{ messages: tweets }}
{kafka_options(broker, topics["tweets"], group="interop", stop_at_end=True)}
{PROCESSING}
{PREDICTION}
  series_sink:
    type: kafka_sink
    inputs: {{ messages: [cascade_series] }}
{kafka_options(broker, topics["cascade_series"])}
  properties_sink:
    type: kafka_sink
    inputs: {{ messages: [cascade_properties] }}
{kafka_options(broker, topics["cascade_properties"])}
  alerts_sink:
    type: kafka_sink
    inputs: {{ messages: [alerts] }}
{kafka_options(broker, topics["alerts"])}
  stats_sink:
    type: kafka_sink
    inputs: {{ messages: [stats] }}
{kafka_options(broker, topics["stats"])}
""")
    r = run(tweetoscoped, "run", "--config", cfg, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert counter(r.stdout, "records") == len(events)
    assert "delivery_failed" not in r.stdout

    got = {}
    for stream, check in CHECKS.items():
        records = broker.consume_all(topics[stream])
        got[stream] = [check(key, value) for _, _, key, value in records]
        # Byte for byte what the in-memory pipeline writes (the wire format is deterministic).
        assert sorted(value.decode() for *_, value in records) == sorted(reference[stream]), stream
    want = {s: [json.loads(line) for line in lines] for s, lines in reference.items()}
    assert windows_of(got["cascade_series"], "serie") == windows_of(want["cascade_series"], "serie")
    assert windows_of(got["cascade_properties"], "parameters") == windows_of(want["cascade_properties"], "parameters")
    assert sizes_of(got["cascade_properties"]) == sizes_of(want["cascade_properties"])
    assert windows_of(got["cascade_series"], "serie"), "the data must give some series"
    # One alert per parameters message, one stat per (parameters, size) pair.
    assert windows_of(got["alerts"], "alert") == windows_of(want["cascade_properties"], "parameters")
    paired = windows_of(want["cascade_properties"], "parameters") & set(sizes_of(want["cascade_properties"]))
    assert windows_of(got["stats"], "stat") == paired and paired


def first_assignment(log_text):
    """The partitions of a daemon's first `kafka partitions assigned` log line, or None."""
    for line in log_text.splitlines():
        if "kafka partitions assigned" in line:
            inside = re.search(r"assigned=\S*\[([\d,]*)\]", line)
            return {int(p) for p in inside.group(1).split(",") if p} if inside else set()
    return None


def run_ingest_group(broker, tweetoscoped, tmp_path, attempt, events):
    """Two ingest daemons started together in one group on a topic that already holds every
    tweet, each ending at the end of its partitions. Returns (topics, [(stdout, stderr)])."""
    topics = broker.course_topics(f"split{attempt}")
    broker.produce(topics["tweets"], tweet_records(events))
    cfg = tmp_path / f"ingest{attempt}.yaml"
    cfg.write_text(f"""
plugins: [kafka, collector, estimator]
progress_interval: 0
stages:
  source:
    type: kafka_source
    outputs: {{ messages: tweets }}
{kafka_options(broker, topics["tweets"], group=f"split-ingest{attempt}", stop_at_end=True)}
{PROCESSING}
  sink:
    type: kafka_sink
    inputs: {{ messages: [cascade_properties] }}
{kafka_options(broker, topics["cascade_properties"])}
""")
    procs = [subprocess.Popen([str(tweetoscoped), "run", "--config", str(cfg)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    return topics, results


def test_split_pipeline_two_ingest_daemons_in_one_group(broker, tweetoscoped, shared, tmp_path):
    real = shared / "data" / "real"
    events = course_tweets([real / "smh.csv", real / "auspol.csv"], sources=8, seed=11)
    reference = reference_run(tweetoscoped, events, tmp_path)

    # Collectors keep per-source state, so a source must not move between daemons mid-stream:
    # the two daemons must form the group together (2 partitions each from their first
    # assignment on). If the broker let one of them take every partition first, the run
    # proves nothing: it is repeated on fresh topics (see etc/examples/scale-ingest.yaml).
    for attempt in range(3):
        topics, results = run_ingest_group(broker, tweetoscoped, tmp_path, attempt, events)
        firsts = [first_assignment(err) for _, err in results]
        if all(f is not None and len(f) == PARTITIONS // 2 for f in firsts) and firsts[0] | firsts[1] == set(range(PARTITIONS)):
            break
    else:
        pytest.fail(f"the two ingest daemons never formed the group together: first assignments {firsts}")
    print(f"split pipeline: attempt {attempt}, first assignments {firsts}")
    counts = [counter(out, "records") for out, _ in results]
    assert sum(counts) >= len(events) and all(c > 0 for c in counts), counts
    assert all("delivery_failed" not in out for out, _ in results)
    assert broker.lag(f"split-ingest{attempt}", topics["tweets"]) == 0

    out = tmp_path / "collected"
    collect = tmp_path / "collect.yaml"
    collect.write_text(f"""
plugins: [kafka, file]
progress_interval: 0
stages:
  source:
    type: kafka_source
    outputs: {{ messages: cascade_properties }}
{kafka_options(broker, topics["cascade_properties"], group="split-collect", stop_at_end=True)}
  sink:
    type: file
    inputs: {{ streams: [cascade_properties] }}
    directory: {out}
""")
    r = run(tweetoscoped, "run", "--config", collect, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [json.loads(line) for line in (out / "cascade_properties.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in reference["cascade_properties"]]
    assert windows_of(got, "parameters") == windows_of(want, "parameters")
    assert sizes_of(got) == sizes_of(want)
    assert len(windows_of(want, "parameters")) > 20


def test_bad_records_are_counted_skipped_and_committed(broker, tweetoscoped, tmp_path):
    topics = broker.course_topics("bad")
    good = '{"type": "tweet", "msg": "None", "t": 0, "m": 10, "tweet_id": 1, "info": "cascade=1"}'
    broker.produce(topics["tweets"], [
        (b"0", b"not json"),
        (b"0", good.encode()),
        (b"0", b'{"type": "gossip", "t": 1}'),
        (b"0", b'{"type": "retweet", "msg": "None", "t": 5, "m": 3}'),
        (b"0", None),
        (b"0", b'{"type": "retweet", "msg": "\xff", "t": 5, "m": 3, "tweet_id": 1}'),
        (b"0", b'{"type": "retweet", "msg": "' + b"x" * 300 + b'", "t": 5, "m": 3, "tweet_id": 1}'),
        (b"0", b'{"type": "retweet", "t": -5, "m": 3, "tweet_id": 1}'),
    ])
    out = tmp_path / "out"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"""
plugins: [kafka, file]
progress_interval: 0
stages:
  source:
    type: kafka_source
{kafka_options(broker, topics["tweets"], group="bad", stop_at_end=True)}
    max_record_bytes: 256
    outputs: {{ messages: tweets, rejected: dead_letters }}
  sink:
    type: file
    inputs: {{ streams: [tweets, dead_letters] }}
    directory: {out}
""")
    r = run(tweetoscoped, "run", "--config", cfg, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "tweets.jsonl").read_text().count("\n") == 1
    for reason in ("invalid_json=1", "unknown_type=1", "missing_field=1", "empty_value=1", "invalid_utf8=1",
                   "oversized=1", "negative=1"):
        assert reason in r.stdout, r.stdout
    # Dead letters: reason, topic[partition]@offset, the record (cut to 1 KiB, UTF-8 cleaned).
    letters = [json.loads(line) for line in (out / "dead_letters.jsonl").read_text().splitlines()]
    assert all(d["level"] == "WARNING" and d["source"] == "source" for d in letters)
    partition = re.match(r"\w+: bad-tweets\[(\d+)\]@0: ", letters[0]["message"]).group(1)
    assert [d["message"] for d in letters] == [
        f"invalid_json: bad-tweets[{partition}]@0: not json",
        f'unknown_type: bad-tweets[{partition}]@2: {{"type": "gossip", "t": 1}}',
        f'missing_field: bad-tweets[{partition}]@3: {{"type": "retweet", "msg": "None", "t": 5, "m": 3}}',
        f"empty_value: bad-tweets[{partition}]@4: ",
        f'invalid_utf8: bad-tweets[{partition}]@5: {{"type": "retweet", "msg": "\ufffd", "t": 5, "m": 3, "tweet_id": 1}}',
        f'oversized: bad-tweets[{partition}]@6: {{"type": "retweet", "msg": "{"x" * 300}", "t": 5, "m": 3, "tweet_id": 1}}',
        f'negative: bad-tweets[{partition}]@7: {{"type": "retweet", "t": -5, "m": 3, "tweet_id": 1}}',
    ]
    assert re.search(r"skipping a kafka record: .* offset=0 partition=\d+ .*topic=bad-tweets", r.stderr), r.stderr[-2000:]
    assert broker.lag("bad", topics["tweets"]) == 0, "skipped records are committed too"


def _read_topic(tweetoscoped, broker, topic, group, tmp_path, name, **options):
    """Runs kafka_source (stop_at_end) -> file sink on `topic`; returns (CompletedProcess, lines)."""
    out = tmp_path / name
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"""
plugins: [kafka, file]
progress_interval: 0
stages:
  source:
    type: kafka_source
{kafka_options(broker, topic, group=group, stop_at_end=True, **options)}
    outputs: {{ messages: props }}
  sink:
    type: file
    inputs: {{ streams: [props] }}
    directory: {out}
""")
    r = run(tweetoscoped, "run", "--config", cfg, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return r, (out / "props.jsonl").read_text().splitlines()


def test_deduplicate_drops_window_keyed_records_delivered_again(broker, tweetoscoped, tmp_path):
    """README `deduplicate`: a size delivered again (a crash upstream) is dropped and counted
    `duplicates`; with deduplicate 0 every record is kept."""
    topics = broker.course_topics("dedup")
    size = lambda cid, n: f'{{"type": "size", "cid": {cid}, "T_obs": 600, "n_tot": {n}, "t_end": 99}}'.encode()
    # One key: one partition, so the order is the production order.
    broker.produce(topics["cascade_properties"], [(b"600", size(1, 12)), (b"600", size(2, 30)),
                                                  (b"600", size(1, 12)), (b"600", size(3, 11))])
    r, lines = _read_topic(tweetoscoped, broker, topics["cascade_properties"], "dedup", tmp_path, "dedup")
    assert [json.loads(l)["cid"] for l in lines] == [1, 2, 3]
    assert counter(r.stdout, "duplicates") == 1, r.stdout
    r, lines = _read_topic(tweetoscoped, broker, topics["cascade_properties"], "keep-all", tmp_path, "keep",
                           deduplicate=0)
    assert [json.loads(l)["cid"] for l in lines] == [1, 2, 1, 3]
    assert counter(r.stdout, "duplicates") == 0


def test_start_latest_skips_what_the_topic_held_before(broker, tweetoscoped, tmp_path):
    """README `start`: a group without committed offsets starting at `latest` does not read the
    records already in the topic; at `earliest` (the default) it reads them all."""
    topics = broker.course_topics("latest")
    size = lambda cid: f'{{"type": "size", "cid": {cid}, "T_obs": 600, "n_tot": 10, "t_end": 9}}'.encode()
    broker.produce(topics["cascade_properties"], [(b"600", size(c)) for c in range(5)])
    _, lines = _read_topic(tweetoscoped, broker, topics["cascade_properties"], "late-group", tmp_path, "latest",
                           start="latest")
    assert lines == []
    _, lines = _read_topic(tweetoscoped, broker, topics["cascade_properties"], "early-group", tmp_path, "earliest")
    assert sorted(json.loads(l)["cid"] for l in lines) == list(range(5))


class PrivateBroker:
    """A broker of one test, on its own port and data directory, that the test stops and
    restarts with its data (topics, records and committed offsets survive). It is stopped with
    SIGTERM: noida-db writes its data about once a second, so a kill -9 loses the records it
    acknowledged in the last second, which no client can make up for."""

    def __init__(self, ck, tmp_path):
        self.port = _free_port()
        self.env = dict(os.environ, TMPDIR=str(tmp_path), PYTHON=sys.executable,
                        KAFKA_BROKER_DATA=str(tmp_path / "broker-data"))
        self.script = str(ROOT / "scripts" / "kafka-broker")
        self.ck = ck

    def start(self):
        r = subprocess.run([self.script, "start", str(self.port)], env=self.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return Broker(self.ck, f"127.0.0.1:{self.port}")

    def stop(self):
        subprocess.run([self.script, "stop", str(self.port)], env=self.env, capture_output=True, timeout=60)


def test_broker_outage_is_survived(broker, tweetoscoped, tmp_path):
    """The broker goes down while the sink produces and is down when the source starts:
    both daemons report it, retry, resume, and no tweet is lost (at least once)."""
    private = PrivateBroker(broker.ck, tmp_path)
    b = private.start()
    try:
        b.course_topics("outage")
        topic = "outage-tweets"
        produce = tmp_path / "produce.yaml"
        produce.write_text(f"""
plugins: [replay, kafka]
progress_interval: 0
stages:
  source:
    type: replay
    outputs: {{ tweets: tweets }}
    path: {ROOT / "data" / "sample.csv"}
    sources: 1
    time_acceleration: 140000
  sink:
    type: kafka_sink
    inputs: {{ messages: [tweets] }}
{kafka_options(b, topic)}
""")
        proc = subprocess.Popen([str(tweetoscoped), "run", "--config", str(produce)], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(2.5)
        private.stop()
        time.sleep(3)
        private.start()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        # Every event of the sample: its lines minus the header.
        assert counter(out, "delivered") == len((ROOT / "data" / "sample.csv").read_text().splitlines()) - 1, out
        assert "delivery_failed" not in out, out
        assert re.search(r"WARNING \[sink\] kafka", err), err[-3000:]
        assert "kafka_error." in out, out
        # What the broker holds now: every record was acknowledged to the sink, so a record
        # missing here was lost by the broker itself (noida-db loses records it acknowledges
        # while it saves on a stop), not by the daemon.
        held_after_produce = {v.decode() for _, _, _, v in b.consume_all(topic)}

        # The source starts while the broker is down, waits for it and reads everything.
        private.stop()
        files = tmp_path / "out"
        consume = tmp_path / "consume.yaml"
        consume.write_text(f"""
plugins: [kafka, file]
progress_interval: 0
stages:
  source:
    type: kafka_source
    outputs: {{ messages: tweets }}
{kafka_options(b, topic, group="outage", stop_at_end=True)}
  sink:
    type: file
    inputs: {{ streams: [tweets] }}
    directory: {files}
""")
        # Under systemd the outage shows in the status line (sd_notify STATUS=, every 5 s).
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify.sock"))
        proc = subprocess.Popen([str(tweetoscoped), "run", "--config", str(consume)], text=True,
                                env=dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock")),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        statuses, deadline = [], time.time() + 7
        while time.time() < deadline:
            notify.settimeout(max(0.01, deadline - time.time()))
            try:
                statuses.append(notify.recv(1 << 16).decode())
            except socket.timeout:
                break
        notify.close()
        assert proc.poll() is None, "the source must wait for the broker"
        assert any(re.search(r"STATUS=.*; source: kafka brokers unreachable for \d+ s", m) for m in statuses), statuses
        private.start()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        lines = (files / "tweets.jsonl").read_text().splitlines()
        # Ours and the broker's losses told apart. The daemon must lose nothing the broker holds:
        # its output is exactly the topic's content as the broker serves it after the run (an
        # independent Python consumer). Records of the reference replay missing from the topic
        # were acknowledged to the sink (delivered == every event above) and then lost by the broker on
        # a stop (noida-db loses what it acknowledges while it saves; scripts/kafka-broker stops
        # it with `noida-db stop kafka`, which closes the port first, making this rare); they
        # are reported, not counted against the daemon.
        held_after_consume = {v.decode() for _, _, _, v in b.consume_all(topic)}
        reference = tmp_path / "reference.yaml"
        reference.write_text(f"""
plugins: [replay, file]
progress_interval: 0
stages:
  source:
    type: replay
    outputs: {{ tweets: tweets }}
    path: {ROOT / "data" / "sample.csv"}
    sources: 1
  sink:
    type: file
    inputs: {{ streams: [tweets] }}
    directory: {tmp_path / "reference"}
""")
        assert run(tweetoscoped, "run", "--config", reference).returncode == 0
        want = (tmp_path / "reference" / "tweets.jsonl").read_text().splitlines()
        got = set(lines)
        assert len(lines) == len(got), "no tweet twice in one run of the source"
        ours = held_after_consume - got
        assert not ours, f"the daemon lost {len(ours)} records the broker holds: {sorted(ours)[:3]}"
        assert got <= set(want), "every tweet read is one of the replay's"
        assert got == held_after_consume
        broker_lost = [line for line in want if line not in held_after_consume]
        lost_on_first_stop = [line for line in want if line not in held_after_produce]
        print(f"broker (noida-db) losses of acknowledged records: {len(lost_on_first_stop)} on the stop "
              f"while producing, {len(broker_lost) - len(lost_on_first_stop)} on the stop before consuming")
        assert held_after_consume <= held_after_produce | set(want)
        assert re.search(r"WARNING \[source\] kafka", err), err[-3000:]
    finally:
        private.stop()


def test_sink_counts_deliveries_that_fail(tweetoscoped, tmp_path):
    """No broker at all: every record fails after message.timeout.ms, each is counted and
    logged (rate-limited), and the run fails (exit 1) saying how many records were lost."""
    port = _free_port()
    cfg = tmp_path / "nobroker.yaml"
    cfg.write_text(f"""
plugins: [replay, kafka]
progress_interval: 0
stages:
  source:
    type: replay
    outputs: {{ tweets: tweets }}
    path: {ROOT / "data" / "sample.csv"}
    limit: 3
  sink:
    type: kafka_sink
    inputs: {{ messages: [tweets] }}
    brokers: 127.0.0.1:{port}
    topic: tweets
    librdkafka: {{ message.timeout.ms: "1500" }}
""")
    r = run(tweetoscoped, "run", "--config", cfg, timeout=120)
    assert r.returncode == 1, r.stderr[-3000:]
    produced = counter(r.stdout, "produced")
    assert produced > 0 and f"delivery_failed={produced}" in r.stdout, r.stdout
    assert f"stage sink FAILED: {produced} records not delivered to topic tweets, lost" in r.stdout, r.stdout
    assert "delivered=" not in r.stdout
    assert re.search(r"WARNING \[sink\] kafka delivery failed, record lost: _MSG_TIMED_OUT", r.stderr), r.stderr[-2000:]
    assert re.search(r"WARNING \[sink\] kafka: .*Connection refused", r.stderr), r.stderr[-2000:]
    assert "%3|" not in r.stderr, "librdkafka must log through the daemon's logger, never by itself"


# Stage types whose plugins are still to come; examples using them validate once they land.
PENDING_TYPES: set = set()


def test_examples_validate(tweetoscoped):
    """Every etc/examples file that uses only existing stage types passes `tweetoscoped validate`
    (each file loads only the plugins it lists)."""
    files = sorted((ROOT / "etc" / "examples").glob("*.yaml"))
    assert len(files) >= 8
    checked = 0
    for path in files:
        types = set(re.findall(r"^\s+type:\s*(\S+)", path.read_text(), re.M))
        r = run(tweetoscoped, "validate", "--config", path)
        if types & PENDING_TYPES and r.returncode != 0:
            continue  # validated once the predictor and learner plugins land
        assert r.returncode == 0, f"{path.name}: {r.stdout}{r.stderr}"
        checked += 1
    assert checked >= 6
