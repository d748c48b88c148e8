"""Signals as an operator sends them: SIGHUP reloads the configuration (keeping the state of
unchanged stages, rejecting an invalid file), SIGTERM stops gracefully with flushed outputs."""
import json
import signal
import subprocess
import time

from conftest import ROOT
from independent import expected_output, read_cascades


def config(tmp_path, acceleration, parallelism="0"):
    text = (ROOT / "etc" / "tweetoscope.yaml").read_text()
    text = text.replace("../data/sample.csv", str(ROOT / "data" / "sample.csv"))
    text = text.replace("../data/models/", str(ROOT / "data" / "models") + "/")  # the shipped model (model_path)
    text = text.replace("directory: ../out", f"directory: {tmp_path / 'out'}")
    text = text.replace("time_acceleration: 0", f"time_acceleration: {acceleration}")
    text = text.replace("parallelism: 0", f"parallelism: {parallelism}")
    path = tmp_path / "tweetoscope.yaml"
    path.write_text(text)
    return path


def outputs(tmp_path):
    props = [json.loads(l) for l in (tmp_path / "out" / "cascade_properties.jsonl").read_text().splitlines()]
    series = [json.loads(l) for l in (tmp_path / "out" / "cascade_series.jsonl").read_text().splitlines()]
    return ({(p["cid"], p["T_obs"]): p["n_tot"] for p in props if p["type"] == "size"},
            {(s["cid"], s["T_obs"]): s["tweets"] for s in series},
            sorted((p["cid"], p["T_obs"]) for p in props if p["type"] == "parameters"))


def test_reload_keeps_unchanged_stages_and_rejects_invalid_file(daemon, tmp_path):
    # About 7 s of replay: the sample spans ~1.4e6 s of source time.
    cfg = config(tmp_path, acceleration=200000)
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    cfg.write_text(cfg.read_text().replace("parallelism: 0", "parallelism: 1"))   # valid change
    proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    cfg.write_text(cfg.read_text().replace("parallelism: 1", "parallelism: many"))  # invalid
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "configuration reloaded kept=source,collector,predictor,learner,sink rebuilt=estimator" in err
    line = next(l for l in err.splitlines() if "reload rejected" in l and "parallelism" in l)
    assert f"{cfg}:" in line and "expected an integer" in line
    assert "the previous configuration keeps running" in err
    # Nothing lost or doubled across the reload: the same outputs as the independent model.
    sizes, series, params = outputs(tmp_path)
    want_series, want_sizes, _ = expected_output(read_cascades(ROOT / "data" / "sample.csv"), (600, 1200), 1800, 10)
    assert sizes == want_sizes
    assert series == want_series
    assert params == sorted(want_series)


def cascades_of_tweets(path):
    """{cascade id: [(t - first t, m), ...]} from a file sink's tweets.jsonl, in stream order: the
    tweets exactly as the collector received them (the sink reads the same stream)."""
    cascades = {}
    for line in path.read_text().splitlines():
        d = json.loads(line)
        events = cascades.setdefault(d["tweet_id"], [])
        if d["type"] == "tweet":
            assert not events, d
            first = d["t"]
            events.append((first, d["m"]))
        else:
            events.append((d["t"], d["m"]))
    return {cid: [(t - events[0][0], m) for t, m in events] for cid, events in cascades.items()}


def test_sigterm_stops_gracefully_with_whole_lines(daemon, tmp_path):
    cfg = config(tmp_path, acceleration=20000)   # ~70 s of replay: stopped early
    # The tweets the collector received are recorded too, to compute what it must have flushed.
    cfg.write_text(cfg.read_text().replace("inputs: { streams: [cascade_series,", "inputs: { streams: [tweets, cascade_series,"))
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "tweetoscoped summary:" in out
    for name in ("cascade_properties.jsonl", "cascade_series.jsonl"):
        text = (tmp_path / "out" / name).read_text()
        assert text == "" or text.endswith("\n")
        for line in text.splitlines():
            json.loads(line)
    # Cascades open at the stop are flushed: every size matches the cascade's events seen so far,
    # and no (cid, T_obs) is written twice.
    sizes, series, params = outputs(tmp_path)
    assert len(params) == len(set(params))
    # Independently: the collector's rules (independent.py) applied to the tweets it received,
    # each cascade cut where the stop cut it. Stopped early: not every cascade of the file.
    received = cascades_of_tweets(tmp_path / "out" / "tweets.jsonl")
    assert 0 < len(received) < len(read_cascades(ROOT / "data" / "sample.csv"))
    want_series, want_sizes, _ = expected_output(received, (600, 1200), 1800, 10)
    assert want_sizes and want_series
    assert sizes == want_sizes
    assert series == want_series
