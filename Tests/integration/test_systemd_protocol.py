"""The daemon's side of the systemd protocols, without systemd: sd_notify messages on a
NOTIFY_SOCKET the test binds, and journal entries on a journal socket the test binds (root only:
the daemon sees it at the journal's path through a private mount namespace). The real systemd is exercised by scripts/system-test."""
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import unavailable
from test_signals import config

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def receive_all(sock, seconds):
    """Datagrams received within `seconds`."""
    out, deadline = [], time.time() + seconds
    while time.time() < deadline:
        sock.settimeout(max(0.01, deadline - time.time()))
        try:
            out.append(sock.recv(1 << 20).decode())
        except socket.timeout:
            break
    return out


def test_notify_ready_status_watchdog_reload_stopping(daemon, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
    cfg = config(tmp_path, acceleration=20000)
    proc = subprocess.Popen([str(daemon), "run", "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = receive_all(sock, 6)
        proc.send_signal(signal.SIGHUP)
        after_reload = receive_all(sock, 2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        last = receive_all(sock, 0.5)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert first[0].startswith("READY=1\nSTATUS=running 6 stages"), first
    assert any(m == "WATCHDOG=1" for m in first), first
    status = [m for m in first if m.startswith("STATUS=") and "tweets/s" in m]
    assert status and "open cascades" in status[0], first
    reload = [m for m in after_reload if m.startswith("RELOADING=1\nMONOTONIC_USEC=")]
    assert reload, after_reload
    assert any(m.startswith("READY=1") for m in after_reload[after_reload.index(reload[0]):]), after_reload
    assert any(m.startswith("STOPPING=1") for m in last), last


def test_journal_fields_when_stderr_is_the_journal(daemon, tmp_path):
    """The daemon logs to the journal socket when stderr is the journal. The socket is bound in
    a scratch directory, and the daemon runs in a private mount namespace (unshare, root only)
    where that directory is bind-mounted on /run/systemd/journal, so a running journald is not
    in the way."""
    if os.geteuid() != 0:
        unavailable("needs root (a private mount namespace for the journal socket)")
    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed")
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(journal_dir / "socket"))
    try:
        stderr_path = tmp_path / "stderr"
        # Read the socket while the daemon runs: a full datagram queue would block its logging.
        entries, done = [], threading.Event()

        def read():
            sock.settimeout(0.2)
            while True:
                try:
                    entries.append(sock.recv(1 << 20).decode())
                except socket.timeout:
                    if done.is_set():
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        with open(stderr_path, "w") as stderr:
            st = os.fstat(stderr.fileno())
            env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
            script = ('mkdir -p "$(dirname "$1")" && mount --bind "$2" "$(dirname "$1")" && shift 2 && exec "$@"')
            r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                                JOURNAL_SOCKET, str(journal_dir),
                                str(daemon), "run", "--config", str(config(tmp_path, acceleration=0))],
                               env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=120)
        done.set()
        reader.join()
    finally:
        sock.close()
    assert r.returncode == 0
    assert stderr_path.read_text() == ""       # everything went to the journal
    parsed = [dict(line.split("=", 1) for line in e.splitlines() if "=" in line) for e in entries]
    assert all(p.get("SYSLOG_IDENTIFIER") == "tweetoscoped" for p in parsed)
    collector = [p for p in parsed if p.get("STAGE") == "collector"]
    assert collector, parsed[:3]
    late = [p for p in collector if p.get("REASON") == "late_event"]
    assert late and late[0]["PRIORITY"] == "4" and "CASCADE" in late[0]
    assert any(p.get("STAGE") == "daemon" and p.get("PRIORITY") == "6" for p in parsed)
