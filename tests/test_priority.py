"""The embedded models' threads run below the event loop's priority (``parley.providers.priority``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from parley.providers.priority import MODEL_NICE, lower_process, lower_this_thread

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
