"""`tweetoscoped top` on recorded alert/stat/parameters JSON lines (tables computed by hand), on a
growing file (followed like tail -f), and on Kafka topics; and a monitor daemon that reads the
same alerts and stats from Kafka exports the top-K gauge and the ARE histogram its dashboard uses.

Set TWEETOSCOPED to test another build of the daemon than .build/release.
"""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import run
from test_kafka import broker, ck, kafka_options  # noqa: F401 (pytest fixtures)
from test_metrics import dashboard_queries, exported, free_port, metric_names, parse, scrape, value, wait_for

ALERTS = """\
{"type":"alert","cid":11,"msg":"first tweet","T_obs":600,"n_tot":120.0}
{"type":"alert","cid":12,"msg":"second","T_obs":600,"n_tot":45.5}
{"type":"alert","cid":13,"msg":"third one","T_obs":600,"n_tot":300.25}
{"type":"alert","cid":11,"msg":"first tweet","T_obs":1200,"n_tot":80.0}
{"type":"alert","cid":14,"msg":"a very long message that will be cut to fit in eighty columns for sure","T_obs":600,"n_tot":80.0}
{"type":"alert","cid":15,"msg":"small","T_obs":1200,"n_tot":10.04}
{"type":"alert","cid":13,"msg":"third one","T_obs":600,"n_tot":310.0}
not json
"""
STATS = """\
{"type":"stat","cid":12,"T_obs":600,"ARE":0.5}
{"type":"stat","cid":21,"T_obs":600,"ARE":0.1}
{"type":"stat","cid":22,"T_obs":600,"ARE":0.3}
{"type":"stat","cid":23,"T_obs":1200,"ARE":0.2}
{"type":"stat","cid":24,"T_obs":1200,"ARE":0.5}
"""
PROPERTIES = """\
{"type":"parameters","cid":13,"msg":"third one","T_obs":600,"n_obs":42,"n_supp":3.5,"params":[0.01,0.001],"n_star":0.5,"G1":1.75}
{"type":"parameters","cid":11,"msg":"first tweet","T_obs":600,"n_obs":20,"n_supp":3.5,"params":[0.01,0.001],"n_star":0.5,"G1":1.75}
{"type":"parameters","cid":11,"msg":"first tweet","T_obs":1200,"n_obs":30,"n_supp":3.5,"params":[0.01,0.001],"n_star":0.5,"G1":1.75}
{"type":"size","cid":13,"T_obs":600,"n_tot":50,"t_end":1000.0}
"""

# By hand: the latest forecast of a cascade is its alert of the largest window, the last one sent
# for that window (13: 310.0 replaces 300.25; 11: 80.0 at 1200 replaces 120.0 at 600). 12 has a
# stat: ended, hidden by default. Ties (11 and 14 at 80.0) by cascade id. Observed sizes come from
# the parameters of the forecast's window (11 at 1200: 30, not 20). Medians: 600 -> {0.1, 0.3, 0.5}
# = 0.3; 1200 -> {0.2, 0.5} = 0.35. The message column is 80 - 1 - 41 = 38 wide: 35 characters
# and "...".
TOP3 = """\
top 3 of 4 running cascades by forecast
  # cascade  T_obs  observed   forecast  message
  1      13    600        42      310.0  third one
  2      11   1200        30       80.0  first tweet
  3      14    600         -       80.0  a very long message that will be cu...

median ARE per window (last 10000 stats of each)
 T_obs    stats  median ARE
   600        3       0.300
  1200        2       0.350
read 7 alerts, 5 stats, 3 parameters; 1 malformed line skipped
"""

# --all: ended cascades too, with the ARE of their forecast's window (12: 0.50); the ARE column
# leaves 31 characters for the message.
ALL5 = """\
top 5 of 5 cascades by forecast
  # cascade  T_obs  observed   forecast    ARE  message
  1      13    600        42      310.0      -  third one
  2      11   1200        30       80.0      -  first tweet
  3      14    600         -       80.0      -  a very long message that wil...
  4      12    600         -       45.5   0.50  second
  5      15   1200         -       10.0      -  small

median ARE per window (last 10000 stats of each)
 T_obs    stats  median ARE
   600        3       0.300
  1200        2       0.350
read 7 alerts, 5 stats, 3 parameters; 1 malformed line skipped
"""


@pytest.fixture
def recorded(tmp_path):
    paths = {}
    for name, text in (("alerts", ALERTS), ("stats", STATS), ("properties", PROPERTIES)):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text(text)
    return paths


def test_top_once_on_recorded_files(daemon, recorded):
    r = run(daemon, "top", "--once", "--alerts", recorded["alerts"], "--stats", recorded["stats"],
            "--properties", recorded["properties"], "-k", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout == TOP3
    assert max(len(l) for l in r.stdout.splitlines()) < 80


def test_top_once_all_cascades(daemon, recorded):
    r = run(daemon, "top", "--once", "--all", "-k", "5", "--alerts", recorded["alerts"], "--stats", recorded["stats"],
            "--properties", recorded["properties"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == ALL5


def test_top_alerts_only_and_errors(daemon, recorded, tmp_path):
    r = run(daemon, "top", "--once", "--alerts", recorded["alerts"], "-k", "2", "--width", "60")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:4] == [
        "top 2 of 5 running cascades by forecast",
        "  # cascade  T_obs  observed   forecast  message",
        "  1      13    600         -      310.0  third one",
        "  2      11   1200         -       80.0  first tweet",
    ]
    # Every line fits the width (59 columns and the cursor): the last one is cut.
    assert r.stdout.endswith("\nmedian ARE per window: no stats yet\nread 7 alerts, 0 stats, 0 parameters; 1 malformed line s...\n")
    missing = run(daemon, "top", "--once", "--alerts", tmp_path / "nope.jsonl")
    assert missing.returncode == 1 and "cannot open" in missing.stderr and "nope.jsonl" in missing.stderr
    assert run(daemon, "top", "--once").returncode != 0   # no source
    bad = run(daemon, "top", "--once", "--alerts", "kafka://nohost")
    assert bad.returncode != 0 and "kafka://host:port/topic" in bad.stderr


def test_top_follows_a_growing_file(daemon, tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text(ALERTS.splitlines()[0] + "\n")
    proc = subprocess.Popen([str(daemon), "top", "--alerts", str(alerts), "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.set_blocking(proc.stdout.fileno(), False)
    screen = b""

    def frames():
        nonlocal screen
        chunk = proc.stdout.read()
        if chunk:
            screen += chunk
        return screen.split(b"\x1b[H\x1b[2J")

    try:
        wait_for(lambda: any(b"first tweet" in f for f in frames()), 20, "the first table", proc)
        with alerts.open("a") as f:   # the file sink appends whole lines
            f.write('{"type":"alert","cid":99,"msg":"late hot one","T_obs":600,"n_tot":9999.0}\n')
            f.write('{"type":"alert","cid":98,"msg":"partial')   # an incomplete line waits for its end
        last = wait_for(lambda: [f for f in frames() if b"late hot one" in f], 20, "the appended alert", proc)[-1]
        text = last.decode()
        assert "tweetoscoped top" in text.splitlines()[0]
        assert re.search(r"^  1      99    600         -     9999\.0  late hot one$", text, re.M), text
        assert "top 2 of 2 running cascades" in text and "read 2 alerts" in text and "malformed" not in text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------------------------------------
# Kafka: `top` on topics, and a monitor daemon exporting the forecast metrics

def produce_lines(broker, topic, text):
    """Produces each decodable line, keyed by its T_obs as the course's topics are."""
    records = []
    for line in text.splitlines():
        try:
            key = str(json.loads(line)["T_obs"]).encode()
        except ValueError:
            key = None
        records.append((key, line.encode()))
    broker.produce(topic, records)


@pytest.fixture
def forecast_topics(broker):
    topics = broker.course_topics(f"top-{int(time.time() * 1000)}")
    produce_lines(broker, topics["alerts"], ALERTS)
    produce_lines(broker, topics["stats"], STATS)
    produce_lines(broker, topics["cascade_properties"], PROPERTIES)
    return topics


def test_top_reads_kafka_topics(daemon, broker, forecast_topics):
    src = {k: f"kafka://{broker.bootstrap}/{forecast_topics[k]}" for k in ("alerts", "stats", "cascade_properties")}
    r = run(daemon, "top", "--once", "-k", "3", "--alerts", src["alerts"], "--stats", src["stats"],
            "--properties", src["cascade_properties"], timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    # The same table as from the files: records of different partitions interleave, but the
    # latest forecast does not depend on that order (the largest window wins; the two 600 s
    # alerts of cascade 13 have the same key, hence the same partition and order).
    assert r.stdout == TOP3


def test_monitor_daemon_exports_top_k_and_are(daemon, broker, forecast_topics, tmp_path):
    port = free_port()
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(f"""
plugins: [kafka, file]
metrics:
  listen: "127.0.0.1:{port}"
  top_k: 3
  linger: 60
stages:
  alerts_in:
    type: kafka_source
    outputs: {{ messages: forecasts }}
{kafka_options(broker, forecast_topics["alerts"], group="monitor-a", stop_at_end=True)}
  stats_in:
    type: kafka_source
    outputs: {{ messages: forecasts }}
{kafka_options(broker, forecast_topics["stats"], group="monitor-s", stop_at_end=True)}
  files:
    type: file
    inputs: {{ streams: [forecasts] }}
    directory: {tmp_path / "out"}
  relay:
    type: kafka_sink
    inputs: {{ messages: [forecasts] }}
{kafka_options(broker, forecast_topics["logs"])}
""")
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def ended():
            samples, _ = parse(scrape(port))
            running = samples.get("tweetoscope_stage_running", {})
            return samples if running and not any(running.values()) else None

        wait_for(ended, 120, "the monitor to read both topics", proc)
        text = scrape(port)
        samples, types = parse(text)
        # Top 3 of the running cascades (12 has a stat), with rank, cascade and window labels.
        top = {(dict(l)["rank"], dict(l)["cid"], dict(l)["t_obs"]): v
               for l, v in samples["tweetoscope_top_cascade_forecast"].items()}
        assert top == {("1", "13", "600"): 310.0, ("2", "11", "1200"): 80.0, ("3", "14", "600"): 80.0}
        assert value(samples, "tweetoscope_top_cascades_tracked") == 4
        # The ARE of every stat, per window.
        assert value(samples, "tweetoscope_forecast_are_ratio_count", stream="forecasts", t_obs="600") == 3
        assert value(samples, "tweetoscope_forecast_are_ratio_count", stream="forecasts", t_obs="1200") == 2
        assert value(samples, "tweetoscope_forecast_are_ratio_bucket", t_obs="600", le="0.3") == 2
        assert abs(value(samples, "tweetoscope_forecast_are_ratio_sum", t_obs="1200") - 0.7) < 1e-9
        # Kafka figures: lag per partition (all read: 0), no delivery error, one record per line out.
        lag = samples["tweetoscope_kafka_consumer_lag_records"]
        assert lag and all(v == 0 for v in lag.values())
        assert {dict(l)["partition"] for l in lag} <= {"0", "1", "2", "3"}
        assert value(samples, "tweetoscope_kafka_delivery_errors_total", stage="relay") == 0
        assert value(samples, "tweetoscope_stage_output_window_records_total", stage="alerts_in", kind="alert") == 7
        assert value(samples, "tweetoscope_stage_rejected_records_total", stage="alerts_in", reason="invalid_json") == 1
        # Every metric of the dashboard's forecast and Kafka panels is exported by this daemon.
        _, exprs = dashboard_queries()
        for title, expr in exprs:
            for name in metric_names(expr):
                if name.startswith(("tweetoscope_top_", "tweetoscope_forecast_", "tweetoscope_kafka_")):
                    assert exported(name, types), f"panel {title!r}: {name} is not exported"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
