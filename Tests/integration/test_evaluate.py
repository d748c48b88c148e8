"""`tweetoscoped evaluate` on real SEISMIC cascades: reproducible cross-validation, a train/test
split of disjoint halves with a duplicate reported, valid PNG plots, and the summary's figures
recomputed here from forecasts.csv (and the naive baseline from the training folds' rows)."""
import csv
import gzip
import json
import math
import struct

import pytest

from conftest import run, unavailable

N_CASCADES = 160           # a prefix of the shared set keeps the test short
WINDOWS = "600,3600"


def read_prefix(path, n):
    """The first `n` cascades of a `cascade,t,m` file, as (id, lines) in file order."""
    cascades = []
    with gzip.open(path, "rt") as f:
        header = f.readline()
        assert header.strip() == "cascade,t,m"
        current, lines = None, []
        for line in f:
            cid = line.split(",", 1)[0]
            if cid != current:
                if current is not None:
                    cascades.append((current, lines))
                    if len(cascades) == n:
                        return cascades
                current, lines = cid, []
            lines.append(line)
        if current is not None:
            cascades.append((current, lines))
    return cascades


def write(path, cascades):
    with open(path, "w") as f:
        f.write("cascade,t,m\n")
        for _, lines in cascades:
            f.writelines(lines)


@pytest.fixture(scope="module")
def cascades(request):
    from conftest import SHARED
    data = SHARED / "data" / "real" / "seismic.csv.gz"
    if not data.exists():
        unavailable(f"{data} not found (the shared data must sit beside the clone)")
    return read_prefix(data, N_CASCADES)


@pytest.fixture(scope="module")
def cv(daemon, cascades, tmp_path_factory):
    """Two identical cross-validation runs (3 folds) on the prefix; their report directories."""
    tmp = tmp_path_factory.mktemp("evaluate")
    data = tmp / "prefix.csv"
    write(data, cascades)
    results = []
    for name in ("first", "second"):
        r = run(daemon, "evaluate", "--train", data, "--report", tmp / name, "--windows", WINDOWS,
                "--folds", 3, "--seed", 11)
        assert r.returncode == 0, r.stderr[-3000:]
        results.append((tmp / name, r))
    return results


def rows_of(directory):
    with open(directory / "forecasts.csv", newline="") as f:
        return list(csv.DictReader(f))


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def test_cross_validation_is_reproducible(cv):
    (a, _), (b, _) = cv
    assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
    assert (a / "forecasts.csv").read_bytes() == (b / "forecasts.csv").read_bytes()


def test_summary_figures_match_forecasts_csv(cv):
    directory, r = cv[0]
    summary = json.loads((directory / "summary.json").read_text())
    rows = rows_of(directory)
    default = summary["default_mode"]
    assert set(summary["windows"]) == {"600", "3600"}
    for w, per_key in summary["windows"].items():
        assert {"default", default, "course", "none", "naive"} <= set(per_key)
        assert per_key["default"] == per_key[default]
        for key, fig in per_key.items():
            mode = default if key == "default" else key
            sel = [x for x in rows if x["T_obs"] == w and x["mode"] == mode]
            ares = [float(x["ARE"]) for x in sel]
            for x in sel:  # each ARE is the forecast's relative error against the true size
                f, n = float(x["forecast"]), int(x["n_tot"])
                assert float(x["ARE"]) == pytest.approx(abs(f - n) / n, rel=1e-9, abs=1e-12)
            assert fig["n"] == len(sel) > 0
            assert fig["median_are"] == pytest.approx(median(ares), rel=1e-12)
            assert fig["mean_are"] == pytest.approx(sum(ares) / len(ares), rel=1e-12)
            assert fig["within_20"] == pytest.approx(sum(a <= 0.2 for a in ares) / len(ares))
            assert fig["within_50"] == pytest.approx(sum(a <= 0.5 for a in ares) / len(ares))
            with_interval = [x for x in sel if x["lo"] and x["hi"]]
            if with_interval:
                inside = sum(float(x["lo"]) <= int(x["n_tot"]) <= float(x["hi"]) for x in with_interval)
                assert fig["coverage_80"] == pytest.approx(inside / len(with_interval))
            else:
                assert fig["coverage_80"] is None
    # Every forecast cascade is tested exactly once per window and mode (k-fold partition).
    for w in ("600", "3600"):
        ids = [x["cid"] for x in rows if x["T_obs"] == w and x["mode"] == default]
        assert len(ids) == len(set(ids))
    # The table on stdout carries the same medians.
    assert f"{summary['windows']['600'][default]['median_are']:.3f}" in r.stdout


def test_naive_baseline_is_the_training_folds_median_growth(cv):
    directory, _ = cv[0]
    rows = rows_of(directory)
    naive = [x for x in rows if x["mode"] == "naive"]
    assert naive
    for w in ("600", "3600"):
        growth = {x["cid"]: (int(x["fold"]), int(x["n_tot"]) / int(x["n_obs"]))
                  for x in naive if x["T_obs"] == w}
        for x in (x for x in naive if x["T_obs"] == w):
            fold = int(x["fold"])
            ratio = median([g for f, g in growth.values() if f != fold])
            assert float(x["forecast"]) == pytest.approx(int(x["n_obs"]) * ratio, rel=1e-12)


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND", f"{path} is truncated"
    return width, height


def test_plots_are_valid_images(cv):
    directory, _ = cv[0]
    for name in ("forecast_vs_truth.png", "are_cdf.png", "calibration.png"):
        width, height = png_size(directory / name)
        assert 400 <= width <= 4000 and 300 <= height <= 3000, (name, width, height)
    report = (directory / "report.md").read_text()
    assert "forecast_vs_truth.png" in report and "| 600 |" in report


def test_train_test_halves_and_a_duplicate(daemon, cascades, tmp_path):
    half = len(cascades) // 2
    a, b = cascades[:half], cascades[half:]
    write(tmp_path / "a.csv", a)
    write(tmp_path / "b.csv", b)
    r = run(daemon, "evaluate", "--train", tmp_path / "a.csv", "--test", tmp_path / "b.csv",
            "--report", tmp_path / "ab", "--windows", WINDOWS, "--no-plots")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "ab" / "summary.json").read_text())
    assert summary["validation"] == "train/test"
    assert summary["duplicates"] == {"count": 0, "cascades": []}
    tested = {x["cid"] for x in rows_of(tmp_path / "ab")}
    assert tested and tested <= {cid for cid, _ in b}
    assert not (tmp_path / "ab" / "are_cdf.png").exists()

    # The first cascade of B also in A: reported (counted and named) and left out of the test.
    dup = b[0][0]
    write(tmp_path / "a_dup.csv", a + [b[0]])
    r = run(daemon, "evaluate", "--train", tmp_path / "a_dup.csv", "--test", tmp_path / "b.csv",
            "--report", tmp_path / "dup", "--windows", WINDOWS, "--no-plots")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "dup" / "summary.json").read_text())
    assert summary["duplicates"] == {"count": 1, "cascades": [int(dup)]}
    assert dup in r.stderr and dup in r.stdout
    assert dup not in {x["cid"] for x in rows_of(tmp_path / "dup")}
    assert dup in (tmp_path / "dup" / "report.md").read_text()


def test_config_supplies_the_stage_options_from_anywhere(daemon, cascades, tmp_path):
    """`--config` reads the stages' options only: a copy of the shipped configuration in another
    directory, where its data file and its model_path do not resolve, is accepted and gives the
    forecasts of the original; the copy with the learner's `trees` changed gives others (so the
    options are read)."""
    from conftest import ROOT
    half = len(cascades) // 2
    write(tmp_path / "a.csv", cascades[:half])
    write(tmp_path / "b.csv", cascades[half:])
    shipped = ROOT / "etc" / "tweetoscope.yaml"
    text = shipped.read_text()
    assert "\n    trees: 100\n" in text and "../data/sample.csv" in text
    (tmp_path / "conf").mkdir()
    copy = tmp_path / "conf" / "tweetoscope.yaml"
    copy.write_text(text)
    fewer = tmp_path / "conf" / "fewer-trees.yaml"
    fewer.write_text(text.replace("\n    trees: 100\n", "\n    trees: 3\n"))
    rows = {}
    for name, config in (("shipped", shipped), ("copy", copy), ("fewer", fewer)):
        r = run(daemon, "evaluate", "--train", tmp_path / "a.csv", "--test", tmp_path / "b.csv", "--config", config,
                "--plugin-dir", daemon.parent, "--report", tmp_path / name, "--windows", WINDOWS, "--no-plots",
                "--modes", "growth")
        assert r.returncode == 0, (name, r.stderr[-3000:])
        rows[name] = sorted((x["cid"], x["T_obs"], x["mode"], x["forecast"]) for x in rows_of(tmp_path / name))
    assert rows["shipped"] and rows["copy"] == rows["shipped"]
    assert rows["fewer"] != rows["shipped"]


def write_course(rows_path, index_path, cascades):
    """The course's pair of files for `cascades`: `time,magnitude` rows and the 1-based inclusive
    `start_ind,end_ind` ranges of each cascade (its id is then its position in the index)."""
    start = 1
    with open(rows_path, "w") as rows, open(index_path, "w") as index:
        rows.write("time,magnitude\n")
        index.write("start_ind,end_ind\n")
        for _, lines in cascades:
            for line in lines:
                _, t, m = line.strip().split(",")
                rows.write(f"{t},{m}\n")
            index.write(f"{start},{start + len(lines) - 1}\n")
            start += len(lines)


def test_course_format_input_scores_as_the_long_format(daemon, cascades, tmp_path):
    """The same halves in the course's format (rows + index): the same figures as in the long
    format (ids differ, contents do not); a cascade in both sets is found by its content."""
    half = len(cascades) // 2
    a, b = cascades[:half], cascades[half:]
    write(tmp_path / "a.csv", a)
    write(tmp_path / "b.csv", b)
    write_course(tmp_path / "a_rows.csv", tmp_path / "a_index.csv", a)
    write_course(tmp_path / "b_rows.csv", tmp_path / "b_index.csv", b)
    common = ("--windows", WINDOWS, "--no-plots", "--modes", "growth,course")
    long_run = run(daemon, "evaluate", "--train", tmp_path / "a.csv", "--test", tmp_path / "b.csv",
                   "--report", tmp_path / "long", *common)
    assert long_run.returncode == 0, long_run.stderr[-3000:]
    course_run = run(daemon, "evaluate", "--train", tmp_path / "a_rows.csv", "--train-index", tmp_path / "a_index.csv",
                     "--test", tmp_path / "b_rows.csv", "--test-index", tmp_path / "b_index.csv",
                     "--report", tmp_path / "course", *common)
    assert course_run.returncode == 0, course_run.stderr[-3000:]
    long_summary = json.loads((tmp_path / "long" / "summary.json").read_text())
    course_summary = json.loads((tmp_path / "course" / "summary.json").read_text())
    assert course_summary["duplicates"] == {"count": 0, "cascades": []}
    assert course_summary["windows"] == long_summary["windows"]
    # Rows pair up through the order of the test file: cascade k of b is index row k.
    by_position = {cid: k for k, (cid, _) in enumerate(b)}
    long_rows = sorted((by_position[x["cid"]], x["T_obs"], x["mode"], x["forecast"], x["n_tot"])
                       for x in rows_of(tmp_path / "long"))
    course_rows = sorted((int(x["cid"]), x["T_obs"], x["mode"], x["forecast"], x["n_tot"])
                         for x in rows_of(tmp_path / "course"))
    assert long_rows and course_rows == long_rows

    # b's first cascade appended to the training rows: found by content although its id (its
    # index row in each file) differs, reported and left out of the test.
    write_course(tmp_path / "a_dup_rows.csv", tmp_path / "a_dup_index.csv", a + [b[0]])
    r = run(daemon, "evaluate", "--train", tmp_path / "a_dup_rows.csv", "--train-index", tmp_path / "a_dup_index.csv",
            "--test", tmp_path / "b_rows.csv", "--test-index", tmp_path / "b_index.csv",
            "--report", tmp_path / "dup", *common)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "dup" / "summary.json").read_text())
    assert summary["duplicates"] == {"count": 1, "cascades": [0]}


def test_given_models_alone_score_their_modes_and_warn_of_missing_windows(daemon, tmp_path):
    """--model without --train: its modes (and `none`) are scored, nothing is trained, and a
    window the file has no model for is warned about (the shipped model has 600 and 1200 s)."""
    from conftest import ROOT
    models = ROOT / "data" / "models" / "growth.jsonl"
    windows = {json.loads(line)["T_obs"] for line in models.read_text().splitlines() if line.strip()}
    assert windows == {600, 1200}
    r = run(daemon, "evaluate", "--model", models, "--test", ROOT / "data" / "sample.csv",
            "--windows", "600,3600", "--terminated", 1800, "--report", tmp_path / "m", "--no-plots")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no growth model for T_obs = 3600 s" in r.stderr
    assert "nothing to train" in r.stderr
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert set(summary["windows"]["600"]) == {"default", "growth", "none"}
    assert summary["windows"]["600"]["growth"]["n"] == 25
    assert "nothing trained" in (tmp_path / "m" / "report.md").read_text()
    # A mode without a model and without --train is an error before any data is read.
    r = run(daemon, "evaluate", "--model", models, "--test", tmp_path / "absent.csv", "--modes", "course",
            "--report", tmp_path / "c", "--no-plots")
    assert r.returncode == 1 and "no model of the evaluated modes (course)" in r.stderr, r.stderr[-2000:]


def test_bad_input_is_an_error_naming_the_file(daemon, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,mag\n1,2\n")
    r = run(daemon, "evaluate", "--train", bad, "--report", tmp_path / "out", "--no-plots")
    assert r.returncode != 0
    assert str(bad) in r.stderr and "cascade,t,m" in r.stderr


def test_failed_plots_exit_3_after_writing_the_figures(daemon, cascades, tmp_path):
    data = tmp_path / "prefix.csv"
    write(data, cascades[:60])
    import os
    import subprocess
    env = dict(os.environ, TWEETOSCOPE_PLOT_SCRIPT=str(tmp_path / "no-such-plot-script"))
    r = subprocess.run([str(daemon), "evaluate", "--train", str(data), "--report", str(tmp_path / "out"),
                        "--windows", "600", "--folds", "2"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 3, r.stderr[-3000:]
    assert "plots not made" in r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["windows"]["600"]["default"]["n"] > 0
    assert (tmp_path / "out" / "forecasts.csv").read_text().startswith("cid,T_obs,mode,")
    assert "Plots not made" in (tmp_path / "out" / "report.md").read_text()


GOALS = {"600": 0.18, "1200": 0.16, "3600": 0.14}   # issue 13 item 2: CV median ARE, full size


def test_default_meets_the_accuracy_goals_on_the_shared_set(daemon, tmp_path):
    """Issue 13 item 2, on all 554 shared SEISMIC cascades (5-fold CV, seed 0): with the full size
    as truth the default's median ARE is at most 0.18 / 0.16 / 0.14 at 600 / 1200 / 3600 s and its
    mean ARE at most 0.25; with the course's truth (terminated 1800 s) its median ARE is at least
    15 % below `course` mode's at every window."""
    from conftest import SHARED
    data = SHARED / "data" / "real" / "seismic.csv.gz"
    if not data.exists():
        unavailable(f"{data} not found (the shared data must sit beside the clone)")
    summaries = {}
    for terminated in (604800, 1800):
        out = tmp_path / str(terminated)
        r = run(daemon, "evaluate", "--train", data, "--report", out, "--terminated", terminated, "--no-plots")
        assert r.returncode == 0, r.stderr[-3000:]
        summaries[terminated] = json.loads((out / "summary.json").read_text())["windows"]
    full, course_truth = summaries[604800], summaries[1800]
    assert sorted(full, key=int) == ["600", "1200", "3600"]
    for w, goal in GOALS.items():
        d = full[w]["default"]
        assert d["n"] >= 530
        assert d["median_are"] <= goal, f"T_obs={w}: median ARE {d['median_are']:.3f} > {goal}"
        assert d["mean_are"] <= 0.25, f"T_obs={w}: mean ARE {d['mean_are']:.3f} > 0.25"
        d, c = course_truth[w]["default"], course_truth[w]["course"]
        assert d["median_are"] <= 0.85 * c["median_are"], \
            f"T_obs={w}, terminated 1800: default {d['median_are']:.3f} not 15 % below course {c['median_are']:.3f}"
