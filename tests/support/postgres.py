"""A throwaway PostgreSQL cluster for one test run (Debian's ``postgresql`` package).

``initdb`` refuses to run as root, so as root the cluster is created and run as the
``postgres`` system user (created by the Debian package) through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.net import free_port

__all__ = ["running_postgres"]


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package")
    return path


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Start a cluster on a free loopback port; yield ``postgresql+asyncpg://...`` to database ``parley``."""
    root = Path(tempfile.mkdtemp(prefix="parley-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_owner(
            [
                _bin("initdb"),
                "-D",
                str(data),
                "-U",
                "parley",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    log = root / "postgres.log"
    subprocess.run(
        _as_owner(
            [
                _bin("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off -c full_page_writes=off",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            result = subprocess.run(
                [_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "parley", "parley"],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {result.stderr}")
            time.sleep(0.3)
        yield f"postgresql+asyncpg://parley@127.0.0.1:{port}/parley"
    finally:
        subprocess.run(
            _as_owner([_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """A new, empty database ``name`` on the cluster of ``url`` (from :func:`running_postgres`);
    returns its URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    subprocess.run(
        [_bin("createdb"), "-h", str(parsed.host), "-p", str(parsed.port), "-U", str(parsed.username), name],
        check=True,
        capture_output=True,
        text=True,
    )
    return parsed.set(database=name).render_as_string(hide_password=False)
