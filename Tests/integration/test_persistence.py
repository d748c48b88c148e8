"""What survives a kill -9 (issue 12, item 2; issue 16: "now including a killed prediction daemon").

- The learner's `state_dir`: each window's latest model and samples, written atomically after each
  fit. After a kill -9 mid-run the files are whole, and a restarted daemon sends the saved models
  at once (byte for byte the last models of the killed run); a corrupt file is set aside as
  `<name>.rejected-<UTC time>`, logged with its name and the reason, and counted.
- The predictor's waiting half-pairs, when its `cascade_properties` come from Kafka: it releases
  to the source only the offsets before its oldest waiting half, once its outputs are durable.
  A prediction daemon killed (SIGKILL) while halves wait, then restarted, gives the alerts and
  stats of an uninterrupted run (after removing the records written twice, which must be equal:
  outputs are at least once), none lost.
"""
import json
import re
import signal
import subprocess
import time
import uuid

from conftest import ROOT, run
from pipeline import collector, estimator, file_sink, learner, predictor, replay, stage, write_config
from test_kafka import CLIENT_CONFIG, ck, broker, tweetoscoped  # noqa: F401 (fixtures)


def counter(text, name):
    return sum(int(x) for x in re.findall(rf"\b{re.escape(name)}=(\d+)", text))


def learning_config(tmp_path, name, state, acceleration=0, limit=0):
    """The embedded sample through the whole pipeline, a learner that fits from 5 samples on."""
    out = tmp_path / name
    cfg = write_config(
        tmp_path / f"{name}.yaml", ["replay", "collector", "estimator", "predictor", "learner", "file"],
        replay(ROOT / "data" / "sample.csv", time_acceleration=acceleration, limit=limit),
        collector(), estimator(),
        predictor("growth", refit_every=2, min_samples=4),
        learner("growth", refit_every=2, min_samples=4, trees=10, state_dir=state),
        file_sink(out, ["alerts", "stats", "samples", "models"]))
    return cfg, out


def state_files(state):
    return sorted(p for p in state.iterdir() if p.name.endswith(".jsonl")) if state.exists() else []


def check_state_file(path):
    """A whole state file: header, model, samples; returns (header, model line, samples)."""
    lines = path.read_text().splitlines()
    assert len(lines) == 3, f"{path}: {len(lines)} lines"
    header, model, samples = (json.loads(x) for x in lines)
    assert header["type"] == "learner_state" and header["format"] == 1 and header["mode"] == "growth"
    assert model["type"] == "model" and model["T_obs"] == header["T_obs"]
    assert samples["type"] == "samples" and len(samples["X"]) == len(samples["W"]) == len(samples["growth"])
    assert model["samples"] == len(samples["W"])
    assert model["version"] == header["seen"] // 2
    return header, lines[1], samples


def test_learner_state_is_written_and_restored(daemon, tmp_path):
    state = tmp_path / "state"
    cfg, out = learning_config(tmp_path, "first", state)
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    models = [json.loads(x) for x in (out / "models.jsonl").read_text().splitlines()]
    assert models, "no model fitted"
    files = state_files(state)
    assert [p.name for p in files] == sorted(f"learner-learner-T{w}.jsonl" for w in {m["T_obs"] for m in models})
    last = {}
    for line in (out / "models.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m["version"] >= last.get(m["T_obs"], (-1, ""))[0]:
            last[m["T_obs"]] = (m["version"], line)
    for path in files:
        header, model_line, samples = check_state_file(path)
        # The saved model is the window's last model, byte for byte.
        assert model_line == last[header["T_obs"]][1]
        # Its targets are within the bounds it carries.
        m = json.loads(model_line)
        assert min(samples["W"]) == m["w_min"] and max(samples["W"]) == m["w_max"]
    assert not list(state.glob("*.tmp"))

    # A restart (a later run reading one cascade) sends the saved models first, and its
    # predictor forecasts with them.
    cfg2, out2 = learning_config(tmp_path, "second", state, limit=1)
    r = run(daemon, "run", "--config", cfg2)
    assert r.returncode == 0, r.stderr[-3000:]
    both = r.stdout + r.stderr
    assert counter(both, "models_restored") == len(files), both[-2000:]
    sent = (out2 / "models.jsonl").read_text().splitlines()
    assert sorted(sent[:len(files)]) == sorted(line for _, line in last.values())
    assert "learner state restored from" in both


def test_learner_killed_mid_run_leaves_whole_state_files_and_restarts_with_them(daemon, tmp_path):
    state = tmp_path / "state"
    # Paced (the whole replay takes about 150 s at this speed; the first model about 10 s).
    cfg, out = learning_config(tmp_path, "killed", state, acceleration=20000)
    p = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 80
        while time.time() < deadline and not state_files(state):
            assert p.poll() is None, p.communicate()[1][-3000:]
            time.sleep(0.05)
        assert state_files(state), "no state written within 80 s"
        time.sleep(1)
        assert p.poll() is None, "the run ended before the kill: raise its length"
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    saved = {}
    for path in state_files(state):
        header, model_line, _ = check_state_file(path)
        saved[header["T_obs"]] = model_line
    cfg2, out2 = learning_config(tmp_path, "restarted", state, limit=1)
    r = run(daemon, "run", "--config", cfg2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert counter(r.stdout + r.stderr, "models_restored") == len(saved)
    sent = (out2 / "models.jsonl").read_text().splitlines()
    assert sorted(sent[:len(saved)]) == sorted(saved.values())


def test_corrupt_state_file_is_set_aside_logged_and_counted(daemon, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    bad = state / "learner-learner-T600.jsonl"
    bad.write_text('{"type":"learner_state","format":1,"mode":"growth","T_obs":600,"seen":4}\n{"type": "mod')
    other = state / "learner-learner-T1200.jsonl"
    other.write_text('{"type":"learner_state","format":1,"mode":"course","T_obs":1200,"seen":4}\n{}\n{}\n')
    cfg, out = learning_config(tmp_path, "run", state, limit=2)
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    both = r.stdout + r.stderr
    assert counter(both, "state_rejected") == 2
    assert not bad.exists() and not other.exists()
    aside = sorted(p.name for p in state.iterdir() if ".rejected-" in p.name)
    assert len(aside) == 2 and all(re.fullmatch(r"learner-learner-T\d+\.jsonl\.rejected-\d{8}T\d{6}Z", n) for n in aside)
    assert f"learner state file {bad} set aside" in both and "expected 3 lines (header, model, samples), found 2" in both
    assert f"learner state file {other} set aside" in both and "mode course" in both


# --------------------------------------------------------------------------------------------
# A prediction daemon killed while pairs wait.

def properties_records(daemon, tmp_path):
    """cascade_properties (sizes and parameters, in stream order) of the embedded sample."""
    out = tmp_path / "props"
    cfg = write_config(tmp_path / "props.yaml", ["replay", "collector", "estimator", "file"],
                       replay(ROOT / "data" / "sample.csv", max_cascades=5), collector(), estimator(),
                       file_sink(out, ["cascade_properties"]))
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (out / "cascade_properties.jsonl").read_text().splitlines()
    # In stream order (seq per window), as the collector numbered them.
    records = [json.loads(x) for x in lines]
    records.sort(key=lambda r: (r["seq"], r["T_obs"]))
    return [(str(r["T_obs"]).encode(), json.dumps(r, sort_keys=True).encode()) for r in records]


def predict_config(tmp_path, broker, topic, group, name, stop_at_end):
    out = tmp_path / name
    cfg = write_config(
        tmp_path / f"{name}.yaml", ["kafka", "predictor", "file"],
        stage("source", "kafka_source", outputs={"messages": "cascade_properties"}, brokers=broker.bootstrap,
              topic=topic, group=group, instance_id=f"{group}-member", stop_at_end=stop_at_end,
              librdkafka=CLIENT_CONFIG),
        stage("predictor", "predictor", inputs={"properties": ["cascade_properties"]},
              outputs={"alerts": "alerts", "stats": "stats"}, mode="none"),
        file_sink(out, ["alerts", "stats"]))
    return cfg, out


def keyed_union(paths):
    """{(type, cid, T_obs): line} over the files; a key written twice must have equal lines."""
    out = {}
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            r = json.loads(line)
            key = (r["type"], r["cid"], r["T_obs"])
            assert out.get(key, line) == line, f"{key} written twice with different values"
            out[key] = line
    return out


def lines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_prediction_daemon_killed_with_waiting_pairs_loses_nothing(tweetoscoped, broker, tmp_path):
    records = properties_records(tweetoscoped, tmp_path)
    sizes = sum(1 for _, v in records if json.loads(v)["type"] == "size")
    assert sizes > 20
    from confluent_kafka.admin import AdminClient, NewTopic
    tag = uuid.uuid4().hex[:8]
    topic = f"props-{tag}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for _, future in admin.create_topics([NewTopic(topic, 2, 1)]).items():
        future.result(timeout=30)
    half = len(records) // 2
    broker.produce(topic, records[:half])

    # The killed daemon: reads the first half (many forecasts wait for sizes of the second half),
    # outputs settle, SIGKILL.
    cfg, out = predict_config(tmp_path, broker, topic, f"kill-{tag}", "killed", stop_at_end=False)
    p = subprocess.Popen([str(tweetoscoped), "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        stable, last, deadline = 0, -1, time.time() + 40
        while stable < 30 and time.time() < deadline:
            assert p.poll() is None, p.communicate()[1][-3000:]
            n = lines(out / "alerts.jsonl")
            stable = stable + 1 if n == last and n > 0 else 0
            last = n
            time.sleep(0.1)
    finally:
        p.send_signal(signal.SIGKILL)
        killed_out, killed_err = p.communicate()
    assert stable >= 30, f"the prediction daemon did not settle on the first half: {killed_err[-3000:]}"
    killed_alerts = lines(out / "alerts.jsonl")
    assert killed_alerts > 0

    # The rest arrives; the restarted daemon reads on from the committed offsets.
    broker.produce(topic, records[half:])
    cfg2, out2 = predict_config(tmp_path, broker, topic, f"kill-{tag}", "restarted", stop_at_end=True)
    r = subprocess.run([str(tweetoscoped), "run", "--config", str(cfg2)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    # The uninterrupted reference.
    cfg3, out3 = predict_config(tmp_path, broker, topic, f"ref-{tag}", "reference", stop_at_end=True)
    r3 = subprocess.run([str(tweetoscoped), "run", "--config", str(cfg3)], capture_output=True, text=True, timeout=300)
    assert r3.returncode == 0, r3.stderr[-3000:]
    want = keyed_union([out3 / "alerts.jsonl", out3 / "stats.jsonl"])
    got = keyed_union([out / "alerts.jsonl", out / "stats.jsonl", out2 / "alerts.jsonl", out2 / "stats.jsonl"])
    stats = [k for k in want if k[0] == "stat"]
    assert len(stats) >= sizes // 2, (len(stats), sizes)
    assert got == want, f"{len(set(want) - set(got))} lost, {len(set(got) - set(want))} extra"
    # The restarted run read again what the killed one left waiting (the committed offsets were
    # held before the oldest waiting half): more records than the second half alone.
    assert counter(r.stdout, "records") > len(records) - half, r.stdout[-2000:]
