"""Crash and broker-outage end to end, on the 2,240,889 SEISMIC tweets, through Kafka.

Three daemons on one private noida-db broker (its own port and data directory):
1. ingest (once per module): `replay` of seismic.csv.gz (4 sources, as fast as possible) ->
   `kafka_sink` to `<p>-tweets` (2 partitions).
2. collector (the one that is killed): `kafka_source` (stop_at_end) -> `collector` (windows
   [600, 1200], terminated 1800, min_cascade_size 10) -> `kafka_sink` of the series and
   `kafka_sink` of the properties (sizes), on topics of its run.
3. predict (never killed): `kafka_source` of the series -> `estimator` -> `predictor` (mode
   none: no learner, so its alerts and stats depend only on the (parameters, size) pairs),
   `kafka_source` of the properties -> `predictor`; a `file` sink writes alerts, stats and the
   sizes read from Kafka. It has no stop_at_end (it would end while the collector is down): it
   gets SIGTERM once the collector's last run exited 0 and both its groups have lag 0.

Each run (the uninterrupted reference, the outage run, the kill run) has fresh groups and output
topics and reads the same ingested tweets. A run must give the reference's (cid, T_obs) sets of
alerts (same n_tot within 1e-9), stats (same ARE) and sizes (same n_tot and t_end), with no
(cid, T_obs) twice in any file of the predict daemon.

- outage: the broker is stopped (scripts/kafka-broker stop: its Kafka service first, so that
  every record it acknowledged is written, then SIGTERM) once the collector's progress line
  reports a drawn share (15-60 %) of the input processed, stays
  down 20 s (both daemons must stay up) and restarts on its data.
- kill: the collector daemon is killed (SIGKILL) three times while it processes, each time
  restarted at once; its third restart runs to the end and exits 0. The kill moments are drawn
  from a seeded RNG: set CRASH_SEED to replay a schedule (the seed is printed, and named in
  every failure). Each delay counts from the run's first processed events and is uniform in
  [1 s, 0.8 x its share of the run's expected processing time] (the expected time is the
  reference's, scaled by the group's lag at the restart; the first kill gets a third of it, the
  second half of what is left, the third all), so all three land mid-processing.

The collector's consumer is a static group member (`group.instance.id`): noida-db never expires
a dead member (measured: a restarted collector was still waiting for its assignment 12 minutes
after a kill -9 of its predecessor; with session.timeout.ms 6000, a consumer still after 90 s),
so a dynamic member could not rejoin; a static member takes its predecessor's place at once, as
with a real Kafka broker.

Run: `python3 -m pytest -q Tests/integration/test_crash.py -s` (prints timings; under 3 minutes
on 2 cores). The broker's data (about 735 MB) is deleted at the end unless CRASH_KEEP is set.
"""
import collections
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import SHARED, unavailable
from test_kafka import CLIENT_CONFIG, Broker, PrivateBroker, ck, counter, tweetoscoped  # noqa: F401 (fixtures)

SEISMIC = SHARED / "data" / "real" / "seismic.csv.gz"
SEISMIC_EVENTS = 2_240_889
SEISMIC_CASCADES = 554
WINDOWS = (600, 1200)
PARTITIONS = 2
OUTAGE_SECONDS = 20
# The predict daemon's consumers outlast the whole outage (20 s plus the broker's stop and its
# start on ~735 MB of data: 46 s measured once in CI, beyond librdkafka's default 45 s session):
# the test is about a broker outage, not about the group expelling the predictor. (When its
# session did expire, the re-delivered sizes' offsets were left uncommitted, lag 650: the same
# cause as the outage's duplicates, fixed 2026-12-03 — the source commits the duplicates it drops.)
PREDICT_SESSION = {"session.timeout.ms": "180000", "heartbeat.interval.ms": "3000"}
KILLS = 3
# What every phase took (printed at the end of the module).
TIMES = {}


def note(key, value):
    TIMES[key] = value
    print(f"[crash] {key}: {value}", flush=True)


# ---------------------------------------------------------------------------------------------
# Broker

class CrashBroker(PrivateBroker):
    """The module's private broker. Its data (millions of records) takes seconds to write when
    it stops and to load when it starts: both wait long enough. scripts/kafka-broker stop first
    stops noida-db's Kafka service (port closed, every acknowledged record written), then the
    process (SIGTERM, SIGKILL only after KAFKA_BROKER_STOP_WAIT s): a bare SIGTERM would lose
    what noida-db acknowledged while writing its data file (seconds of records)."""

    def __init__(self, ck, tmp_path):
        super().__init__(ck, tmp_path)
        self.env.update(KAFKA_BROKER_WAIT="120", KAFKA_BROKER_STOP_WAIT="120")
        self.tmp = Path(tmp_path)
        self.data = Path(self.env["KAFKA_BROKER_DATA"])

    def pid(self):
        path = self.tmp / f"tweetoscope-kafka-{self.port}.pid"
        return int(path.read_text()) if path.exists() else None

    def status(self):
        """The broker's resident memory now and at its peak (MiB), from /proc."""
        fields = {}
        pid = self.pid()
        if pid:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) // 1024
        return fields

    def data_mib(self):
        """Size of its data directory (complete only once stopped: noida-db writes it lazily)."""
        return sum(f.stat().st_size for f in self.data.rglob("*") if f.is_file()) / 2**20

    def start(self):
        began = time.monotonic()
        r = subprocess.run([self.script, "start", str(self.port)], env=self.env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return Broker(self.ck, f"127.0.0.1:{self.port}"), time.monotonic() - began

    def stop(self):
        """Stops it (its Kafka service, which writes the data, then SIGTERM) and waits for the
        exit; returns the seconds it took."""
        began = time.monotonic()
        r = subprocess.run([self.script, "stop", str(self.port)], env=self.env, capture_output=True, text=True, timeout=300)
        assert "SIGKILL" not in r.stderr and "failed" not in r.stderr, r.stderr
        return time.monotonic() - began


def lag(broker, group, topic):
    """Records of `topic` (every partition) not yet committed by `group`."""
    tp = broker.ck.TopicPartition
    c = broker.ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                            "enable.auto.commit": False, **CLIENT_CONFIG})
    try:
        parts = [tp(topic, p) for p in c.list_topics(topic, timeout=30).topics[topic].partitions]
        total = 0
        for part, committed in zip(parts, c.committed(parts, timeout=30)):
            high = c.get_watermark_offsets(part, timeout=30)[1]
            total += high - max(committed.offset, 0)
        return total
    finally:
        c.close()


def topic_keys(broker, topic, timeout=120):
    """Every record of `topic` -> Counter of (type, cid, T_obs) (a diagnostic of duplicates)."""
    keys = collections.Counter()
    for _, _, _, value in broker.consume_all(topic, timeout=timeout):
        v = json.loads(value)
        keys[(v["type"], v["cid"], v["T_obs"])] += 1
    return keys


def create_topics(broker, names):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for _, future in admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names]).items():
        future.result(timeout=60)


def kafka(broker, topic, librdkafka=None, **extra):
    """The options of a kafka_source / kafka_sink stage (YAML lines)."""
    lines = [f"    brokers: {broker.bootstrap}", f"    topic: {topic}"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in extra.items()]
    lines.append(f"    librdkafka: {json.dumps({**CLIENT_CONFIG, **(librdkafka or {})})}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Daemons

class Daemon:
    """One `tweetoscoped run`, its stdout and stderr in files (no pipe to fill)."""

    live = []

    def __init__(self, exe, cfg, logs, name):
        self.name = name
        self.out, self.err = logs / f"{name}.out", logs / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([str(exe), "run", "--config", str(cfg)], stdout=out, stderr=err)
        self.began = time.monotonic()
        self.ended = None
        Daemon.live.append(self)

    def poll(self):
        rc = self.proc.poll()
        if rc is not None and self.ended is None:
            self.ended = time.monotonic()
        return rc

    def wait(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still runs after {timeout} s: {self.tail()}")
        self.poll()
        return rc

    def kill(self):
        self.proc.kill()
        return self.wait(30)

    @property
    def seconds(self):
        return (self.ended or time.monotonic()) - self.began

    def stdout(self):
        return self.out.read_text(errors="replace")

    def stderr(self):
        return self.err.read_text(errors="replace")

    def tail(self, n=3000):
        return f"\n--- {self.name} stdout:\n{self.stdout()[-n:]}\n--- {self.name} stderr:\n{self.stderr()[-n:]}"

    def wait_log(self, pattern, timeout=120):
        """Seconds after its start at which `pattern` appeared in its stderr (None if it ended first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.stderr()):
                return time.monotonic() - self.began
            if self.poll() is not None:
                return None
            time.sleep(0.05)
        pytest.fail(f"{self.name}: no {pattern!r} after {timeout} s: {self.tail()}")

    def events(self):
        """Events its last progress line reports (what it processed so far)."""
        found = re.findall(r"progress events=(\d+)", self.stderr())
        return int(found[-1]) if found else 0


class Run:
    """One run of the collector and predict daemons on fresh groups and topics."""

    def __init__(self, env, tag):
        self.env = env
        self.tag = f"{tag}-{uuid.uuid4().hex[:6]}"
        self.dir = env.tmp / self.tag
        self.out = self.dir / "out"
        self.dir.mkdir()
        b = env.broker
        self.series, self.properties = f"{self.tag}-series", f"{self.tag}-properties"
        self.collect_group = f"{self.tag}-collect"
        self.predict_groups = {self.series: f"{self.tag}-predict-series", self.properties: f"{self.tag}-predict-properties"}
        create_topics(b, [self.series, self.properties])
        self.collector_cfg = self.dir / "collector.yaml"
        self.collector_cfg.write_text(f"""
plugins: [kafka, collector]
progress_interval: 0.5
stages:
  source:
    type: kafka_source
    outputs: {{ messages: tweets }}
{kafka(b, env.tweets, {"group.instance.id": f"{self.tag}-collector"}, group=self.collect_group, stop_at_end=True)}
  collector:
    type: collector
    inputs: {{ tweets: tweets }}
    outputs: {{ series: cascade_series, sizes: cascade_properties }}
    windows: {list(WINDOWS)}
    terminated: 1800
    min_cascade_size: 10
  series_sink:
    type: kafka_sink
    inputs: {{ messages: [cascade_series] }}
{kafka(b, self.series, create_topic=True, partitions=PARTITIONS)}
  properties_sink:
    type: kafka_sink
    inputs: {{ messages: [cascade_properties] }}
{kafka(b, self.properties, create_topic=True, partitions=PARTITIONS)}
""")
        self.predict_cfg = self.dir / "predict.yaml"
        self.predict_cfg.write_text(f"""
plugins: [kafka, estimator, predictor, file]
progress_interval: 0
stages:
  series_source:
    type: kafka_source
    outputs: {{ messages: cascade_series }}
{kafka(b, self.series, PREDICT_SESSION, group=self.predict_groups[self.series])}
  properties_source:
    type: kafka_source
    outputs: {{ messages: sizes }}
{kafka(b, self.properties, PREDICT_SESSION, group=self.predict_groups[self.properties])}
  estimator:
    type: estimator
    inputs: {{ series: cascade_series }}
    outputs: {{ parameters: parameters }}
  predictor:
    type: predictor
    inputs: {{ properties: [parameters, sizes] }}
    outputs: {{ alerts: alerts, stats: stats }}
    mode: none
  sink:
    type: file
    inputs: {{ streams: [alerts, stats, sizes] }}
    directory: {self.out}
""")
        self.collectors = []
        self.predict = None

    def start_predict(self):
        self.predict = Daemon(self.env.exe, self.predict_cfg, self.dir, "predict")
        return self.predict

    def start_collector(self):
        d = Daemon(self.env.exe, self.collector_cfg, self.dir, f"collector-{len(self.collectors)}")
        self.collectors.append(d)
        return d

    def collector_lag(self):
        return lag(self.env.broker, self.collect_group, self.env.tweets)

    def finish_collector(self, d, committed=True, timeout=600):
        """Waits for the collector run `d` to end; requires exit 0, every series and size
        delivered and, if `committed`, every tweet committed. Returns the group's lag."""
        rc = d.wait(timeout)
        assert rc == 0, f"{d.name} exited {rc}{d.tail()}"
        assert "delivery_failed" not in d.stdout(), d.tail()
        left = self.collector_lag()
        assert left == 0 or not committed, f"{d.name}: the collector's group has lag {left}{d.tail()}"
        return left

    def finish_predict(self, timeout=300):
        """Once both its groups have lag 0: SIGTERM, exit 0; returns (seconds to lag 0, lags then)."""
        began = time.monotonic()
        deadline = began + timeout
        while True:
            lags = {t: lag(self.env.broker, g, t) for t, g in self.predict_groups.items()}
            if not any(lags.values()):
                break
            assert self.predict.poll() is None, f"predict ended early{self.predict.tail()}"
            assert time.monotonic() < deadline, f"predict lag {lags} after {timeout} s{self.predict.tail()}"
            time.sleep(0.5)
        drained = time.monotonic() - began
        self.predict.proc.send_signal(signal.SIGTERM)
        rc = self.predict.wait(120)
        assert rc == 0, f"predict exited {rc}{self.predict.tail()}"
        return drained, lags

    def results(self):
        return Results(self.out)

    def topic_duplicates(self):
        """Diagnostic: records of the series and properties topics that repeat a (type, cid, T_obs)."""
        out = {}
        for topic in (self.series, self.properties):
            keys = topic_keys(self.env.broker, topic)
            out[topic] = (sum(keys.values()), sum(n - 1 for n in keys.values() if n > 1))
        return out


class Results:
    """The predict daemon's files: (cid, T_obs) -> value, and the keys seen more than once."""

    def __init__(self, out):
        self.alerts, self.stats, self.sizes, self.duplicates = {}, {}, {}, {}
        for name, target, value in (("alerts", self.alerts, lambda v: v["n_tot"]),
                                    ("stats", self.stats, lambda v: v["ARE"]),
                                    ("sizes", self.sizes, lambda v: (v["n_tot"], v["t_end"]))):
            path = out / f"{name}.jsonl"
            assert path.exists(), f"{path} missing"
            seen = collections.Counter()
            for line in path.read_text().splitlines():
                v = json.loads(line)
                assert v["type"] == {"alerts": "alert", "stats": "stat", "sizes": "size"}[name], line
                key = (v["cid"], v["T_obs"])
                seen[key] += 1
                target[key] = value(v)
            self.duplicates[name] = {k: n for k, n in seen.items() if n > 1}

    def per_window(self, name):
        return {w: sum(1 for _, t in getattr(self, name) if t == w) for w in WINDOWS}


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def compare(want, got):
    """Differences of `got` from the reference `want`: a list of one-line findings (empty: equal)."""
    problems = []
    for name, same in (("alerts", close), ("stats", close), ("sizes", lambda a, b: a == b)):
        w, g = getattr(want, name), getattr(got, name)
        missing = sorted(w.keys() - g.keys())
        extra = sorted(g.keys() - w.keys())
        differ = sorted(k for k in w.keys() & g.keys() if not same(w[k], g[k]))
        dups = got.duplicates[name]
        if missing or extra or differ or dups:
            examples = "; ".join(f"{k}: want {w[k]} got {g[k]}" for k in differ[:3])
            problems.append(f"{name}: reference {len(w)}, got {len(g)} distinct: {len(missing)} missing {missing[:5]}, "
                            f"{len(extra)} extra {extra[:5]}, {len(differ)} different ({examples}), "
                            f"{len(dups)} keys duplicated ({sum(dups.values()) - len(dups)} extra lines) {list(dups.items())[:5]}")
    return problems


# ---------------------------------------------------------------------------------------------
# Fixtures: the broker with the ingested tweets, the uninterrupted reference

class Env:
    pass


@pytest.fixture(scope="module")
def env(ck, tweetoscoped, tmp_path_factory):
    if not SEISMIC.exists():
        unavailable(f"{SEISMIC} not found (the shared data must sit beside the clone)")
    module_began = time.monotonic()
    tmp = tmp_path_factory.mktemp("crash")
    private = CrashBroker(ck, tmp)
    broker, _ = private.start()
    e = Env()
    e.private, e.broker, e.tmp, e.exe = private, broker, tmp, tweetoscoped
    e.tweets = f"crash-{uuid.uuid4().hex[:6]}-tweets"
    try:
        cfg = tmp / "ingest.yaml"
        cfg.write_text(f"""
plugins: [replay, kafka]
progress_interval: 0
stages:
  source:
    type: replay
    outputs: {{ tweets: tweets }}
    path: {SEISMIC}
    sources: 4
    time_acceleration: 0
  sink:
    type: kafka_sink
    inputs: {{ messages: [tweets] }}
{kafka(broker, e.tweets, create_topic=True, partitions=PARTITIONS)}
""")
        ingest = Daemon(tweetoscoped, cfg, tmp, "ingest")
        assert ingest.wait(600) == 0, ingest.tail()
        note("ingest seconds (replay -> kafka_sink, 2,240,889 tweets)", round(ingest.seconds, 1))
        assert counter(ingest.stdout(), "delivered") == SEISMIC_EVENTS, ingest.tail()
        note("broker memory after ingest (MiB, VmRSS/VmHWM)", private.status())
        assert lag(broker, "crash-watermarks", e.tweets) == SEISMIC_EVENTS
        yield e
    finally:
        for d in Daemon.live:  # left running by a failure
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        note("broker memory at the end (MiB, VmRSS/VmHWM)", private.status())
        note("broker stop at the end (s)", round(private.stop(), 1))
        note("broker data dir at the end (MiB)", round(private.data_mib()))
        if not os.environ.get("CRASH_KEEP"):
            shutil.rmtree(private.data, ignore_errors=True)
        note("module seconds (from the broker's start)", round(time.monotonic() - module_began, 1))
        print("[crash] timings:\n" + "\n".join(f"  {k}: {v}" for k, v in TIMES.items()), flush=True)


@pytest.fixture(scope="module")
def reference(env):
    """The uninterrupted run: its results and the collector's duration."""
    run = Run(env, "reference")
    predict = run.start_predict()
    collector = run.start_collector()
    assigned = collector.wait_log(r"kafka partitions assigned")
    began = collector.wait_log(r"progress events=[1-9]")
    run.finish_collector(collector)
    drained, _ = run.finish_predict()
    out = collector.stdout()
    assert counter(out, "records") == SEISMIC_EVENTS, collector.tail()
    assert counter(out, "cascades_opened") == SEISMIC_CASCADES, collector.tail()
    note("reference collector run (s)", round(collector.seconds, 1))
    note("reference collector: partitions assigned / first events after (s)", (round(assigned, 2), round(began, 2)))
    note("reference predict daemon run (s)", round(predict.seconds, 1))
    note("reference predict: lag 0 after the collector's exit (s)", round(drained, 1))
    results = run.results()
    for name in ("alerts", "stats", "sizes"):
        counts = results.per_window(name)
        note(f"reference {name} per window", counts)
        # The 554 cascades give hundreds of results in both windows.
        assert all(n >= 400 for n in counts.values()), (name, counts)
        assert not results.duplicates[name], (name, list(results.duplicates[name].items())[:5])
    assert set(results.stats) == set(results.alerts) & set(results.sizes)
    # Processing time: from the first events to the end (less the 1 s stop_at_end idle).
    results.processing = max(5.0, collector.seconds - began - 1.0)
    note("reference collector processing (s)", round(results.processing, 1))
    return results


@pytest.fixture(scope="module")
def rng():
    seed = int(os.environ.get("CRASH_SEED") or random.SystemRandom().randrange(2**32))
    note("CRASH_SEED", seed)
    r = random.Random(seed)
    r.seed_value = seed
    return r


# ---------------------------------------------------------------------------------------------
# Tests (the outage first: with -x a failing kill test does not hide it)

def test_broker_outage_mid_run_gives_the_reference_results(env, reference, rng):
    run = Run(env, "outage")
    predict = run.start_predict()
    collector = run.start_collector()
    began = collector.wait_log(r"progress events=[1-9]")
    assert began is not None, collector.tail()
    # The broker stops once the collector reports a drawn share of the input processed: a delay
    # drawn from the reference's run time landed after the last event once the collector got
    # faster (CI 2026-12-03: 99 % processed at the stop, so it never saw the outage end while reading).
    target = int(rng.uniform(0.15, 0.6) * SEISMIC_EVENTS)
    while collector.events() < target:
        assert collector.poll() is None, f"the collector ended before {target} events{collector.tail()}"
        time.sleep(0.02)
    delay = collector.seconds - began
    assert collector.poll() is None, f"the collector ended before the outage ({delay:.1f} s into processing){collector.tail()}"
    events = collector.events()
    assert events < SEISMIC_EVENTS, f"every event was processed before the outage ({events}){collector.tail()}"
    note("outage: broker stopped at (s into the collector's processing)", round(delay, 1))
    note("outage: events processed when the broker was stopped (>=)", events)
    try:
        note("outage: broker stop (s)", round(env.private.stop(), 1))
        note("outage: broker data dir when stopped (MiB)", round(env.private.data_mib()))
        time.sleep(OUTAGE_SECONDS)
        assert collector.poll() is None, f"the collector did not survive the outage{collector.tail()}"
        assert predict.poll() is None, f"the predict daemon did not survive the outage{predict.tail()}"
    finally:
        _, started = env.private.start()
    note("outage: broker start (s, until the port is open)", round(started, 1))
    # Its final commit may fail after the restart (noida-db forgets the group's generation:
    # ILLEGAL_GENERATION, logged, and the tail would be read again by a next run): reported only.
    left = run.finish_collector(collector, committed=False)
    # The predict daemon's groups must reach lag 0: after the restart the collector's outputs are
    # delivered again (duplicates on both topics), the kafka_source drops them before the
    # predictor, and their offsets are committed once the predictor holds nothing (until
    # 2026-12-03 they never were: the properties group kept a lag equal to its duplicates).
    drained, lags = run.finish_predict()
    note("outage: predict lag when it was stopped (records per topic)", lags)
    note("outage: collector's group lag at its end (uncommitted tweets)", left)
    note("outage: collector run (s)", round(collector.seconds, 1))
    note("outage: predict daemon run (s)", round(predict.seconds, 1))
    note("outage: predict lag 0 after the collector's exit (s)", round(drained, 1))
    note("outage: series/properties topics (records, duplicates)", run.topic_duplicates())
    assert re.search(r"WARNING \[\w+\] kafka", collector.stderr()), "the collector must have noticed the outage"
    assert "kafka brokers reachable again" in collector.stderr(), "the collector must say when the outage ended"
    problems = compare(reference, run.results())
    assert not problems, (f"broker outage after {delay:.1f} s (seed {rng.seed_value}):\n" + "\n".join(problems)
                          + collector.tail(1500))


def kill_three_times(env, reference, rng, schedule):
    """One kill run: the collector is killed KILLS times mid-processing, each time restarted at
    once. Returns (run, last collector run, still running), or None if a run ended before its
    kill (nothing left to kill in: the run is abandoned, recorded in `schedule`)."""
    run = Run(env, "kill")
    run.start_predict()
    rate = SEISMIC_EVENTS / reference.processing  # events per second of an uninterrupted run
    for kill in range(KILLS):
        backlog = run.collector_lag()
        collector = run.start_collector()
        # This kill's share of the run's expected processing: 1/3, 1/2, then all of it.
        expected = backlog / rate
        delay = rng.uniform(1.0, max(1.0, 0.8 * expected / (KILLS - kill)))
        began = collector.wait_log(r"progress events=[1-9]")
        if began is not None:
            while collector.poll() is None and collector.seconds < began + delay:
                time.sleep(0.02)
        if collector.poll() is not None:
            schedule.append(f"{run.tag} {collector.name}: backlog {backlog}, ended (exit {collector.proc.returncode}) "
                            f"after {collector.seconds:.1f} s, before its kill {delay:.1f} s into processing: run abandoned")
            assert collector.proc.returncode == 0, collector.tail()
            run.finish_predict()
            return None
        events = collector.events()
        rc = collector.kill()
        assert rc == -signal.SIGKILL, rc
        schedule.append(f"{run.tag} {collector.name}: backlog {backlog}, killed {delay:.1f} s into processing "
                        f"(expected processing {expected:.1f} s), >= {events} events processed, "
                        f"lag after the kill {run.collector_lag()}")
    return run, run.start_collector()


def test_collector_killed_three_times_gives_the_reference_results(env, reference, rng):
    schedule = []
    for _ in range(3):
        attempt = kill_three_times(env, reference, rng, schedule)
        if attempt:
            break
    else:
        pytest.fail(f"could not place {KILLS} kills mid-processing (seed {rng.seed_value}): {schedule}")
    run, collector = attempt
    note("kill: schedule", "\n    " + "\n    ".join(schedule))
    run.finish_collector(collector)
    drained, _ = run.finish_predict()
    note("kill: last collector run (s)", round(collector.seconds, 1))
    note("kill: collector runs, total (s)", round(sum(d.seconds for d in run.collectors), 1))
    note("kill: predict daemon run (s)", round(run.predict.seconds, 1))
    note("kill: predict lag 0 after the collector's exit (s)", round(drained, 1))
    note("kill: series/properties topics (records, duplicates)", run.topic_duplicates())
    got = run.results()
    note("kill: per window (alerts, stats, sizes)",
         [got.per_window("alerts"), got.per_window("stats"), got.per_window("sizes")])
    problems = compare(reference, got)
    for p in problems:
        print(f"[crash] kill: {p}", flush=True)
    assert not problems, (f"{KILLS} kills (seed {rng.seed_value}):\n" + "\n".join(schedule) + "\n"
                          + "\n".join(problems))
