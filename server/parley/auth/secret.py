"""The install secret: a signing key generated once per installation and kept in its data dir.

When ``PARLEY_JWT_SECRET`` is unset, tokens are signed with the key in ``{data_dir}/jwt-secret``:
generated on first start (64 random bytes, ``secrets.token_urlsafe(64)``: 86 URL-safe
characters), readable by its owner only (mode 0600), and read again on every later start, so
tokens survive restarts. No key is printed in the repository, so no two installs share one and
nobody can forge tokens for an install they cannot read the files of.

Two processes starting at once on the same data dir agree on one key: each writes its candidate
into a private temporary file and publishes it with ``os.link``, which fails when the name
exists; the loser reads the winner's (complete) file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

__all__ = ["MIN_KEY_BYTES", "SECRET_FILE_NAME", "SecretFileError", "install_secret"]

#: Name of the key file inside the data dir.
SECRET_FILE_NAME = "jwt-secret"
#: Least key material (bytes, after stripping surrounding whitespace) a key file must hold: the
#: output size of SHA-512, so the key is long enough for every HMAC algorithm (RFC 7518 §3.2).
MIN_KEY_BYTES = 64
#: Random bytes of a generated key (``secrets.token_urlsafe`` turns them into 86 characters).
_ENTROPY_BYTES = 64
#: How large a key file may be (bytes); anything larger is not a key file.
_MAX_FILE_BYTES = 64 * 1024


class SecretFileError(RuntimeError):
    """``{data_dir}/jwt-secret`` cannot be used: unsafe permissions, too short, not a regular
    file, not UTF-8, or not creatable. The message names the file and the fix."""


def install_secret(data_dir: Path) -> str:
    """The signing key of this install: the content of ``{data_dir}/jwt-secret`` (surrounding
    whitespace stripped), created first if absent.

    Args:
        data_dir: the install's data directory (``PARLEY_DATA_DIR``); created if missing.

    Returns:
        The key, a string of at least ``MIN_KEY_BYTES`` UTF-8 bytes (a generated one is 86
        URL-safe characters carrying 64 random bytes).

    Raises:
        SecretFileError: if the file is readable or writable by its group or others, holds less
            than ``MIN_KEY_BYTES`` bytes of key, is not a regular file or not UTF-8, or cannot be
            created.

    Blocking file IO: call it from a thread in async code (``asyncio.to_thread``).
    """
    path = data_dir / SECRET_FILE_NAME
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    _publish(path, secrets.token_urlsafe(_ENTROPY_BYTES) + "\n")
    return _read(path)  # ours, or the one a concurrent start published first


def _read(path: Path) -> str:
    """The key in ``path``, checked. Raises ``FileNotFoundError`` if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:  # unreadable, or a symbolic link (not followed)
        raise SecretFileError(
            f"cannot read {path} ({exc.strerror}); it must be a regular file readable by this user"
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(f"{path} is not a regular file; remove it to have a new key generated")
        if info.st_mode & 0o077:
            raise SecretFileError(
                f"{path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"anyone who reads it can forge tokens. Make it private with `chmod 600 {path}` "
                "(and consider replacing it: every token signed with it stops working)"
            )
        raw = b""
        while len(raw) <= _MAX_FILE_BYTES and (chunk := os.read(fd, _MAX_FILE_BYTES + 1 - len(raw))):
            raw += chunk
    finally:
        os.close(fd)
    if len(raw) > _MAX_FILE_BYTES:
        raise SecretFileError(f"{path} is larger than {_MAX_FILE_BYTES // 1024} KiB: not a key file")
    try:
        key = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"{path} is not UTF-8 text") from None
    if len(key.encode()) < MIN_KEY_BYTES:
        raise SecretFileError(
            f"{path} holds {len(key.encode())} bytes of key, fewer than {MIN_KEY_BYTES}; remove it "
            "to have a new key generated (tokens signed with the old one stop working), or set "
            "PARLEY_JWT_SECRET"
        )
    return key


def _publish(path: Path, content: str) -> None:
    """Make ``path`` hold ``content`` (mode 0600) unless it exists already; never a partial file.

    The content goes into a temporary file of the same directory (``O_CREAT | O_EXCL``, mode
    0600, fsynced), which is then hard-linked to ``path``: the link appears complete or not at
    all, and fails if another process published first (then its key stands).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SecretFileError(
            f"cannot create {path} ({exc.strerror}); make {path.parent} writable, or set PARLEY_JWT_SECRET"
        ) from exc
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # whatever the umask
            file.write(content.encode())
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    except OSError as exc:
        raise SecretFileError(
            f"cannot create {path} ({exc.strerror}); set PARLEY_JWT_SECRET instead"
        ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist the new directory entry (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
