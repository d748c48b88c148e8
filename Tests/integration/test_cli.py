"""The command line as an operator uses it: validate, plugins, version, run on the shipped config."""
import json
import re

from conftest import ROOT, run
from independent import expected_output, read_cascades


def test_validate_shipped_config(daemon):
    r = run(daemon, "validate", "--config", ROOT / "etc" / "tweetoscope.yaml")
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


def test_validate_reports_every_error_with_position(daemon, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "stages:\n"
        "  source:\n"
        "    type: replay\n"
        "    outputs: { tweets: tweets }\n"
        f"    path: {ROOT}/data/sample.csv\n"
        "    sourcse: 2\n"                      # line 6: misspelled key
        "  collector:\n"
        "    type: collector\n"
        "    inputs: { tweets: tweets }\n"
        "    outputs: { series: series }\n"
        "    windows: 600\n"                    # line 11: wrong type (a list is expected)
        "  sink:\n"
        "    type: file\n"
        "    inputs: { streams: [series, alerts] }\n"   # line 14: `alerts` has no producer
        "    directory: out\n")
    r = run(daemon, "validate", "--config", cfg)
    assert r.returncode == 78
    errors = [l for l in r.stderr.splitlines() if ": error: " in l]
    assert len(errors) == 3, r.stderr
    assert errors[0].startswith(f"{cfg}:6:5: error: ") and "did you mean `sources`" in errors[0]
    assert errors[1].startswith(f"{cfg}:11:14: error: ") and "windows" in errors[1] and "expected a list" in errors[1]
    assert errors[2].startswith(f"{cfg}:14:33: error: ") and '"alerts"' in errors[2] and "no producer" in errors[2]


def test_plugins_lists_types_and_options(daemon):
    r = run(daemon, "plugins")
    assert r.returncode == 0, r.stderr
    for stage_type in ("replay", "jsonl", "collector", "file"):
        assert re.search(rf"^{stage_type} — ", r.stdout, re.M), r.stdout
    assert "option windows:" in r.stdout and "option terminated:" in r.stdout


def test_version_names_the_libraries(daemon):
    r = run(daemon, "version")
    assert r.returncode == 0
    assert re.search(r"^librdkafka 2\.\d+\.\d+$", r.stdout, re.M)
    assert re.search(r"^libyaml 0\.\d+\.\d+$", r.stdout, re.M)
    assert re.search(r"^libsystemd libsystemd\.so\.0\.\d+", r.stdout, re.M)


def test_run_shipped_config_writes_outputs_and_summary(daemon, tmp_path):
    # The shipped config, with its output directory moved to a temporary one.
    text = (ROOT / "etc" / "tweetoscope.yaml").read_text()
    text = text.replace("../data/sample.csv", str(ROOT / "data" / "sample.csv"))
    text = text.replace("../data/models/", str(ROOT / "data" / "models") + "/")  # the shipped model (model_path)
    text = text.replace("directory: ../out", f"directory: {tmp_path / 'out'}")
    cfg = tmp_path / "tweetoscope.yaml"
    cfg.write_text(text)
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert "tweetoscoped summary:" in r.stdout
    series = [json.loads(l) for l in (tmp_path / "out" / "cascade_series.jsonl").read_text().splitlines()]
    properties = [json.loads(l) for l in (tmp_path / "out" / "cascade_properties.jsonl").read_text().splitlines()]
    sizes = [p for p in properties if p["type"] == "size"]
    parameters = [p for p in properties if p["type"] == "parameters"]
    assert {s["type"] for s in series} == {"serie"} and len(sizes) + len(parameters) == len(properties)
    # One parameters message per series, with a finite forecast and n_star below 1.
    assert {(p["cid"], p["T_obs"]) for p in parameters} == {(s["cid"], s["T_obs"]) for s in series}
    for p in parameters:
        assert 0 < p["n_star"] < 1 and p["n_supp"] >= 0 and p["n_obs"] >= 10 and len(p["params"]) == 2
    want_series, want_sizes, _ = expected_output(read_cascades(ROOT / "data" / "sample.csv"), (600, 1200), 1800, 10)
    assert {(s["cid"], s["T_obs"]): s["n_tot"] for s in sizes} == want_sizes
    assert {(s["cid"], s["T_obs"]): s["tweets"] for s in series} == want_series


def test_validate_reports_a_missing_data_file_at_its_option(daemon, tmp_path):
    cfg = tmp_path / "missing.yaml"
    cfg.write_text(
        "plugins: [replay, collector]\n"
        "stages:\n"
        "  source:\n"
        "    type: replay\n"
        "    outputs: { tweets: tweets }\n"
        f"    path: {tmp_path}/nope.csv\n"          # line 6
        "  collector:\n"
        "    type: collector\n"
        "    inputs: { tweets: tweets }\n")
    r = run(daemon, "validate", "--config", cfg)
    assert r.returncode == 78
    assert f"{cfg}:6:5: error: stage \"source\": option path: cannot read {tmp_path}/nope.csv: No such file or directory" in r.stderr, r.stderr
