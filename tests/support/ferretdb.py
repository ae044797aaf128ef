"""Start a real MongoDB-wire server for tests: FerretDB v1.24 with its SQLite backend.

The server is a small Go program (``tests/ferretdb``) that embeds
``github.com/FerretDB/FerretDB/ferretdb``; ``tests/ferretdb/build.sh`` builds it once (it needs
only ``go``) and is a no-op while the binary is up to date.

Usage::

    with running_ferretdb(tmp_path) as url:
        client = pymongo.AsyncMongoClient(url)
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

FERRETDB_DIR = Path(__file__).resolve().parent.parent / "ferretdb"
"""The Go module that embeds FerretDB."""

BUILD_SCRIPT = FERRETDB_DIR / "build.sh"
"""Builds :data:`BINARY` if it is missing or older than its sources."""

BINARY = FERRETDB_DIR / "bin" / "ferretdb-test"
"""The built server binary."""

READY_PREFIX = "READY "
"""The server prints ``READY mongodb://HOST:PORT/`` on stdout once it accepts connections."""

START_TIMEOUT_S = 60.0
"""How long to wait for the READY line."""

STOP_TIMEOUT_S = 10.0
"""How long to wait after SIGTERM before killing the server."""

BUILD_TIMEOUT_S = 1200.0
"""A cold build compiles FerretDB and its dependencies (about 2-3 minutes on 2 cores)."""


def build_ferretdb() -> Path:
    """Build the FerretDB test binary if needed and return its path.

    Raises:
        RuntimeError: if the build fails; the message carries the build output.
    """
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        cwd=FERRETDB_DIR,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0 or not BINARY.is_file():
        raise RuntimeError(
            f"building FerretDB failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return BINARY


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """Wait for the READY line on the process's stdout and return the URL in it.

    Raises:
        RuntimeError: if the process exits, closes stdout, or does not become ready in time.
    """
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"FerretDB did not print READY within {timeout_s:.0f} s")
            if not sel.select(timeout=min(remaining, 0.5)):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:  # EOF: the process died
                break
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].strip()
    proc.wait(timeout=STOP_TIMEOUT_S)
    raise RuntimeError(f"FerretDB exited with code {proc.returncode} before it was ready")


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop the process: SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def running_ferretdb(tmp_dir: Path, *, log_level: str = "warn") -> Iterator[str]:
    """Run a fresh FerretDB (SQLite backend) for the duration of the ``with`` block.

    Builds the binary if needed, starts it on a free loopback port (the server binds port 0
    itself, so there is no race for the port) with a new SQLite directory under ``tmp_dir``,
    waits for it to be ready, and yields its MongoDB URL, e.g. ``mongodb://127.0.0.1:40123/``.
    On exit the server gets SIGTERM, and SIGKILL if it has not stopped after 10 s.

    Args:
        tmp_dir: a writable directory; the SQLite files go to a new subdirectory of it, and the
            server's stderr (its logs) to a ``.stderr.log`` file beside that subdirectory.
        log_level: FerretDB's log level: ``debug``, ``info``, ``warn`` or ``error``.

    Raises:
        RuntimeError: if the build fails, or the server dies or is not ready within 60 s
            (the message carries the server's stderr).
    """
    binary = build_ferretdb()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    sqlite_dir = Path(os.path.realpath(tmp_dir)) / f"ferretdb-{os.getpid()}-{time.monotonic_ns()}"
    sqlite_dir.mkdir()
    # stderr goes to a file, not a pipe: a chatty server must never block on a full pipe.
    stderr_path = sqlite_dir.with_name(sqlite_dir.name + ".stderr.log")
    with stderr_path.open("w+", encoding="utf-8") as stderr_file:
        proc = subprocess.Popen(
            [
                str(binary),
                "-listen-addr",
                "127.0.0.1:0",
                "-sqlite-dir",
                str(sqlite_dir),
                "-log-level",
                log_level,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
        )
        try:
            try:
                url = _wait_ready(proc, START_TIMEOUT_S)
            except RuntimeError as exc:
                stderr_file.seek(0)
                raise RuntimeError(f"{exc}\nstderr:\n{stderr_file.read()}") from None
            yield url
        finally:
            _stop(proc)
