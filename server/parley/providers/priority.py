"""The embedded models run at a lower CPU priority than the event loop, in processes of their own.

One Parley process serves every RPC on one asyncio event loop thread. The local model (llama.cpp)
and Whisper (CTranslate2) run beside it, and espeak-ng is a child process. When they all want the
cores (a voice message and a local reply while 50 streams run, on 2 cores: ``bench/``, the
``loop`` phase), the kernel shares the CPU between whatever is runnable, and the loop waits
behind the models for a time slice: every stream stalls at once (148 ms seen). Compute at a lower
priority still gets every core the loop leaves idle, but yields it when the loop wants it back.

The kernel weighs a thread's ``nice`` only against threads of its own scheduling group. Where
processes are grouped (Linux's ``sched_autogroup_enabled``: one group per session; or a cgroup
per service or container), threads of the Parley process, however low their priority, spend the
process's share of the CPU: on saturated cores the loop then waits behind other groups' work
(with the models' threads in the server process: 71-208 ms over four ``loop`` runs with autogroup
on, 18 ms in one with it off). So each model runs in a process of its own (the local model's
engine, Whisper's worker, espeak-ng), started in a session of its own, which
:func:`enter_background` gives a lower priority both as a group and as threads. A Python model
process is started as :func:`background_command` (``python -m parley.providers.priority MODULE``):
it lowers its priority before it imports ``MODULE``, whose imports (NumPy's, OpenBLAS's threads)
already start threads, then runs ``MODULE.main()``.

On Linux the priority (``nice``) belongs to each thread, and threads inherit their creator's:
a process lowers its main thread's before it loads a model, so the threads the model's library
starts (OpenMP, llama.cpp's pool) run at that priority too; a pool's worker threads lower their
own (:func:`lower_this_thread`, an executor ``initializer``). Raising a priority back needs
privileges; lowering it never does. Elsewhere (or where a call is refused) nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
import threading

__all__ = [
    "MODEL_NICE",
    "background_command",
    "enter_background",
    "lower_process",
    "lower_this_thread",
    "start_background",
    "stop_background",
]

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
    """Lower a child process's priority (espeak-ng, started with ``start_new_session``) by
    ``increment`` ``nice`` steps, as a process and as its session's autogroup; a no-op if it has
    already exited or a call is refused."""
    _lower(pid, increment)
    with contextlib.suppress(OSError):
        if os.getsid(pid) == pid:  # never the autogroup of a session it shares with this process
            _lower_autogroup(pid, increment)


def enter_background(increment: int = MODEL_NICE) -> None:
    """In a model's own process, before it loads the model: lower this process's priority by
    ``increment`` ``nice`` steps as an autogroup (where the kernel groups sessions and this
    process leads its own, ``start_new_session``) and as threads (the calling thread's, which
    the threads it starts afterwards inherit)."""
    if os.getsid(0) == os.getpid():
        _lower_autogroup(os.getpid(), increment)
    lower_this_thread(increment)


def background_command(module: str) -> list[str]:
    """The command that runs ``module``'s ``main()`` (its exit status) in a new Python process
    that first enters the background (:func:`enter_background`); start it with
    ``start_new_session=True`` so that its autogroup is its own."""
    return [sys.executable, "-m", "parley.providers.priority", module]


async def start_background(module: str) -> asyncio.subprocess.Process:
    """Start :func:`background_command` of ``module`` in a session of its own, its standard input
    and output piped to this process (a model process exits when its standard input closes)."""
    return await asyncio.create_subprocess_exec(
        *background_command(module),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


async def stop_background(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Stop a model process that exits when its standard input closes: close it, wait up to
    ``timeout_s`` seconds, then kill it (and reap it either way)."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _lower_autogroup(pid: int, increment: int) -> bool:
    """Raise the ``nice`` of process ``pid``'s autogroup (``/proc/PID/autogroup``, sched(7)) by
    ``increment`` (at most to 19); False where there are no autogroups or it is refused."""
    path = f"/proc/{pid}/autogroup"
    try:
        with open(path) as file:  # "/autogroup-42 nice 0"
            current = int(file.read().split()[-1])
        with open(path, "w") as file:
            file.write(f"{min(19, current + increment)}\n")
    except (OSError, ValueError, IndexError):
        return False
    return True


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


if __name__ == "__main__":  # background_command's process
    enter_background()
    sys.exit(importlib.import_module(sys.argv[1]).main())
