"""Where the ``parley`` command keeps logins: ``credentials.json`` in the user's config directory.

The directory is platformdirs' ``user_config_dir("parley")``: ``$XDG_CONFIG_HOME/parley`` or
``~/.config/parley`` on Linux, ``~/Library/Application Support/parley`` on macOS,
``%LOCALAPPDATA%\\parley`` on Windows; ``PARLEY_CONFIG_DIR`` overrides it. The file holds one login
per server address and the address of the last login (used when neither ``--server`` nor
``PARLEY_SERVER`` names one)::

    {"default_server": "localhost:50051",
     "servers": {"localhost:50051": {"username": "ada", "access_token": "…", "refresh_token": "…",
                                     "expires_in": 900, "refresh_expires_in": 2592000}}}

It is written atomically (a temporary file renamed over it) with mode 0600, in a 0700 directory:
the refresh token is a 30-day credential.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from parley_client.client import Tokens

__all__ = ["CredentialStore", "Login", "default_path"]

_FILE_MODE = 0o600
_DIR_MODE = 0o700


def default_path() -> Path:
    """``credentials.json`` in ``$PARLEY_CONFIG_DIR`` or the platform's user config dir."""
    override = os.environ.get("PARLEY_CONFIG_DIR")
    base = Path(override) if override else Path(platformdirs.user_config_dir("parley", appauthor=False))
    return base / "credentials.json"


@dataclass(frozen=True, slots=True)
class Login:
    """A saved login: who, and the current token pair."""

    username: str
    tokens: Tokens


class CredentialStore:
    """Logins by server address, in one JSON file (see the module docstring)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"servers": {}}
        except (OSError, ValueError) as exc:
            raise SystemExit(f"parley: cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("servers"), dict):
            return {"servers": {}}
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".credentials-", suffix=".json", dir=self.path.parent)
        try:
            os.fchmod(fd, _FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def default_server(self) -> str | None:
        """The server of the most recent login, if any."""
        server = self._read().get("default_server")
        return server if isinstance(server, str) and server else None

    def get(self, server: str) -> Login | None:
        """The saved login for ``server``, if any."""
        entry = self._read()["servers"].get(server)
        if not isinstance(entry, dict):
            return None
        try:
            tokens = Tokens(
                access_token=str(entry["access_token"]),
                refresh_token=str(entry["refresh_token"]),
                expires_in=int(entry.get("expires_in", 0)),
                refresh_expires_in=int(entry.get("refresh_expires_in", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return Login(str(entry.get("username", "")), tokens)

    def put(self, server: str, login: Login) -> None:
        """Save ``login`` for ``server`` and make ``server`` the default."""
        data = self._read()
        data["servers"][server] = {
            "username": login.username,
            "access_token": login.tokens.access_token,
            "refresh_token": login.tokens.refresh_token,
            "expires_in": login.tokens.expires_in,
            "refresh_expires_in": login.tokens.refresh_expires_in,
        }
        data["default_server"] = server
        self._write(data)

    def update_tokens(self, server: str, tokens: Tokens | None) -> None:
        """Replace the tokens of ``server``'s login (after a refresh), or forget it (``None``)."""
        if tokens is None:
            self.remove(server)
            return
        login = self.get(server)
        self.put(server, Login(login.username if login else "", tokens))

    def remove(self, server: str) -> bool:
        """Forget ``server``'s login; whether there was one."""
        data = self._read()
        if data["servers"].pop(server, None) is None:
            return False
        if data.get("default_server") == server:
            data.pop("default_server", None)
        self._write(data)
        return True
