"""Shared fixtures of the end-to-end tests: the release daemon and the data folders."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


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
        pytest.skip(f"{SHARED} not found")
    return SHARED
