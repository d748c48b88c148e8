"""`validate` catches what `run` would reject at once (issue 16, failure 7): each configuration
below used to pass `tweetoscoped validate` (exit 0) and then fail at `run`, or run without a part
of the file. Each must now fail validation (exit 78) with the problem at its position."""
import gzip
import re
import subprocess

from conftest import ROOT, run

SAMPLE = ROOT / "data" / "sample.csv"


def base(tmp_path, source_extra="", data=SAMPLE, sink_dir=None, source_type="replay"):
    return f"""plugins: [replay, collector, file]
progress_interval: 0
stages:
  source:
    type: {source_type}
    path: {data}
    outputs: {{ tweets: tweets }}
{source_extra}  collector:
    type: collector
    inputs: {{ tweets: tweets }}
    outputs: {{ sizes: sizes }}
  sink:
    type: file
    inputs: {{ streams: [sizes] }}
    directory: {sink_dir or tmp_path / 'out'}
"""


def validate(daemon, tmp_path, text):
    cfg = tmp_path / "check.yaml"
    cfg.write_text(text)
    r = run(daemon, "validate", "--config", cfg, timeout=300)
    errors = [l for l in r.stderr.splitlines() if ": error: " in l]
    return cfg, r, errors


def test_base_configuration_is_valid(daemon, tmp_path):
    _, r, errors = validate(daemon, tmp_path, base(tmp_path))
    assert r.returncode == 0 and not errors, r.stderr


def test_duplicate_top_level_key_is_an_error(daemon, tmp_path):
    # A second `stages:` block would silently replace the first one.
    text = base(tmp_path) + "stages:\n  other:\n    type: collector\n"
    cfg, r, errors = validate(daemon, tmp_path, text)
    assert r.returncode == 78, r.stderr
    line = text.splitlines().index("stages:", 3) + 1
    assert any(e.startswith(f"{cfg}:{line}:1: error: key `stages` is given twice") and "first at line 3" in e
               for e in errors), r.stderr


def test_duplicate_nested_key_is_an_error(daemon, tmp_path):
    # At the stage level and deeper (the metrics mapping used to keep its first `listen`).
    text = base(tmp_path, source_extra="    seed: 1\n    seed: 2\n")
    text = text.replace("progress_interval: 0\n", "progress_interval: 0\nmetrics:\n  listen: ':0'\n  listen: ':1'\n", 1)
    cfg, r, errors = validate(daemon, tmp_path, text)
    assert r.returncode == 78
    assert any(e.startswith(f"{cfg}:5:3: error: key `listen` is given twice") and "first at line 4, column 3" in e
               for e in errors), r.stderr
    assert any(e.startswith(f"{cfg}:12:5: error: key `seed` is given twice") and "first at line 11, column 5" in e
               for e in errors), r.stderr
    assert len(errors) == 2, r.stderr


def test_second_document_is_an_error(daemon, tmp_path):
    text = base(tmp_path) + "---\nlog_level: debug\n"
    cfg, r, errors = validate(daemon, tmp_path, text)
    assert r.returncode == 78
    line = len(base(tmp_path).splitlines()) + 1
    assert any(e.startswith(f"{cfg}:{line}:1: error: a second YAML document") for e in errors), r.stderr


def test_deep_nesting_is_rejected_where_it_gets_too_deep(daemon, tmp_path):
    # 20,000 unclosed `[`: rejected at the 65th, not after scanning the whole file (libyaml alone
    # reports a syntax error at the end of the file, after quadratic work: 71 s for 100,000).
    text = "stages: " + "[" * 20000 + "\n"
    cfg, r, errors = validate(daemon, tmp_path, text)
    assert r.returncode == 78
    assert errors and "nesting deeper than 64 levels" in errors[0], r.stderr
    assert errors[0].startswith(f"{cfg}:1:"), errors[0]
    column = int(errors[0].split(":")[2])
    assert column <= 8 + 65 + 1, errors[0]


def test_unwritable_output_directory_is_an_error(daemon, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    cfg, r, errors = validate(daemon, tmp_path, base(tmp_path, sink_dir=blocker / "out"))
    assert r.returncode == 78
    assert any("option directory" in e and "a-file" in e for e in errors), r.stderr


def test_bad_data_header_is_an_error(daemon, tmp_path):
    data = tmp_path / "wrong.csv.gz"
    with gzip.open(data, "wt") as f:
        f.write("id,time,magnitude\n1,0,10\n")
    cfg, r, errors = validate(daemon, tmp_path, base(tmp_path, data=data))
    assert r.returncode == 78
    assert any(f"{data}:1: expected the header \"cascade,t,m\"" in e for e in errors), r.stderr


def test_cr_only_data_is_an_error(daemon, tmp_path):
    data = tmp_path / "mac.csv"
    data.write_bytes(b"cascade,t,m\r1,0,10\r1,5,3\r")
    _, r, errors = validate(daemon, tmp_path, base(tmp_path, data=data))
    assert r.returncode == 78
    assert any("CR-only line ends" in e for e in errors), r.stderr


def test_utf16_data_is_an_error(daemon, tmp_path):
    data = tmp_path / "utf16.csv"
    data.write_bytes("cascade,t,m\n1,0,10\n".encode("utf-16"))
    _, r, errors = validate(daemon, tmp_path, base(tmp_path, data=data))
    assert r.returncode == 78
    assert any("UTF-16" in e for e in errors), r.stderr
    jsonl = tmp_path / "utf16.jsonl"
    jsonl.write_bytes('{"type": "tweet", "t": 0, "m": 1, "tweet_id": 1}\n'.encode("utf-16"))
    _, r, errors = validate(daemon, tmp_path, base(tmp_path, data=jsonl, source_type="jsonl"))
    assert r.returncode == 78
    assert any("UTF-16" in e for e in errors), r.stderr


def test_every_out_of_range_option_is_reported_at_once(daemon, tmp_path):
    # random_start_range 1e300 used to be accepted (every series collapsed onto t = 0); with two
    # more bad options in two stages, all three are reported in one run of `validate`.
    text = base(tmp_path, source_extra="    random_start_range: 1e300\n    max_cascades: 0\n")
    text = text.replace("    outputs: { sizes: sizes }\n", "    outputs: { sizes: sizes }\n    terminated: 0\n", 1)
    cfg, r, errors = validate(daemon, tmp_path, text)
    assert r.returncode == 78, r.stderr
    lines = text.splitlines()
    def at(needle):
        return next(i for i, l in enumerate(lines) if needle in l) + 1
    for needle, key in (("random_start_range: 1e300", "random_start_range"), ("max_cascades: 0", "max_cascades"),
                        ("terminated: 0", "terminated")):
        assert any(e.startswith(f"{cfg}:{at(needle)}:") and f"option `{key}`" in e and "out of its range" in e
                   for e in errors), (key, r.stderr)


def test_predictor_and_learner_modes_must_match(daemon, tmp_path):
    text = (ROOT / "etc" / "tweetoscope.yaml").read_text()
    text = text.replace("../data/sample.csv", str(SAMPLE)).replace("directory: ../out", f"directory: {tmp_path / 'out'}")
    text = text.replace("../data/models/", str(ROOT / "data" / "models") + "/")  # the shipped model (model_path)
    cfg, r, errors = validate(daemon, tmp_path, text)
    assert r.returncode == 0, r.stderr
    # The learner's mode changed alone: the predictor would ignore every model it receives.
    learner = text.index("type: learner")
    mode = text.index("mode: growth", learner)
    bad = text[:mode] + "mode: course" + text[mode + len("mode: growth"):]
    cfg, r, errors = validate(daemon, tmp_path, bad)
    assert r.returncode == 78, r.stderr
    assert any("input `models` reads stream \"models\" from stage \"learner\" whose `mode` is course" in e
               for e in errors), r.stderr
