"""A short fuzzing pass (scripts/fuzz 10: 10 s per libFuzzer target) against the build of the
daemon under test: the wire-format JSON decoder, the replay CSV parsers (long and course formats)
and the configuration loader must survive arbitrary bytes without a crash, hang or memory blow-up,
and the hand-written wire codec must agree with Foundation's coders (the oracle) on every input.
The 60 s pass is `scripts/fuzz` itself."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, unavailable


def test_fuzz_targets_do_not_crash(daemon):
    if shutil.which("swiftc") is None:
        unavailable("swiftc is not on PATH")
    build = daemon.resolve().parent
    env = dict(os.environ, TWEETOSCOPE_BUILD=str(build))
    r = subprocess.run([str(ROOT / "scripts" / "fuzz"), "10"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    for target in ("wire", "replay_long", "replay_course", "config"):
        m = re.search(rf"^fuzz: {target}: (\d+) execs .* exit 0$", r.stdout, re.M)
        assert m, r.stdout
        assert int(m.group(1)) > 1000, f"{target} barely ran: {m.group(0)}"
    # Every wire input was decoded by both codecs; a disagreement would have stopped the run.
    m = re.search(r"^fuzz: wire: (\d+) inputs compared with Foundation, (\d+) disagreements$", r.stdout, re.M)
    assert m, r.stdout
    assert int(m.group(1)) > 1000 and int(m.group(2)) == 0, m.group(0)
