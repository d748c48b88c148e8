"""Shared fixtures of the end-to-end tests: the release daemon and the data folders."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"

# Under CI (CI=true, as .ci/run sets it) nothing may be skipped: a test that cannot get its
# broker, its data or its privileges fails with the reason instead, so CI cannot go green
# without testing Kafka, crash safety, the shared data or root-only behaviour.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason):
    """Skips the current test outside CI; fails it with `reason` under CI=true."""
    if IN_CI:
        pytest.fail(f"CI=true: cannot run this test: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def daemon():
    """Path of the release build of tweetoscoped (scripts/test builds it first); $TWEETOSCOPED
    names another build."""
    if os.environ.get("TWEETOSCOPED"):
        return Path(os.environ["TWEETOSCOPED"])
    exe = ROOT / ".build" / "release" / "tweetoscoped"
    if not exe.exists():
        subprocess.run(["swift", "build", "-c", "release"], cwd=ROOT, check=True)
    return exe


def run(daemon, *args, timeout=600):
    """Runs the daemon with `args`; returns the CompletedProcess (text mode)."""
    return subprocess.run([str(daemon), *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def shared():
    if not SHARED.exists():
        unavailable(f"{SHARED} not found (the shared data must sit beside the clone)")
    return SHARED
