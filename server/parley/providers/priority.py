"""The embedded models' threads run at a lower CPU priority than the event loop.

One Parley process serves every RPC on one asyncio event loop thread, and runs the local model
(llama.cpp's threads), Whisper (CTranslate2's) and espeak-ng beside it. When they all want the
cores (a voice message and a local reply while 50 streams run, on 2 cores: ``bench/``, the
``loop`` phase), the kernel shares the CPU equally between runnable threads, and the loop waits
behind the models for a time slice: every stream stalls at once (148 ms seen). Compute threads
at a lower priority still get every core the loop leaves idle, but yield it to the loop when it
wants it back.

The kernel weighs ``nice`` only between threads of one scheduling group. Where processes are
grouped (Linux's ``sched_autogroup_enabled``, one group per session; or a cgroup per service or
container), the models' threads still spend the group's share of the CPU: on saturated cores the
loop then waits behind other groups' processes, however low the models' priority (the ``loop``
benchmark phase, 50 streams with speech and the local model on 2 cores, in one sitting: 71-208 ms
over four runs with autogroup on, 18 ms in one run with it off).

On Linux the priority (``nice``) belongs to each thread, and threads inherit their creator's:
a pool's worker threads lower their own (:func:`lower_this_thread`, an executor
``initializer``) before they load or call a model, so the threads the model's library starts
from them (OpenMP, llama.cpp's pool) run at that priority too. Raising a priority back needs
privileges; lowering it never does. Elsewhere (or where the call is refused) nothing changes.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["MODEL_NICE", "lower_process", "lower_this_thread"]

log = logging.getLogger(__name__)

#: How much lower (in ``nice`` steps, of 0-19) the models' threads run than the rest of the
#: process. At 10 a thread gets about a tenth of the CPU time of a normal one it competes with
#: (the kernel weighs each step by about 1.25x), and all of an idle core.
MODEL_NICE = 10


def lower_this_thread(increment: int = MODEL_NICE) -> None:
    """Lower the calling OS thread's priority by ``increment`` ``nice`` steps (at most to 19);
    the threads it starts afterwards inherit it. A no-op where per-thread priorities are not
    available (only Linux has them) or the call is refused."""
    tid = threading.get_native_id()
    if not _lower(tid, increment):
        log.debug("could not lower the priority of thread %d", tid)


def lower_process(pid: int, increment: int = MODEL_NICE) -> None:
    """Lower a child process's priority (espeak-ng) by ``increment`` ``nice`` steps; a no-op if it
    has already exited or the call is refused."""
    _lower(pid, increment)


def _lower(who: int, increment: int) -> bool:
    """``setpriority`` of thread or process ``who`` to its nice value + ``increment`` (at most 19);
    False where it is not available or refused."""
    if not hasattr(os, "setpriority"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, who, min(19, os.getpriority(os.PRIO_PROCESS, who) + increment))
    except OSError:
        return False
    return True
