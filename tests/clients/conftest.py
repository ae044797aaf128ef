"""Fixtures for the client tests: the SDK against the suite's live server, the CLI in a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from parley_client import ParleyClient, Tokens

from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


@dataclass
class LoggedIn:
    """A fresh user, logged in with ``client``; ``saved`` records every token pair it was given."""

    client: ParleyClient
    username: str
    saved: list[Tokens | None]


@pytest.fixture
async def logged_in(server: ServerProcess) -> AsyncIterator[LoggedIn]:
    saved: list[Tokens | None] = []
    async with ParleyClient(server.target, on_tokens=saved.append) as client:
        username = f"sdk-{os.urandom(5).hex()}"
        await client.register(username, PASSWORD)
        await client.login(username, PASSWORD)
        saved.clear()
        yield LoggedIn(client, username, saved)


@pytest.fixture
def cli_env(server: ServerProcess, tmp_path: Path) -> dict[str, str]:
    """Environment for ``parley`` processes: the live server, a private config directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(
        PARLEY_SERVER=server.target,
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        TERM="dumb",
        PYTHONUNBUFFERED="1",
    )
    return env


def parley(
    env: dict[str, str], *args: str, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m parley_client ARGS`` (the ``parley`` command) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "parley_client", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def registered(cli_env: dict[str, str]) -> str:
    """A user registered and logged in through the CLI; returns the username."""
    username = f"cli-{os.urandom(5).hex()}"
    for command in ("register", "login"):
        done = parley(cli_env, command, "--username", username, "--password-stdin", stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr
    return username


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")


class Terminal:
    """A child process on a pseudo-terminal (what a person's terminal gives ``parley chat``)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        with warnings.catch_warnings():
            # Python 3.12+ warns that fork() in a multi-threaded process (gRPC's threads) may
            # deadlock; the child only calls exec.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid, fd = pty.fork()
        if pid == 0:  # the child: becomes the program, on the terminal's slave side
            try:
                # As a terminal starts a program: SIGINT at its default and nothing blocked, whatever
                # the test process inherited or set (an ignored SIGINT survives exec; Ctrl-C would
                # then do nothing).
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.output = ""  # everything read so far, escape sequences removed, \r\n as \n
        self.mark = 0  # where the last expect() match ended
        self.status: int | None = None

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def sendline(self, text: str) -> None:
        self.send(text + "\r")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.output += _ANSI.sub("", data.decode(errors="replace")).replace("\r\n", "\n").replace("\r", "")
        return True

    def expect(self, text: str, timeout: float = 120) -> str:
        """Wait until ``text`` appears after the previous match; returns what came before it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.output.find(text, self.mark)
            if found >= 0:
                before = self.output[self.mark : found]
                self.mark = found + len(text)
                return before
            if time.monotonic() > deadline or (not self._read(0.2) and self.output.find(text, self.mark) < 0):
                raise AssertionError(f"did not see {text!r}; terminal so far:\n{self.output}")

    def wait(self, timeout: float = 30) -> int:
        """Wait for the child to exit (reading its output meanwhile); its exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
        raise AssertionError(f"the program did not exit; terminal:\n{self.output}")

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except ProcessLookupError:
                pass
        os.close(self.fd)


@pytest.fixture
def terminal() -> Iterator[type[Terminal]]:
    """``terminal(argv, env)`` opens a :class:`Terminal`; all are closed at the end."""
    opened: list[Terminal] = []

    class _Terminal(Terminal):
        def __init__(self, argv: list[str], env: dict[str, str]) -> None:
            super().__init__(argv, env)
            opened.append(self)

    yield _Terminal
    for t in opened:
        t.close()
