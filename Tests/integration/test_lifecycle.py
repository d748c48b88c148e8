"""The daemon's life cycle under the faults operators hit (issue 16, failures 1-4) and the
README behaviours of signals, failing stages, plugins and the configuration cap.

- SIGHUP at any moment of start-up is a reload, never a kill (signals are blocked before main).
- A reload that rebuilds stateful stages hands them the old stages' state: open cascades, waiting
  pairs, the replay's position when only its pacing changed. Outputs equal an uninterrupted run.
- A reload whose new stages cannot start is rejected; the running pipeline goes on.
- Every shutdown step is bounded: a kafka_sink with its broker down stops within
  `shutdown_timeout` (or at once on a second signal), counts what it lost, and the run exits 1.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import ROOT, run
from independent import expected_output, read_cascades


def config(tmp_path, acceleration, name="tweetoscope.yaml", out="out"):
    text = (ROOT / "etc" / "tweetoscope.yaml").read_text()
    text = text.replace("../data/sample.csv", str(ROOT / "data" / "sample.csv"))
    text = text.replace("../data/models/", str(ROOT / "data" / "models") + "/")  # the shipped model (model_path)
    text = text.replace("directory: ../out", f"directory: {tmp_path / out}")
    text = text.replace("time_acceleration: 0", f"time_acceleration: {acceleration}")
    path = tmp_path / name
    path.write_text(text)
    return path


def keyed(path, kind=None):
    """{(cid, T_obs): record} of a JSON-lines output (only records of `type` kind if given)."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if kind is None or r.get("type") == kind:
            key = (r["cid"], r["T_obs"])
            assert key not in out, f"{path.name}: {key} written twice"
            out[key] = r
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# Failure 1: SIGHUP during start-up

def wait_until_sighup_is_ours(pid, timeout=30):
    """Waits until SIGHUP is blocked, caught or ignored by the process (/proc/PID/status)."""
    bit = 1 << (signal.SIGHUP - 1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        except FileNotFoundError:
            return
        if any(int(fields[k].strip(), 16) & bit for k in ("SigBlk", "SigCgt", "SigIgn")):
            return
        time.sleep(0.0002)
    pytest.fail(f"SIGHUP was neither blocked nor caught {timeout} s after the start")


@pytest.mark.parametrize("delay_ms", [0, 2, 5, 10, 20, 35, 50, 75, 100, 150])
def test_sighup_during_start_up_is_a_reload_not_a_kill(daemon, tmp_path, delay_ms):
    cfg = config(tmp_path, acceleration=0)
    cfg.write_text(cfg.read_text().replace("limit: 0", "limit: 20"))
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Before the first instruction of the daemon runs (the dynamic loader mapping the Swift
    # runtime, a few ms on an idle machine, tens under load) no process can catch a signal; the
    # daemon's guarantee starts at its first constructor, which blocks SIGHUP. The delays count
    # from there, so the test does not depend on the machine's load.
    wait_until_sighup_is_ours(proc.pid)
    time.sleep(delay_ms / 1000)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=120)
    # Killed by SIGHUP's default action, the process ends with -1 and logs nothing.
    assert proc.returncode == 0, f"returncode {proc.returncode}: {err[-2000:]}"
    assert "tweetoscoped summary:" in out


# ---------------------------------------------------------------------------------------------
# Failure 2: a reload that rebuilds stateful stages keeps their state

def test_reload_rebuilding_collector_predictor_and_replay_loses_nothing(daemon, tmp_path):
    # Baseline: the same configuration, uninterrupted.
    base = config(tmp_path, acceleration=0, name="base.yaml", out="base")
    terminated = 1800
    r = run(daemon, "run", "--config", base, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]

    # Paced replay; after 2 s one option of the collector, of the predictor and the replay's
    # pacing change. The SEISMIC sample's cascades end at their first 30-min gap, 8,000 to
    # 118,000 s (median 51,000 s) after they start: at 20,000x, 2 s in (40,000 s of source
    # time) most of the first cascades are still open; the rest of the replay then runs at 300,000x.
    cfg = config(tmp_path, acceleration=20000)
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    text = cfg.read_text()
    for old, new in [("max_ended_remembered: 100000", "max_ended_remembered: 50000"),
                     ("pending_ttl: 86400", "pending_ttl: 80000"),
                     ("time_acceleration: 20000", "time_acceleration: 300000")]:
        assert old in text
        text = text.replace(old, new)
    cfg.write_text(text)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "configuration reloaded kept=estimator,learner,sink rebuilt=source,collector,predictor" in err, err[-3000:]
    collector = re.search(r"reload: stage collector rebuilt: kept (\d+) open cascades", err)
    assert collector and int(collector.group(1)) > 0, err[-3000:]
    assert re.search(r"reload: stage predictor rebuilt: kept (\d+) of \1 waiting", err), err[-3000:]
    assert re.search(r"reload: stage source rebuilt: resumes at source time t=\d", err), err[-3000:]
    # Nothing lost or doubled: no retweet of an unknown cascade, no tweet twice, and the same
    # outputs as the uninterrupted run and the independent model.
    assert "unknown_cascade" not in out and "duplicate_tweet" not in out, out
    want_series, want_sizes, _ = expected_output(read_cascades(ROOT / "data" / "sample.csv"), (600, 1200), terminated, 10)
    props = tmp_path / "out" / "cascade_properties.jsonl"
    sizes = {k: v["n_tot"] for k, v in keyed(props, "size").items()}
    assert sizes == want_sizes
    series = {k: v["tweets"] for k, v in keyed(tmp_path / "out" / "cascade_series.jsonl").items()}
    assert series == want_series
    for name in ("stats.jsonl",):
        got, want = keyed(tmp_path / "out" / name), keyed(tmp_path / "base" / name)
        assert want and set(got) == set(want), f"{name}: {len(got)} records, {len(want)} without the reload"


# ---------------------------------------------------------------------------------------------
# Failure 3: a reload that validates but cannot start

def test_reload_whose_sink_cannot_start_is_rejected_and_the_pipeline_goes_on(daemon, tmp_path):
    cfg = config(tmp_path, acceleration=200000)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the sink wants a directory\n")
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    cfg.write_text(cfg.read_text().replace(f"directory: {tmp_path / 'out'}", f"directory: {blocker}"))
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    # Rejected by the validation of the new file (the directory is checked there) or, had it been
    # replaced after that, by the start check of the new stages: either way named, and the
    # running pipeline goes on.
    line = next((l for l in err.splitlines() if "reload rejected" in l and str(blocker) in l), None)
    assert line, err[-3000:]
    assert ("the running pipeline goes on unchanged" in err
            or "the previous configuration keeps running" in err), err[-3000:]
    assert "configuration reloaded" not in err
    # The running pipeline finished its work in the old directory.
    want_series, want_sizes, _ = expected_output(read_cascades(ROOT / "data" / "sample.csv"), (600, 1200), 1800, 10)
    sizes = {k: v["n_tot"] for k, v in keyed(tmp_path / "out" / "cascade_properties.jsonl", "size").items()}
    assert sizes == want_sizes


# ---------------------------------------------------------------------------------------------
# Failure 4: bounded shutdown of a kafka_sink whose broker is down

def kafka_sink_config(tmp_path, shutdown_timeout):
    cfg = tmp_path / "sink.yaml"
    cfg.write_text(f"""
plugins: [replay, kafka]
progress_interval: 0
shutdown_timeout: {shutdown_timeout}
stages:
  source:
    type: replay
    outputs: {{ tweets: tweets }}
    path: {ROOT / "data" / "sample.csv"}
    time_acceleration: 20000
  sink:
    type: kafka_sink
    inputs: {{ messages: [tweets] }}
    brokers: 127.0.0.1:{free_port()}
    topic: tweets
""")
    return cfg


def produced_and_lost(out):
    produced = int(re.search(r"\bproduced=(\d+)", out).group(1))
    lost = int(re.search(r"stage sink FAILED: (\d+) records? not delivered to topic tweets, lost", out).group(1))
    return produced, lost


def test_sigterm_with_the_broker_down_ends_within_shutdown_timeout_and_counts_the_loss(daemon, tmp_path):
    # librdkafka's message.timeout.ms is 300 s: before, SIGTERM waited for it, then exited 0.
    cfg = kafka_sink_config(tmp_path, shutdown_timeout=3)
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=100)
    assert proc.returncode == 1, err[-3000:]
    produced, lost = produced_and_lost(out)
    assert produced > 0 and lost == produced, out
    assert f"delivery_failed={produced}" in out
    assert re.search(r"stop deadline passed with \d+ records undelivered", err), err[-3000:]


def test_second_sigterm_cuts_the_shutdown_wait(daemon, tmp_path):
    cfg = kafka_sink_config(tmp_path, shutdown_timeout=3600)
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(2)
    assert proc.poll() is None, "the first SIGTERM must wait for the deliveries"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=100)
    assert "second stop signal" in err, err[-3000:]
    assert proc.returncode != 0
    if proc.returncode == 1:  # the stages had time to report: the loss is counted
        produced, lost = produced_and_lost(out)
        assert lost == produced > 0
    else:
        assert proc.returncode == 128 + signal.SIGTERM and "shutdown deadline passed" in err


# ---------------------------------------------------------------------------------------------
# README behaviours: a stage failing at run time, a plugin of another ABI, the 16 MiB cap

def test_stage_failing_at_run_time_exits_1_and_withholds_the_watchdog(daemon, tmp_path):
    import gzip
    # A gzip file corrupt far from its start: valid for `validate` (which reads the first 64 KiB
    # of the data to check its header and line ends), a read error for `run`. Ten copies of the
    # sample under other cascade ids put the corruption about 1.3 MB into the data.
    rows = (ROOT / "data" / "sample.csv").read_text().splitlines()
    text = rows[0] + "\n" + "".join(
        f"{int(c) + 100000 * k},{rest}\n" for k in range(10) for c, rest in (r.split(",", 1) for r in rows[1:]))
    data = gzip.compress(text.encode())
    middle = len(data) * 8 // 10
    corrupt = tmp_path / "corrupt.csv.gz"
    corrupt.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 4096]) + data[middle + 4096:])
    cfg = tmp_path / "failing.yaml"
    cfg.write_text(f"""
plugins: [replay, file, kafka]
progress_interval: 0
shutdown_timeout: 4
stages:
  broken:
    type: replay
    outputs: {{ tweets: broken_tweets }}
    path: {corrupt}
  files:
    type: file
    inputs: {{ streams: [broken_tweets] }}
    directory: {tmp_path / "out"}
  paced:
    type: replay
    outputs: {{ tweets: tweets }}
    path: {ROOT / "data" / "sample.csv"}
    time_acceleration: 20000
  sink:
    type: kafka_sink
    inputs: {{ messages: [tweets] }}
    brokers: 127.0.0.1:{free_port()}
    topic: tweets
""")
    assert run(daemon, "validate", "--config", cfg).returncode == 0
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    messages = []
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        try:
            messages.append(sock.recv(1 << 16).decode())
        except socket.timeout:
            pass
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err[-3000:]
    assert "stage broken FAILED:" in out, out
    withheld = [i for i, m in enumerate(messages) if m.startswith("STATUS=watchdog withheld: stage failed: broken")]
    assert withheld, messages
    assert "WATCHDOG=1" not in messages[withheld[0]:], messages
    assert "watchdog ping withheld: stage failed: broken" in err


def test_plugin_of_another_abi_is_refused_naming_the_file(daemon, tmp_path):
    src = tmp_path / "old.c"
    src.write_text("int tweetoscope_plugin_register(unsigned abi, void *registrar) { return 1; }\n")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    so = plugins / "libtweetoscope-old.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    r = run(daemon, "plugins", "--plugin-dir", plugins)
    assert r.returncode == 78, r.stderr
    assert f"plugin {so}: built for plugin ABI 1, this daemon has ABI" in r.stderr, r.stderr
    cfg = tmp_path / "old.yaml"
    cfg.write_text(f"plugin_dir: {plugins}\nplugins: [old]\nstages: {{}}\n")
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 78 and "built for plugin ABI 1" in r.stderr, r.stderr


def test_configuration_over_16_mib_is_refused(daemon, tmp_path):
    good = config(tmp_path, acceleration=0)
    text = good.read_text()
    big = tmp_path / "big.yaml"
    padding = "# " + "x" * 1021 + "\n"  # 1024 bytes
    room = 16 * 1024 * 1024 - len(text.encode())
    big.write_text(text + padding * (room // 1024 + 1))
    assert big.stat().st_size > 16 * 1024 * 1024
    r = run(daemon, "validate", "--config", big)
    assert r.returncode == 78, r.stdout + r.stderr
    assert f"cannot read {big}: larger than 16 MiB, not a configuration file" in r.stderr
    # Just under the cap it is read (and valid).
    big.write_text(text + padding * (room // 1024))
    assert big.stat().st_size <= 16 * 1024 * 1024
    r = run(daemon, "validate", "--config", big)
    assert r.returncode == 0, r.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# Failure 4: SIGTERM after the source's topic was deleted mid-run

from test_kafka import broker, ck, course_tweets, kafka_options, tweet_records  # noqa: E402,F401 (fixtures)


def test_sigterm_completes_after_the_topic_was_deleted(broker, daemon, tmp_path):
    """librdkafka's consumer close waits for ever once the topic is gone; the daemon must still
    stop within shutdown_timeout (the consumer is abandoned, counted `close_abandoned`)."""
    from confluent_kafka.admin import AdminClient, NewTopic
    topic = f"deleted-{os.getpid()}-{time.time_ns()}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for _, future in admin.create_topics([NewTopic(topic, 2, 1)]).items():
        future.result(timeout=30)
    events = course_tweets([ROOT / "data" / "sample.csv"], sources=2, seed=1)[:2000]
    broker.produce(topic, tweet_records(events))
    cfg = tmp_path / "deleted.yaml"
    cfg.write_text(f"""
plugins: [kafka, file]
progress_interval: 0
shutdown_timeout: 5
stages:
  source:
    type: kafka_source
    outputs: {{ messages: tweets }}
    group: g-{topic}
{kafka_options(broker, topic)}
  files:
    type: file
    inputs: {{ streams: [tweets] }}
    directory: {tmp_path / "out"}
""")
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out_file = tmp_path / "out" / "tweets.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and not (out_file.exists() and out_file.read_text().count("\n") >= len(events)):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        assert out_file.read_text().count("\n") == len(events)
        for _, future in admin.delete_topics([topic]).items():
            future.result(timeout=30)
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "tweetoscoped summary:" in out, err[-3000:]
    assert proc.returncode in (0, 1), err[-3000:]
