"""The Prometheus endpoint as an operator uses it: a daemon with `metrics.listen` is scraped during
a paced replay; the final counters match the run's summary and the independent model; a real
Prometheus (Debian's package, installed here if missing) scrapes the daemon and its query API
returns the daemon's series; `promtool check metrics` accepts the exposition; the shipped
Grafana dashboard is valid JSON whose every query names a metric the daemon exports.

Set TWEETOSCOPED to test another build of the daemon than .build/release.
"""
import json
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict

import pytest

from conftest import ROOT
from independent import expected_output, read_cascades

GRAFANA = ROOT / "etc" / "grafana" / "tweetoscoped.json"
SAMPLE = ROOT / "data" / "sample.csv"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def metrics_config(tmp_path, port, acceleration=300000, linger=60):
    """The shipped configuration, paced (~5 s of replay for the sample), with metrics on."""
    text = (ROOT / "etc" / "tweetoscope.yaml").read_text()
    text = text.replace("../data/sample.csv", str(SAMPLE))
    text = text.replace("directory: ../out", f"directory: {tmp_path / 'out'}")
    text = text.replace("time_acceleration: 0", f"time_acceleration: {acceleration}")
    text += f'\nmetrics:\n  listen: "127.0.0.1:{port}"\n  linger: {linger}\n'
    path = tmp_path / "tweetoscope.yaml"
    path.write_text(text)
    return path


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


SAMPLE_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{name: {frozenset(labels): value}} and {family: type} of an exposition."""
    samples, types = defaultdict(dict), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = SAMPLE_LINE.match(line)
            assert m, f"bad sample line: {line!r}"
            labels = frozenset(LABEL.findall(m.group(2) or ""))
            samples[m.group(1)][labels] = float(m.group(3))
    return samples, types


def value(samples, name, **labels):
    """The sum of `name` over the series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for ls, v in samples.get(name, {}).items() if want <= set(ls))


def summary_counts(out):
    """From the summary table: events, {kind column: {T_obs: n}}, {stage: {counter: n}}, {stage: {reason: n}}."""
    lines = out.splitlines()
    events = int(re.search(r"tweetoscoped summary: (\d+) events", out).group(1))
    head = next(i for i, l in enumerate(lines) if l.startswith("T_obs"))
    columns = lines[head].split()[1:]
    windows = {c: {} for c in columns}
    i = head + 1
    while not lines[i].startswith("stage"):
        cells = lines[i].split()
        for c, n in zip(columns, cells[1:]):
            if n.isdigit():   # message counts; the ARE columns are decimals
                windows[c][int(cells[0])] = int(n)
        i += 1
    counters = {}
    for l in lines[i + 1:]:
        if l.startswith("rejected records:"):
            break
        cells = l.split()
        counters[cells[0]] = {k: int(v) for k, v in (c.split("=") for c in cells[3:])}
    rejected = defaultdict(dict)
    rej = next(l for l in lines if l.startswith("rejected records:"))[len("rejected records: "):]
    if rej != "none":
        for item in rej.split(", "):
            stage, kv = item.split(": ")
            k, v = kv.split("=")
            rejected[stage][k] = int(v)
    return events, windows, counters, rejected


def wait_for(predicate, timeout, what, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the daemon exited early ({proc.returncode}) while waiting for {what}: {proc.stderr.read()[-2000:]}")
        try:
            result = predicate()
        except (OSError, urllib.error.URLError):
            result = None
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


class Run:
    """A daemon replaying the sample with metrics on; stopped (SIGTERM) by `finish`."""

    def __init__(self, daemon, tmp_path, **kw):
        self.port = free_port()
        cfg = metrics_config(tmp_path, self.port, **kw)
        self.proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def ended(self):
        """The exposition once every stage has returned (the daemon lingers), else None."""
        samples, _ = parse(scrape(self.port))
        running = samples.get("tweetoscope_stage_running", {})
        return samples if running and not any(running.values()) else None

    def finish(self):
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err[-3000:]
        return out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(scope="module")
def replay_run(daemon, tmp_path_factory):
    """Scrapes taken during and after a ~5 s paced replay, the final exposition and the summary."""
    run = Run(daemon, tmp_path_factory.mktemp("metrics"))
    try:
        during = []
        first = wait_for(lambda: scrape(run.port), 30, "the metrics endpoint", run.proc)
        during.append(parse(first)[0])
        final = None
        while final is None:
            text = scrape(run.port)
            samples, _ = parse(text)
            during.append(samples)
            running = samples.get("tweetoscope_stage_running", {})
            if running and not any(running.values()):
                final = text
            elif run.proc.poll() is not None:
                pytest.fail(run.proc.stderr.read()[-3000:])
            else:
                time.sleep(0.25)
        out, err = run.finish()
    finally:
        run.kill()
    return {"during": during, "final": final, "summary": out, "stderr": err}


def test_counters_during_a_replay_match_the_summary(replay_run):
    samples, types = parse(replay_run["final"])
    events, windows, counters, rejected = summary_counts(replay_run["summary"])
    # The replay was observed in progress: a scrape with some but not all of the events in.
    progress = [value(s, "tweetoscope_stage_input_records_total", stage="collector") for s in replay_run["during"]]
    assert any(0 < p < events for p in progress), progress
    assert progress == sorted(progress), "counters never decrease"

    # Records in and out per stage.
    assert events == len(SAMPLE.read_text().splitlines()) - 1  # every event of the sample
    assert value(samples, "tweetoscope_stage_output_records_total", stage="source", stream="tweets", kind="tweet") == events
    assert value(samples, "tweetoscope_stage_input_records_total", stage="collector", stream="tweets") == events
    assert value(samples, "tweetoscope_stage_events_total", stage="collector") == counters["collector"]["events"]
    want_series, want_sizes, dropped = expected_output(read_cascades(SAMPLE), (600, 1200), 1800, 10)
    for w in (600, 1200):
        series = value(samples, "tweetoscope_stage_output_window_records_total", stage="collector", kind="series", t_obs=str(w))
        sizes = value(samples, "tweetoscope_stage_output_window_records_total", stage="collector", kind="size", t_obs=str(w))
        params = value(samples, "tweetoscope_stage_output_window_records_total", stage="estimator", kind="parameters", t_obs=str(w))
        assert series == windows["series"][w] == sum(1 for (_, tw) in want_series if tw == w)
        assert sizes == windows["sizes"][w] == sum(1 for (_, tw) in want_sizes if tw == w)
        assert params == windows["parameters"][w]
        # The estimator read every series of the window and timed each fit.
        assert value(samples, "tweetoscope_estimator_fit_seconds_count", stage="estimator", t_obs=str(w)) == series
    assert value(samples, "tweetoscope_stage_input_records_total", stage="estimator") == len(want_series)
    sink_in = value(samples, "tweetoscope_stage_input_records_total", stage="sink")
    assert sink_in == sum(n for k, n in counters["sink"].items() if k.startswith("lines."))
    assert value(samples, "tweetoscope_stage_lines_total", stage="sink", detail="cascade_series") == len(want_series)

    # Every stage counter of the summary is exported under its name, rejections by reason.
    for stage, cs in counters.items():
        for name, n in cs.items():
            base, _, detail = name.partition(".")
            labels = {"stage": stage, **({"detail": detail} if detail else {})}
            assert value(samples, f"tweetoscope_stage_{base}_total", **labels) == n, (stage, name)
    assert rejected["collector"]["late_event"] == dropped
    assert value(samples, "tweetoscope_stage_rejected_records_total", stage="collector", reason="late_event") == dropped

    # Gauges at the end: nothing open, queues empty, every stage returned; no errors.
    assert value(samples, "tweetoscope_collector_open_cascades", stage="collector") == 0
    assert samples["tweetoscope_stage_queue_depth_batches"] and not any(samples["tweetoscope_stage_queue_depth_batches"].values())
    assert set(dict(ls)["stage"] for ls in samples["tweetoscope_stage_running"]) == {"source", "collector", "estimator", "predictor", "learner", "sink"}
    assert value(samples, "tweetoscope_stage_errors_total") == 0
    assert value(samples, "tweetoscope_stage_processing_seconds_count", stage="collector") > 0
    assert value(samples, "tweetoscope_build_info") == 1
    # Types and names follow the Prometheus conventions.
    for name, kind in types.items():
        assert name.startswith("tweetoscope_"), name
        assert (kind == "counter") == name.endswith("_total"), (name, kind)
        if kind == "histogram":
            assert name.endswith(("_seconds", "_ratio")), name


def test_endpoint_serves_metrics_only(daemon, tmp_path):
    run = Run(daemon, tmp_path, acceleration=20000, linger=0)
    try:
        wait_for(lambda: scrape(run.port), 30, "the metrics endpoint", run.proc)
        for path in ("/", "/api/v1/query", "/metricsx"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{run.port}{path}", timeout=10)
            assert e.value.code == 404
        out, err = run.finish()
        assert "metrics endpoint listening address=127.0.0.1:" in err
    finally:
        run.kill()


def test_listen_address_in_use_is_reported(daemon, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    cfg = metrics_config(tmp_path, port)
    r = subprocess.run([str(daemon), "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    busy.close()
    assert r.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in r.stderr


# ---------------------------------------------------------------------------------------------
# A real Prometheus

def ensure_prometheus():
    """Paths of Debian's prometheus and promtool, installing the package if missing."""
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
                           capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return shutil.which("prometheus"), shutil.which("promtool")


def test_promtool_accepts_the_exposition(replay_run, tmp_path):
    _, promtool = ensure_prometheus()
    r = subprocess.run([promtool, "check", "metrics"], input=replay_run["final"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_scrapes_the_daemon(daemon, tmp_path):
    prometheus, _ = ensure_prometheus()
    run = Run(daemon, tmp_path, linger=120)
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: tweetoscoped\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{run.port}']\n")
    prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def query(expr):
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    try:
        final = wait_for(run.ended, 120, "the end of the replay", run.proc)
        events = value(final, "tweetoscope_stage_input_records_total", stage="collector")
        # Prometheus has scraped the final figures: the same value through its query API.
        result = wait_for(lambda: [s for s in query('tweetoscope_stage_input_records_total{stage="collector"}')
                                   if float(s["value"][1]) == events], 60, "Prometheus to scrape the final counters")
        assert result[0]["metric"]["job"] == "tweetoscoped"
        assert result[0]["metric"]["instance"] == f"127.0.0.1:{run.port}"
        up = query('up{job="tweetoscoped"}')
        assert [float(s["value"][1]) for s in up] == [1.0]
        series = query('sum by (t_obs) (tweetoscope_stage_output_window_records_total{kind="series"})')
        assert {s["metric"]["t_obs"]: float(s["value"][1]) for s in series} == {
            t: value(final, "tweetoscope_stage_output_window_records_total", kind="series", t_obs=t) for t in ("600", "1200")}
        fits = query('histogram_quantile(0.5, sum by (le) (tweetoscope_estimator_fit_seconds_bucket))')
        assert fits and 0 < float(fits[0]["value"][1]) < 60
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/label/__name__/values", timeout=10) as r:
            names = set(json.load(r)["data"])
        assert {"tweetoscope_stage_input_records_total", "tweetoscope_stage_rejected_records_total",
                "tweetoscope_collector_open_cascades", "tweetoscope_stage_queue_depth_batches"} <= names
        run.finish()
    finally:
        run.kill()
        prom.terminate()
        try:
            prom.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            prom.kill()


# ---------------------------------------------------------------------------------------------
# The Grafana dashboard

def dashboard_queries():
    d = json.loads(GRAFANA.read_text())
    exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                exprs.append((p["title"], t["expr"]))
            walk(p.get("panels", []))

    walk(d["panels"])
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            exprs.append((v["name"], v["definition"]))
    return d, exprs


def metric_names(expr):
    return set(re.findall(r"\btweetoscope_[a-z0-9_]+", expr))


def exported(name, types):
    """Whether `name` (a family or a histogram's _bucket/_sum/_count series) is in `types`."""
    if name in types:
        return True
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return types.get(base) == "histogram"


def test_grafana_dashboard_is_valid_and_queries_exported_metrics(replay_run):
    d, exprs = dashboard_queries()
    assert d["title"] and d["uid"] and d["panels"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}"
    _, types = parse(replay_run["final"])
    # Forecast metrics need alert and stat messages, which this replay has not: they are checked
    # against the monitor daemon's exposition in test_top.py.
    forecast = {"tweetoscope_top_cascade_forecast", "tweetoscope_top_cascades_tracked", "tweetoscope_forecast_are_ratio_bucket"}
    kafka = {"tweetoscope_kafka_consumer_lag_records", "tweetoscope_kafka_delivery_errors_total"}
    names = set()
    for title, expr in exprs:
        found = metric_names(expr)
        assert found, f"{title}: no tweetoscope metric in {expr}"
        names |= found
        for name in found - forecast - kafka:
            assert exported(name, types), f"panel {title!r}: {name} is not exported"
    assert forecast <= names and kafka <= names
