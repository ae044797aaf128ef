"""The embedded models' threads run below the event loop's priority (``parley.providers.priority``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from parley.providers.priority import MODEL_NICE, background_command, lower_process, lower_this_thread

from tests.support.processes import autogroup_nice

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_pool_thread_and_the_threads_it_starts_run_lower_and_the_caller_does_not() -> None:
    mine = _nice()
    seen: dict[str, int] = {}

    def work() -> None:
        seen["worker"] = _nice()
        child = threading.Thread(target=lambda: seen.__setitem__("child", _nice()))
        child.start()
        child.join()

    with ThreadPoolExecutor(1, initializer=lower_this_thread) as pool:
        pool.submit(work).result()
    assert seen == {"worker": min(19, mine + MODEL_NICE), "child": min(19, mine + MODEL_NICE)}
    assert _nice() == mine  # the event loop's thread keeps its priority


def test_a_child_process_runs_lower() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        before = os.getpriority(os.PRIO_PROCESS, child.pid)
        lower_process(child.pid)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, before + MODEL_NICE)
    finally:
        child.communicate(b"")


def test_a_child_in_a_session_of_its_own_runs_lower_as_a_group_and_one_in_ours_leaves_ours_alone() -> None:
    ours = autogroup_nice("self")
    if ours is None:
        pytest.skip("the kernel has no autogroups")
    argv = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    own = subprocess.Popen(argv, stdin=subprocess.PIPE, start_new_session=True)
    shared = subprocess.Popen(argv, stdin=subprocess.PIPE)
    try:
        before = autogroup_nice(own.pid)
        assert before is not None
        lower_process(own.pid)
        lower_process(shared.pid)
        assert autogroup_nice(own.pid) == min(19, before + MODEL_NICE)
        assert autogroup_nice("self") == ours  # the shared session's group: not touched
    finally:
        own.communicate(b"")
        shared.communicate(b"")


def test_a_background_command_lowers_its_priority_before_it_imports_its_module(tmp_path: Path) -> None:
    """The module's own import (where NumPy starts OpenBLAS's threads) already runs lower."""
    (tmp_path / "probe_module.py").write_text(
        "import os, threading\n"
        "AT_IMPORT = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())\n"
        "def main():\n"
        "    print(AT_IMPORT, os.getsid(0) == os.getpid(), flush=True)\n"
        "    return 3\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        background_command("probe_module"),
        check=False,
        capture_output=True,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert done.returncode == 3  # main()'s
    nice, own_session = done.stdout.split()
    assert int(nice) == min(19, _nice() + MODEL_NICE)
    assert own_session == "True"
