"""Field failures of issue 16 that lose or misreport data, end to end through the daemon:
(5) a truncated gzip source keeps what it read and the collector does not flush the cut cascades,
(6) a full disk (a file size limit here) leaves whole lines only and counters that match the disk,
(8) a run that processed nothing exits non-zero with a clear message.

Expected values come from independent readings of the files (Python's gzip/zlib, line counts of
what is on disk), never from the daemon's own output."""
import json
import re
import resource
import signal
import zlib

from conftest import ROOT, run

SAMPLE = ROOT / "data" / "sample.csv"


def stage_counter(stdout, stage, name):
    """A counter of `stage` on the summary's stage line (None when absent)."""
    line = next(l for l in stdout.splitlines() if l.split()[:1] == [stage])
    m = re.search(rf"(?<![\w.]){re.escape(name)}=(\d+)", line)
    return int(m.group(1)) if m else None


def replay_to_tweets(daemon, tmp_path):
    """The sample replayed into out/tweets.jsonl: a JSON-lines tweet file. Every cascade runs at
    once (max_cascades 25), so that cascades are open wherever the file is cut."""
    out = tmp_path / "tweets-out"
    cfg = tmp_path / "tweets.yaml"
    cfg.write_text(f"""
plugins: [replay, file]
progress_interval: 0
stages:
  source:
    type: replay
    path: {SAMPLE}
    sources: 1
    max_cascades: 25
    seed: 3
    outputs: {{ tweets: tweets }}
  sink:
    type: file
    inputs: {{ streams: [tweets] }}
    directory: {out}
""")
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    return out / "tweets.jsonl"


def collect(daemon, tmp_path, name, source_path):
    """jsonl source -> collector -> file sink; returns (CompletedProcess, {(cid, T_obs): n_tot})."""
    out = tmp_path / name
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"""
plugins: [replay, collector, file]
progress_interval: 0
stages:
  source:
    type: jsonl
    path: {source_path}
    outputs: {{ tweets: tweets }}
  collector:
    type: collector
    inputs: {{ tweets: tweets }}
    outputs: {{ sizes: sizes, series: series }}
  sink:
    type: file
    inputs: {{ streams: [sizes, series] }}
    directory: {out}
""")
    r = run(daemon, "run", "--config", cfg)
    sizes = {}
    for line in (out / "sizes.jsonl").read_text().splitlines():
        d = json.loads(line)
        sizes[(d["cid"], d["T_obs"])] = d["n_tot"]
    return r, sizes


def test_truncated_gzip_source_keeps_what_it_read_and_drops_cut_cascades(daemon, tmp_path):
    tweets = replay_to_tweets(daemon, tmp_path)
    full = tweets.read_bytes()
    packed = zlib.compressobj(6, zlib.DEFLATED, 31)   # gzip container
    gz = packed.compress(full) + packed.flush()
    cut = tmp_path / "tweets-cut.jsonl.gz"
    cut.write_bytes(gz[: len(gz) * 2 // 3])
    # Independently: the whole lines zlib can decompress from the cut file.
    readable = zlib.decompressobj(31).decompress(cut.read_bytes())
    whole = readable[: readable.rfind(b"\n") + 1].count(b"\n")
    assert 4096 < whole < full.count(b"\n")

    r_full, sizes_full = collect(daemon, tmp_path, "full", tweets)
    assert r_full.returncode == 0, r_full.stderr[-2000:]
    r, sizes = collect(daemon, tmp_path, "cut", cut)
    # The read error fails the run, naming the file.
    assert r.returncode != 0
    assert re.search(rf"stage source FAILED: cannot read {re.escape(str(cut))}", r.stdout), r.stdout[-2000:]
    # Every line read before the error was delivered.
    assert stage_counter(r.stdout, "source", "events") == whole
    assert stage_counter(r.stdout, "collector", "events") == whole
    # No cut cascade was flushed as if it had ended: every size written is the cascade's true size
    # (the one of the full file), and the cascades open at the cut were dropped and counted.
    assert sizes, "cascades that ended before the cut keep their sizes"
    wrong = {k: (n, sizes_full.get(k)) for k, n in sizes.items() if sizes_full.get(k) != n}
    assert not wrong, f"sizes of cut cascades flushed as complete: {list(wrong.items())[:5]}"
    assert stage_counter(r.stdout, "collector", "cascades_incomplete") > 0
    assert "open cascades dropped as incomplete" in r.stderr


def _limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        # As systemd would leave it: the default action of SIGXFSZ (the daemon must cope).
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    return apply


def test_full_disk_leaves_whole_lines_and_true_counters(daemon, tmp_path):
    """A file size limit (RLIMIT_FSIZE) fails writes with EFBIG past it, as a full disk fails them
    with ENOSPC: the same code path (a write(2) that stops part-way), and it needs no root."""
    import subprocess
    out = tmp_path / "out"
    cfg = tmp_path / "full.yaml"
    cfg.write_text(f"""
plugins: [replay, collector, file]
progress_interval: 0
stages:
  source:
    type: replay
    path: {SAMPLE}
    sources: 2
    outputs: {{ tweets: tweets }}
  collector:
    type: collector
    inputs: {{ tweets: tweets }}
    outputs: {{ sizes: sizes, series: series }}
  sink:
    type: file
    inputs: {{ streams: [tweets, sizes, series] }}
    directory: {out}
""")
    # Above the replay's scratch file (16 bytes per row: 0.9 MB for the sample's 55,320 rows), far
    # below the sink's tweets.jsonl (about 4.7 MB).
    limit = 1_500_000
    r = subprocess.run([str(daemon), "run", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=300, preexec_fn=_limit_file_size(limit))
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert re.search(r"stage sink FAILED: cannot write .*tweets\.jsonl: File too large; \d+ buffered lines written, \d+ lost",
                     r.stdout), r.stdout[-2000:]
    total_lost = 0
    for stream in ("tweets", "sizes", "series"):
        data = (out / f"{stream}.jsonl").read_bytes()
        assert len(data) <= limit
        # Whole lines only: no torn last line.
        assert data == b"" or data.endswith(b"\n"), f"{stream}: torn last line {data[-80:]!r}"
        for line in data.splitlines():
            json.loads(line)
        # The counters claim exactly the lines on disk.
        on_disk = data.count(b"\n")
        assert (stage_counter(r.stdout, "sink", f"lines.{stream}") or 0) == on_disk, stream
        total_lost += stage_counter(r.stdout, "sink", f"lines_lost.{stream}") or 0
    assert (out / "tweets.jsonl").stat().st_size > limit - 65536, "the limit was reached"
    assert stage_counter(r.stdout, "sink", "lines_lost.tweets") > 0
    assert re.search(rf"lines lost: not written to disk.* lines={total_lost}\b", r.stderr), r.stderr[-2000:]


def test_every_row_rejected_exits_non_zero(daemon, tmp_path):
    data = tmp_path / "empty-m.csv"
    data.write_text("cascade,t,m\n" + "".join(f"{c},{k},\n" for c in range(3) for k in range(4)))
    out = tmp_path / "out"
    cfg = tmp_path / "rejected.yaml"
    text = f"""
plugins: [replay, collector, file]
progress_interval: 0
stages:
  source:
    type: replay
    path: {data}
    outputs: {{ tweets: tweets }}
  collector:
    type: collector
    inputs: {{ tweets: tweets }}
    outputs: {{ sizes: sizes }}
  sink:
    type: file
    inputs: {{ streams: [sizes] }}
    directory: {out}
"""
    cfg.write_text(text)
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 1, r.stdout[-2000:]
    assert f"stage source FAILED: {data}: every one of the 12 records was rejected (wrong_type=12)" in r.stdout
    # The option allows it.
    cfg.write_text(text.replace("    outputs: { tweets: tweets }\n", "    outputs: { tweets: tweets }\n    allow_empty: true\n", 1))
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 0, r.stderr[-2000:]


def test_jsonl_every_line_rejected_exits_non_zero(daemon, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"type": "retweet", "t": 1}\nnot json\n')
    cfg = tmp_path / "rejected.yaml"
    cfg.write_text(f"""
plugins: [replay, file]
progress_interval: 0
stages:
  source:
    type: jsonl
    path: {data}
    outputs: {{ tweets: tweets }}
  sink:
    type: file
    inputs: {{ streams: [tweets] }}
    directory: {tmp_path / "out"}
""")
    r = run(daemon, "run", "--config", cfg)
    assert r.returncode == 1, r.stdout[-2000:]
    assert f"stage source FAILED: {data}: every one of the 2 records was rejected (invalid_json=1, missing_field=1)" in r.stdout
