"""The collector on the 554 real SEISMIC cascades (2.24 M events), checked against an independent
count computed straight from the CSV."""
import json
import re

from conftest import run
from independent import expected_output, read_cascades
from pipeline import collector, file_sink, replay, write_config

WINDOWS, TERMINATED, MIN_SIZE = (600, 1200), 1800, 10


def test_seismic_series_and_sizes_match_independent_count(daemon, shared, tmp_path):
    data = shared / "data" / "real" / "seismic.csv.gz"
    cfg = write_config(tmp_path / "seismic.yaml", ["replay", "collector", "file"],
                       replay(data, sources=4, max_cascades=10, seed=7),
                       collector(WINDOWS, TERMINATED, MIN_SIZE),
                       file_sink(tmp_path / "out", ["cascade_series", "cascade_properties"]))
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 0, r.stderr[-3000:]

    cascades = read_cascades(data)
    assert len(cascades) == 554 and sum(map(len, cascades.values())) == 2_240_889
    want_series, want_sizes, want_dropped = expected_output(cascades, WINDOWS, TERMINATED, MIN_SIZE)

    got_series = {}
    for line in (tmp_path / "out" / "cascade_series.jsonl").read_text().splitlines():
        s = json.loads(line)
        assert s["type"] == "serie"
        key = (s["cid"], s["T_obs"])
        assert key not in got_series, f"duplicate series {key}"
        got_series[key] = s["tweets"]
    got_sizes = {}
    for line in (tmp_path / "out" / "cascade_properties.jsonl").read_text().splitlines():
        s = json.loads(line)
        assert s["type"] == "size"
        key = (s["cid"], s["T_obs"])
        assert key not in got_sizes, f"duplicate size {key}"
        got_sizes[key] = s["n_tot"]

    assert set(got_series) == set(want_series)
    for key, events in want_series.items():
        assert got_series[key] == events, f"series {key} differs"
    assert got_sizes == want_sizes
    # Every event is either collected or counted as late.
    late = re.search(r"late_event=(\d+)", r.stdout)
    assert (int(late.group(1)) if late else 0) == want_dropped
    assert int(re.search(r"(\d+) events in", r.stdout).group(1)) == 2_240_889
