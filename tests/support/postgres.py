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

__all__ = ["PostgresCluster", "create_database", "running_postgres"]


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


class PostgresCluster:
    """A cluster in a temporary directory on a free loopback port, which can be stopped and
    started again (to test what Parley does while its database is down)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="parley-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()
        self.url = f"postgresql+asyncpg://parley@127.0.0.1:{self.port}/parley"

    def create(self) -> PostgresCluster:
        """initdb, start, and create database ``parley``."""
        subprocess.run(
            _as_owner(
                [
                    _bin("initdb"),
                    "-D",
                    str(self.data),
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
        self.start()
        deadline = time.monotonic() + 30
        while True:
            result = subprocess.run(
                [_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "parley", "parley"],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {result.stderr}")
            time.sleep(0.3)

    def start(self) -> None:
        log = self.root / "postgres.log"
        options = f"-p {self.port} -k {self.root} -h 127.0.0.1 -c fsync=off -c full_page_writes=off"
        argv = [_bin("pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "-o", options]
        subprocess.run(
            _as_owner([*argv, "start"]),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_owner([_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            check=False,
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Start a cluster on a free loopback port; yield ``postgresql+asyncpg://...`` to database ``parley``."""
    cluster = PostgresCluster()
    try:
        yield cluster.create().url
    finally:
        cluster.remove()


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
