"""Mixed deployments (issue 14): tweetoscoped beside the course's own services on the same topics.

Plain Python clients written to the course's conventions (spec §1 with its variants) play the
course's services over the real test broker:
- as producers (generator, collector, estimator, predictor) they write `tweets`,
  `cascade_series`, `cascade_properties` and `samples` with the variants seen in the course's
  repositories: null, empty and "None" keys on cascade_series, `msg` null or a number, string
  cids, parameters without n_star/G1, four- and three-element params, a total `n_supp`, and
  window-keyed records put on partition murmur2(key) mod 4 (what kafka-python and the Java
  client do; computed here by an independent murmur2);
- as consumers (estimator, predictor, dashboard, monitor, learner, logger) they read what
  tweetoscoped wrote back on `cascade_series`, `cascade_properties`, `alerts`, `stats`,
  `samples` and `logs` and interpret it as the course does (`key.decode()`, n_supp as the
  total forecast, a predictor that joins the window's size and parameters within one
  partition).
Expected values are computed here from the course's formulas (spec §4, §5), never read from
the daemon. `models` is not exchanged: the course's are pickled scikit-learn forests, ours are
JSON (README, Kafka section); ours go to a topic of its own name, checked for the key only.
"""
import json
import re

import pytest

from conftest import run
from test_kafka import CLIENT_CONFIG, PARTITIONS, broker, ck, counter, kafka_options, tweetoscoped  # noqa: F401

ALPHA, MU = 2.4, 10.0
MEAN_MARK = MU * (ALPHA - 1) / (ALPHA - 2)  # E[m] = 35 (spec §4.1)
WINDOWS = (600, 1200)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned 32-bit int."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = data[4 * i] | (data[4 * i + 1] << 8) | (data[4 * i + 2] << 16) | (data[4 * i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail, extra = length & ~3, length % 4
    if extra == 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def course_partition(key: bytes, partitions=PARTITIONS) -> int:
    """The partition the Java and Python (kafka-python) clients pick for `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_murmur2_reference_values():
    # Kafka's own test vectors (UtilsTest.testMurmur2), as signed ints, and the example.
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    for data, want in vectors.items():
        got = murmur2(data)
        assert (got - (1 << 32) if got >= 1 << 31 else got) == want, data
    assert course_partition(b"600") == 0


# ---------------------------------------------------------------------------------------------
# What the course's services write

def cascades():
    """Deterministic cascades: (source, cid, first msg value as JSON text, [(t, m)])."""
    out = []
    msgs = ['"None"', "null", "42", "3.5", '"h\\u00e9llo"', '"None"']
    for source in (0, 1):
        for k in range(6):
            cid_json = str(100 + k) if source == 0 else json.dumps(f"tw{23981 + k}")
            begin = 1000 + 5000 * k
            events = [(begin + 30 * i, 10 + (k * 7 + i * 13 + source * 101) % 400) for i in range(12 + k)]
            out.append((source, cid_json, msgs[k], events))
    return out


def msg_text(json_text):
    """What the course means by a `msg` value: Python's str() of it (null -> "None")."""
    v = json.loads(json_text)
    return "None" if v is None else v if isinstance(v, str) else json.dumps(v)


def generator_records():
    """`tweets` as the 2021 generator writes them (key = source), plus one closing single tweet
    per source far later, so that every cascade ends (its size is sent) before the stream ends."""
    recs = []
    for source, cid, msg, events in cascades():
        for i, (t, m) in enumerate(events):
            kind = "tweet" if i == 0 else "retweet"
            value = (f'{{"type": "{kind}", "msg": {msg if i == 0 else chr(34) + "None" + chr(34)}, "t": {t}, '
                     f'"m": {m}, "tweet_id": {cid}, "info": "cascade={len(recs)}"}}')
            recs.append((t, source, value))
    for source in (0, 1):
        recs.append((100_000, source, f'{{"type": "tweet", "msg": "None", "t": 100000, "m": 1, "tweet_id": {900 + source}, "info": ""}}'))
    recs.sort()
    return [(str(s).encode(), v.encode()) for _, s, v in recs]


def series_records():
    """`cascade_series` as the course collectors write it: keyless, "" (GAS) or "None" (RUD);
    msg as their tweet had it (null or a number included); string or integer cids."""
    recs = []
    keys = [None, b"", b"None"]
    for n, (source, cid, msg, events) in enumerate(cascades()):
        t0 = events[0][0]
        for w in WINDOWS:
            pairs = [[t - t0, m] for t, m in events if t - t0 <= w]
            value = f'{{"type": "serie", "cid": {cid}, "msg": {msg}, "T_obs": {w}, "tweets": {json.dumps(pairs)}}}'
            recs.append((keys[n % 3], value.encode()))
    return recs


# Course-estimator parameters in their variants (spec §1.3): (cid, T_obs, n_obs, p, beta, variant).
PARAMETERS = [
    (1, 600, 20, 0.020, 0.0010, "base_total"),       # {"params": [p, beta], "n_supp": total}
    (2, 600, 35, 0.015, 0.0020, "params4"),          # GAS: params [p, beta, n_star, G1]
    ("tw7", 600, 12, 0.025, 0.0005, "fields"),        # MEC, NAS, RUD, MBG: n_star and G1 fields
    (4, 1200, 50, 0.010, 0.0030, "params3"),         # AHM: params [p, beta, G1]
    ("tw9", 1200, 15, 0.022, 0.0008, "base_total"),
    (6, 1200, 40, 0.018, 0.0015, "params4"),
]
G1_OF = {1: 3.0, 2: 5.5, "tw7": 2.25, 4: 7.0, "tw9": 1.5, 6: 4.0}
SIZES = {1: 31, 2: 52, "tw7": 18, 4: 66, "tw9": 40, 6: 45}


def course_forecast(n_obs, p, g1):
    """The course predictor without a model (W = 1): n* = p·E[m], N = n_obs + G1/(1 − n*)."""
    n_star = p * MEAN_MARK
    return n_star, n_obs + g1 / (1 - n_star)


def properties_records():
    """`cascade_properties` from course estimators (variants) and a course collector (sizes),
    keyed by T_obs, each on partition murmur2(key) mod 4; parameters without T_obs in the value
    (the key says it), msg null or a number for some."""
    recs = []
    msgs = ['"a"', "null", "7", '"b"', "null", '"c"']
    for (cid, w, n_obs, p, beta, variant), msg in zip(PARAMETERS, msgs):
        g1 = G1_OF[cid]
        n_star, total = course_forecast(n_obs, p, g1)
        v = {"type": "parameters", "cid": cid, "n_obs": n_obs}
        if variant == "base_total":
            v.update(n_supp=total, params=[p, beta])
        elif variant == "params4":
            v.update(n_supp=total, params=[p, beta, n_star, g1])
        elif variant == "params3":
            v.update(n_supp=total, params=[p, beta, g1])
        else:
            v.update(n_supp=total, params=[p, beta], n_star=n_star, G1=g1)
        text = json.dumps(v)[:-1] + f', "msg": {msg}}}'
        recs.append((str(w).encode(), text.encode()))
        size = {"type": "size", "cid": cid, "n_tot": SIZES[cid], "t_end": 5000}
        recs.append((str(w).encode(), json.dumps(size).encode()))
    return recs


def samples_records():
    """`samples` from a course predictor: {type, cid, X: [beta, n*, G1], W}, keyed by T_obs."""
    recs = []
    for i in range(12):
        w = WINDOWS[i % 2]
        x = [0.001 * (1 + i % 5), 0.3 + 0.05 * (i % 7), 1.0 + i]
        recs.append((str(w).encode(), json.dumps({"type": "sample", "cid": 500 + i, "X": x, "W": 0.5 + 0.1 * i}).encode()))
    return recs


# A course predictor's alerts and stats (spec §1.6, §1.7): no key, msg null or a number, string cids.
COURSE_ALERTS = [(None, '{"type": "alert", "cid": "tw23981", "msg": "blah blah", "T_obs": 600, "n_tot": 158}'),
                 (None, '{"type": "alert", "cid": 42, "msg": null, "T_obs": 1200, "n_tot": 57.5}'),
                 (b"600", '{"type": "alert", "cid": 43, "msg": 12, "T_obs": 600, "n_tot": 20}')]
COURSE_STATS = [(None, '{"type": "stat", "cid": "tw23981", "T_obs": 600, "ARE": 0.93}'),
                (None, '{"type": "stat", "cid": 42, "T_obs": 1200, "ARE": 0.125}')]


def produce_course(broker, topic, records):
    """Writes like kafka-python / the Java client: keyed records on murmur2(key) mod 4."""
    p = broker.ck.Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    errors = []
    for key, value in records:
        kwargs = {"partition": course_partition(key)} if key is not None else {}
        p.produce(topic, value=value, key=key, on_delivery=lambda err, msg: err and errors.append(err), **kwargs)
    assert p.flush(60) == 0 and not errors, errors[:3]


# ---------------------------------------------------------------------------------------------
# The test

def test_course_services_and_tweetoscoped_exchange_every_topic(broker, tweetoscoped, tmp_path):
    topics = broker.course_topics("interop14")
    ours = broker.course_topics("ours14")  # what tweetoscoped writes, for the course's consumers
    produce_course(broker, topics["tweets"], generator_records())
    produce_course(broker, topics["cascade_series"], series_records())
    produce_course(broker, topics["cascade_properties"], properties_records())
    produce_course(broker, topics["samples"], samples_records())
    produce_course(broker, topics["alerts"], [(k, v.encode()) for k, v in COURSE_ALERTS])
    produce_course(broker, topics["stats"], [(k, v.encode()) for k, v in COURSE_STATS])
    files = tmp_path / "files"

    def source(name, topic, out):
        return f"""
  {name}:
    type: kafka_source
    outputs: {{ messages: {out} }}
{kafka_options(broker, topic, group="interop14-" + name, stop_at_end=True)}"""

    def sink(name, inputs, topic, **extra):
        return f"""
  {name}:
    type: kafka_sink
    inputs: {{ messages: [{", ".join(inputs)}] }}
{kafka_options(broker, topic, **extra)}"""

    cfg = tmp_path / "interop.yaml"
    cfg.write_text(f"""
plugins: [kafka, collector, estimator, predictor, learner, file]
progress_interval: 0
stages:
{source("tweets_in", topics["tweets"], "tweets")}
  collector:
    type: collector
    inputs: {{ tweets: tweets }}
    outputs: {{ series: series, sizes: sizes }}
    windows: [600, 1200]
    terminated: 1800
    min_cascade_size: 10
{source("series_in", topics["cascade_series"], "course_series")}
  estimator:
    type: estimator
    inputs: {{ series: course_series }}
    outputs: {{ parameters: parameters }}
    n_supp: total
{source("properties_in", topics["cascade_properties"], "course_properties")}
  predictor:
    type: predictor
    inputs: {{ properties: [course_properties] }}
    outputs: {{ alerts: alerts, stats: stats, samples: samples }}
    mode: course
    n_supp: total
    alpha: {ALPHA}
    mu: {MU}
{source("samples_in", topics["samples"], "course_samples")}
  learner:
    type: learner
    inputs: {{ samples: course_samples }}
    outputs: {{ models: models }}
    mode: course
    refit_every: 3
    min_samples: 3
    trees: 5
{source("alerts_in", topics["alerts"], "course_alerts")}
{source("stats_in", topics["stats"], "course_stats")}
  files:
    type: file
    inputs: {{ streams: [course_alerts, course_stats] }}
    directory: {files}
{sink("tweets_out", ["tweets"], ours["tweets"])}
{sink("series_out", ["series"], ours["cascade_series"], keyless="None")}
{sink("properties_out", ["sizes", "parameters"], ours["cascade_properties"])}
{sink("alerts_out", ["alerts"], ours["alerts"], keyless="None")}
{sink("stats_out", ["stats"], ours["stats"], keyless="None")}
{sink("samples_out", ["samples"], ours["samples"])}
{sink("models_out", ["models"], ours["models"])}
""")
    r = run(tweetoscoped, "run", "--config", cfg, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr

    # Every course record was accepted: nothing rejected anywhere, every msg that was not a
    # string was converted and counted (tweets: 3 first tweets per source; series: 3 cascades
    # per source x 2 windows; properties: 3 parameters).
    assert "rejected records: none" in r.stdout and not re.search(r"rejected\.\w+=[1-9]", out), r.stdout[-3000:]
    assert counter(r.stdout, "records") == (len(generator_records()) + len(series_records())
                                            + len(properties_records()) + len(samples_records())
                                            + len(COURSE_ALERTS) + len(COURSE_STATS))
    assert counter(r.stdout, "coerced_msg") == 6 + 12 + 3 + 2
    # n* = p·E[m] for the base spec's and AHM's parameters; G1 from the total n_supp for the base spec's.
    assert counter(r.stdout, "computed_n_star") == 3 and counter(r.stdout, "computed_G1") == 2

    # --- course alerts and stats, as a tweetoscoped dashboard (file sink, `top`) reads them.
    def parsed(text):
        v = json.loads(text)
        if "msg" in v:
            v["msg"] = "None" if v["msg"] is None else v["msg"] if isinstance(v["msg"], str) else json.dumps(v["msg"])
        return v
    got_alerts = [json.loads(line) for line in (files / "course_alerts.jsonl").read_text().splitlines()]
    got_stats = [json.loads(line) for line in (files / "course_stats.jsonl").read_text().splitlines()]
    key = lambda v: json.dumps(v, sort_keys=True)
    assert sorted(map(key, got_alerts)) == sorted(key(parsed(v)) for _, v in COURSE_ALERTS)
    assert sorted(map(key, got_stats)) == sorted(key(parsed(v)) for _, v in COURSE_STATS)

    # --- tweets relayed by tweetoscoped, read by a course collector: key = the source id,
    # tweet_id as the generator wrote it, msg text, on partition murmur2(key) mod 4.
    relayed = broker.consume_all(ours["tweets"])
    sent = {}
    for k, v in generator_records():
        g = parsed(v.decode())
        sent.setdefault(k, []).append(g)
    got_tweets = {}
    for partition, _, k, v in sorted(relayed, key=lambda r: (r[0], r[1])):
        assert partition == course_partition(k)
        got_tweets.setdefault(k, []).append(json.loads(v))
    assert got_tweets == sent  # per source, in order, every field as the course means it

    # --- cascade_series, read by a course estimator: `key.decode()`, json.loads, (t, m) pairs.
    series = {}
    for _, _, key, value in broker.consume_all(ours["cascade_series"]):
        assert key.decode() == "None"
        v = json.loads(value)
        # Our extra fields, ignored by course consumers: `seq` (the collector's stream order,
        # tested in test_reproducible) and `t0` (source-clock time of the first event).
        assert isinstance(v.pop("seq"), int)
        series[(json.dumps(v["cid"]), v["T_obs"])] = v
    want_series = {}
    for source, cid, msg, events in cascades():
        t0 = events[0][0]
        for w in WINDOWS:
            want_series[(cid, w)] = {"type": "serie", "cid": json.loads(cid), "msg": msg_text(msg), "T_obs": w,
                                     "tweets": [[t - t0, m] for t, m in events if t - t0 <= w], "t0": t0}
    assert series == want_series  # string cids stay strings, integers integers

    # --- cascade_properties, read by a course predictor that splits windows by partition:
    # sizes (our collector) and parameters (our estimator, n_supp = total) of each (cid, T_obs)
    # are on partition murmur2(T_obs) mod 4, so each pair is joined within one partition.
    by_partition = {}
    for partition, _, key, value in broker.consume_all(ours["cascade_properties"]):
        v = json.loads(value)
        assert key.decode() == str(v["T_obs"]) and partition == course_partition(key)
        by_partition.setdefault(partition, {}).setdefault((json.dumps(v["cid"]), v["T_obs"]), {})[v["type"]] = v
    joined = 0
    for pairs in by_partition.values():
        for (cid, w), halves in pairs.items():
            size, params = halves["size"], halves["parameters"]
            events = next(e for _, c, _, e in cascades() if c == cid)
            assert size["n_tot"] == len(events)
            assert params["n_obs"] == len(want_series[(cid, w)]["tweets"])
            # Course predictor reading a total n_supp: N = n_supp; the estimator's own fields agree.
            raw = params["n_obs"] + params["G1"] / (1 - params["n_star"])
            assert params["n_supp"] == pytest.approx(raw, rel=1e-12)
            assert params["n_star"] == pytest.approx(params["params"][0] * MEAN_MARK, rel=1e-12)
            joined += 1
    assert joined == len(want_series) == 24

    # --- alerts (dashboard), stats (monitor), samples (learner) from the course's properties.
    alerts = [(json.loads(v), k) for _, _, k, v in broker.consume_all(ours["alerts"])]
    stats = [(json.loads(v), k) for _, _, k, v in broker.consume_all(ours["stats"])]
    samples = [(json.loads(v), k, part) for part, _, k, v in broker.consume_all(ours["samples"])]
    assert all(k == b"None" for _, k in alerts + stats)
    msgs = ["a", "None", "7", "b", "None", "c"]
    want_alerts, want_stats, want_samples = {}, {}, {}
    for (cid, w, n_obs, p, beta, _), msg in zip(PARAMETERS, msgs):
        g1 = G1_OF[cid]
        n_star, n_hat = course_forecast(n_obs, p, g1)
        n_tot = SIZES[cid]
        want_alerts[cid] = (msg, w, n_hat)
        want_stats[cid] = (w, abs(n_hat - n_tot) / n_tot)
        want_samples[cid] = (w, [beta, n_star, g1], (n_tot - n_obs) * (1 - n_star) / g1)
    assert {json.dumps(a["cid"]) for a, _ in alerts} == {json.dumps(c) for c in want_alerts}
    assert len(alerts) == len(stats) == len(samples) == len(PARAMETERS)
    for a, _ in alerts:
        msg, w, n_hat = want_alerts[a["cid"]]
        assert (a["type"], a["msg"], a["T_obs"]) == ("alert", msg, w)
        assert a["n_tot"] == pytest.approx(n_hat, rel=1e-12)
    for s, _ in stats:
        w, are = want_stats[s["cid"]]
        assert (s["type"], s["T_obs"]) == ("stat", w) and s["ARE"] == pytest.approx(are, rel=1e-12)
    for s, key, part in samples:
        w, x, target = want_samples[s["cid"]]
        assert key == str(w).encode() and part == course_partition(key)
        assert s["type"] == "sample" and s["X"] == pytest.approx(x, rel=1e-12) and s["W"] == pytest.approx(target, rel=1e-12)

    # --- models: ours (JSON forests) on a topic of their own, keyed by T_obs like the course's.
    models = broker.consume_all(ours["models"])
    assert models and all(json.loads(v)["type"] == "model" and k == str(json.loads(v)["T_obs"]).encode()
                          for _, _, k, v in models)


def test_logs_reach_the_logs_topic_in_the_course_logger_format(broker, tweetoscoped, tmp_path):
    topics = broker.course_topics("logs14")
    lines = tmp_path / "tweets.jsonl"
    lines.write_text(
        '{"type": "tweet", "msg": "None", "t": 0, "m": 10, "tweet_id": 1, "source": 0}\n'
        'not json\n'
        '{"type": "retweet", "msg": "None", "t": 5, "m": 3, "tweet_id": 77, "source": 0}\n')
    cfg = tmp_path / "logs.yaml"
    cfg.write_text(f"""
plugins: [replay, collector, kafka]
progress_interval: 0
stages:
  replay:
    type: jsonl
    outputs: {{ tweets: tweets }}
    path: {lines}
  collector:
    type: collector
    inputs: {{ tweets: tweets }}
    windows: [600]
  logs:
    type: kafka_logs
{kafka_options(broker, topics["logs"])}
    level: warning
""")
    r = run(tweetoscoped, "run", "--config", cfg, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [(k, json.loads(v)) for _, _, k, v in broker.consume_all(topics["logs"])]
    # The course logger (logger.py) reads {t, source, level, message}, no key.
    assert records, r.stderr[-2000:]
    for key, rec in records:
        assert key is None and set(rec) == {"t", "source", "level", "message"}, rec
        assert isinstance(rec["t"], int) and abs(rec["t"] - int(__import__("time").time())) < 600
        assert rec["level"] in ("WARNING", "ERROR", "CRITICAL")
    by_source = {}
    for _, rec in records:
        by_source.setdefault(rec["source"], []).append(rec)
    # The stderr warnings of the replay (invalid JSON on line 2) and of the collector (a retweet
    # of a cascade never opened) are the ones on the topic, with their stage as source.
    assert any(re.search(r"line 2|:2:", rec["message"]) for rec in by_source["replay"]), by_source
    assert any("cascade 77" in rec["message"] for rec in by_source["collector"]), by_source
    assert counter(r.stdout, "delivered") == len(records)


def test_partitioner_option_keeps_the_old_crc32_placement(broker, tweetoscoped, tmp_path):
    """`partitioner: consistent_random` is librdkafka's CRC32 placement (tweetoscoped 0.1), the
    default murmur2_random the course clients' one: the same window keys, copied by two sinks,
    land on crc32(key) mod 4 and on murmur2(key) mod 4 (computed here with zlib and murmur2)."""
    import zlib
    topics = broker.course_topics("part14")
    crc = broker.course_topics("crc14")
    keys = [str(w).encode() for w in (60, 300, 600, 1200, 3600, 7200)]
    produce_course(broker, topics["cascade_properties"],
                   [(k, json.dumps({"type": "size", "cid": i, "n_tot": 10, "t_end": 1}).encode()) for i, k in enumerate(keys)])
    cfg = tmp_path / "copy.yaml"
    cfg.write_text(f"""
plugins: [kafka]
progress_interval: 0
stages:
  source:
    type: kafka_source
    outputs: {{ messages: sizes }}
{kafka_options(broker, topics["cascade_properties"], group="part14", stop_at_end=True)}
  murmur:
    type: kafka_sink
    inputs: {{ messages: [sizes] }}
{kafka_options(broker, topics["samples"])}
  crc:
    type: kafka_sink
    inputs: {{ messages: [sizes] }}
{kafka_options(broker, crc["samples"], partitioner="consistent_random")}
""")
    r = run(tweetoscoped, "run", "--config", cfg, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    murmur = {k: p for p, _, k, _ in broker.consume_all(topics["samples"])}
    crc32 = {k: p for p, _, k, _ in broker.consume_all(crc["samples"])}
    assert murmur == {k: course_partition(k) for k in keys}
    assert crc32 == {k: zlib.crc32(k) % PARTITIONS for k in keys}
    assert crc32[b"600"] == 3 and murmur[b"600"] == 0  # the example
    assert murmur != crc32


def test_logs_never_hold_the_pipeline_when_the_broker_is_away(tweetoscoped, tmp_path):
    """kafka_logs towards a closed port with rate 1/s: the pipeline's own output is complete,
    the run ends by itself with status 0, and every line is accounted for: dropped by the rate
    limit (counted) or lost for want of a broker (counted), none delivered."""
    lines = tmp_path / "tweets.jsonl"
    good = [f'{{"type": "tweet", "msg": "None", "t": {i}, "m": 10, "tweet_id": {i}, "source": 0}}' for i in range(50)]
    bad = ["not json"] * 5
    lines.write_text("\n".join(good[:25] + bad + good[25:]) + "\n")
    out = tmp_path / "out"
    cfg = tmp_path / "away.yaml"
    cfg.write_text(f"""
plugins: [replay, kafka, file]
progress_interval: 0
stages:
  replay:
    type: jsonl
    outputs: {{ tweets: tweets }}
    path: {lines}
  sink:
    type: file
    inputs: {{ streams: [tweets] }}
    directory: {out}
  logs:
    type: kafka_logs
    brokers: 127.0.0.1:1
    topic: logs
    rate: 1
""")
    r = run(tweetoscoped, "run", "--config", cfg, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "tweets.jsonl").read_text().count("\n") == 50
    warnings = len(re.findall(r"^\S+ (WARNING|ERROR|CRITICAL) ", r.stderr, re.M))
    assert warnings >= 5, r.stderr[-3000:]
    dropped = counter(r.stdout, "dropped_rate") + counter(r.stdout, "dropped_full")
    assert dropped >= 1 and counter(r.stdout, "delivered") == 0
    assert counter(r.stdout, "produced") == counter(r.stdout, "delivery_failed") >= 1, r.stdout
