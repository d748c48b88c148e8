"""Issue 12 (3, 4): the shipped model, the honest sample, and calibrated forecast uncertainty.

- The shipped model is what `tweetoscoped train` makes from the committed samples minus the
  sample's cascades (byte for byte), and data/sample.csv is what scripts/make-sample makes.
- The first run of the shipped configuration forecasts with a model (>= 90 % of forecasts), and
  every alert has the issue's fields with a consistent interval.
- scripts/calibration --check: 75-85 % coverage of the 80 % interval at every window, measured by
  cross-validation on the shared SEISMIC cascades (held out from each fold's training).
- A corrupt model file is a configuration error naming the file and line (exit 78).
"""
import csv
import hashlib
import json
import os
import re
import subprocess

from conftest import ROOT, run

MODELS = ROOT / "data" / "models"
SAMPLE = ROOT / "data" / "sample.csv"


def sample_ids():
    with open(SAMPLE, newline="") as f:
        return {int(row["cascade"]) for row in csv.DictReader(f)}


def test_shipped_model_is_trained_without_the_sample_cascades(daemon, tmp_path):
    ids = sample_ids()
    samples = [json.loads(line) for line in (MODELS / "seismic-samples.jsonl").read_text().splitlines()]
    train = [s for s in samples if s["cid"] not in ids]
    # The sample's cascades do have samples: leaving them out is not a no-op.
    assert len(train) < len(samples)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in train))
    out = tmp_path / "growth.jsonl"
    r = run(daemon, "train", "--samples", path, "--output", out, "--mode", "growth")
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256((MODELS / "growth.jsonl").read_bytes()).hexdigest()
    models = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["T_obs"] for m in models] == [600, 1200]
    for m in models:
        assert m["samples"] == sum(s["T_obs"] == m["T_obs"] for s in train)
        assert len(m["residuals"]) == 200 and m["residuals"] == sorted(m["residuals"])


def test_sample_is_remade_by_make_sample(shared, tmp_path):
    out = tmp_path / "sample.csv"
    r = subprocess.run([str(ROOT / "scripts" / "make-sample"), "--output", str(out),
                        "--data", str(shared / "data" / "real" / "seismic.csv.gz")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == SAMPLE.read_bytes()


def shipped_config(tmp_path):
    text = (ROOT / "etc" / "tweetoscope.yaml").read_text()
    text = text.replace("../data/", str(ROOT / "data") + "/").replace("directory: ../out", f"directory: {tmp_path / 'out'}")
    path = tmp_path / "tweetoscope.yaml"
    path.write_text(text)
    return path


def test_first_run_of_the_shipped_config_uses_a_model(daemon, tmp_path):
    r = run(daemon, "run", "--config", shipped_config(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = re.findall(r"accuracy T_obs=(\d+): forecasts=(\d+) \(with model (\d+)\)", r.stderr)
    assert {w for w, _, _ in lines} == {"600", "1200"}, r.stderr[-3000:]
    forecasts = sum(int(f) for _, f, _ in lines)
    with_model = sum(int(m) for _, _, m in lines)
    assert forecasts > 0 and with_model >= 0.9 * forecasts, lines
    alerts = [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    stats = {(s["cid"], s["T_obs"]): s for s in map(json.loads, (tmp_path / "out" / "stats.jsonl").read_text().splitlines())}
    assert len(alerts) == forecasts
    assert sum(a["model"] > 0 for a in alerts) >= 0.9 * len(alerts)
    for a in alerts:
        assert set(a) == {"type", "cid", "msg", "T_obs", "n_tot", "n_obs", "t", "model", "interval", "p_viral"}, a
        lo, hi = a["interval"]
        assert a["n_obs"] <= lo <= hi, a
        assert 0 <= a["p_viral"] <= 1, a
        assert a["t"] >= a["T_obs"], a
        s = stats[(a["cid"], a["T_obs"])]
        assert s["forecast"] == a["n_tot"] and s["n_obs"] == a["n_obs"], (a, s)
        assert abs(s["ARE"] - abs(s["forecast"] - s["n_tot"]) / s["n_tot"]) < 1e-12, s
    assert sample_ids() >= {a["cid"] for a in alerts}


def test_calibration_check_passes(daemon):
    env = dict(os.environ, TWEETOSCOPED=str(daemon))
    r = subprocess.run([str(ROOT / "scripts" / "calibration"), "--check"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+([\d.]+)%", r.stdout, re.M)
    assert {w for w, _, _ in rows} == {"600", "1200"}, r.stdout
    for w, n, coverage in rows:
        assert int(n) > 500 and 75 <= float(coverage) <= 85, r.stdout


def test_corrupt_model_file_is_a_configuration_error(daemon, tmp_path):
    good = (MODELS / "growth.jsonl").read_text().splitlines()[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + "\n" + good[: len(good) // 2] + "\n")
    text = shipped_config(tmp_path).read_text().replace(str(MODELS / "growth.jsonl"), str(bad))
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    for command in ("validate", "run"):
        r = run(daemon, command, "--config", cfg, timeout=120)
        assert r.returncode == 78, (command, r.stderr[-2000:])
        assert f"{bad}:2: invalid_json" in r.stderr, r.stderr[-2000:]
