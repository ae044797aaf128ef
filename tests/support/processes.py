"""Checks on the embedded models' own processes (the local model's engine, Whisper's worker):
that one runs below the test process's priority in a session of its own, and whether it runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from parley.providers.priority import MODEL_NICE

__all__ = ["alive", "assert_exits_with_its_server", "assert_in_background", "autogroup_nice"]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by init, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def autogroup_nice(pid: int | str) -> int | None:
    """The nice of ``pid``'s scheduler autogroup (``/proc/PID/autogroup``: "/autogroup-42 nice 0");
    None where the kernel has none: no such file, or an empty one (CI's container, autogroup off)."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def assert_in_background(pid: int) -> None:
    """``pid`` leads a session of its own (its own scheduling group where the kernel groups
    sessions), has threads besides its main one, and every one of them, like its autogroup
    (where there are autogroups), runs ``MODEL_NICE`` below this thread."""
    assert os.getsid(pid) == pid != os.getsid(0)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    threads = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    assert len(threads) > 2  # the model library's threads, not only the main one
    for tid in threads:
        assert os.getpriority(os.PRIO_PROCESS, tid) == min(19, mine + MODEL_NICE), f"thread {tid}"
    ours = autogroup_nice("self")
    if ours is not None:
        assert autogroup_nice(pid) == min(19, ours + MODEL_NICE)


def assert_exits_with_its_server(script: str, *args: str, timeout_s: float = 15.0) -> None:
    """Run ``script`` (Python source: a server that starts a model process and prints its pid),
    SIGKILL it, which leaves it no time to stop the model process, and assert that the model
    process exits by itself within ``timeout_s`` seconds (it sees its standard input close)."""
    with subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            pid = int(server.stdout.readline())
            assert alive(pid)
        finally:
            server.kill()
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
