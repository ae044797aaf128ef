"""The session archive: where archived sessions' export files live (``PARLEY_ARCHIVE_URL``).

- ``file:///path`` (the embedded default: ``{data_dir}/archive``): one file per object under the
  directory, written to a temporary name and renamed, so a reader never sees half a file.
- ``s3://bucket/prefix``: S3 through boto3. Endpoint, region and credentials come from the
  standard AWS chain (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles), so any
  S3-compatible store (MinIO, Ceph, moto) works. boto3 is synchronous: calls run in a thread.

Keys are ``sessions/{session_id}/{token}.jsonl`` (a new token per archiving) below the
directory or prefix. Every failure is ``Unavailable`` with reason ``ARCHIVE_UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from parley.domain.errors import Reason, Unavailable

__all__ = ["ArchiveStore", "DirectoryArchive", "S3Archive", "archive_from_url"]


def _unavailable(what: str, exc: BaseException) -> Unavailable:
    return Unavailable(
        f"session archive: {what} failed ({type(exc).__name__})", reason=Reason.ARCHIVE_UNAVAILABLE
    )


class ArchiveStore(Protocol):
    """Whole objects by key."""

    def key_for(self, session_id: str, token: str) -> str:
        """The object key of one archiving of a session (``token``: unique per archiving, so
        concurrent calls never overwrite each other's file)."""

    async def put(self, key: str, data: bytes) -> None:
        """Store (or overwrite) the object ``key``."""

    async def get(self, key: str) -> bytes:
        """The object ``key``; ``Unavailable`` if it is missing or cannot be read."""

    async def delete(self, key: str) -> None:
        """Delete the object ``key`` (absent is fine)."""


class DirectoryArchive:
    """Objects as files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def key_for(self, session_id: str, token: str) -> str:
        return f"sessions/{session_id}/{token}.jsonl"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"archive key {key!r} leaves the archive directory")
        return path

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put(self, key: str, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._put, key, data)
        except OSError as exc:
            raise _unavailable("write", exc) from exc

    async def get(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except OSError as exc:
            raise _unavailable("read", exc) from exc

    def _delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the session's directory, once empty
            path.parent.rmdir()

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._delete, key)
        except OSError as exc:
            raise _unavailable("delete", exc) from exc


class S3Archive:
    """Objects in an S3 bucket below ``prefix``; ``client`` is a boto3 S3 client."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    def key_for(self, session_id: str, token: str) -> str:
        return "/".join(p for p in (self.prefix, f"sessions/{session_id}/{token}.jsonl") if p)

    async def put(self, key: str, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._client.put_object, Bucket=self.bucket, Key=key, Body=data)
        except Exception as exc:  # botocore raises ClientError, EndpointConnectionError ...
            raise _unavailable("write", exc) from exc

    def _get(self, key: str) -> bytes:
        body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    async def get(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._get, key)
        except Exception as exc:
            raise _unavailable("read", exc) from exc

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise _unavailable("delete", exc) from exc


def archive_from_url(url: str, data_dir: Path) -> ArchiveStore:
    """The archive ``url`` names: empty means ``{data_dir}/archive``; ``file:///abs/path`` a
    directory; ``s3://bucket[/prefix]`` S3 (boto3's default session: the standard AWS chain)."""
    if not url:
        return DirectoryArchive(data_dir / "archive")
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return DirectoryArchive(Path(unquote(parsed.netloc + parsed.path)))
    if parsed.scheme == "s3" and parsed.netloc:
        import boto3

        return S3Archive(parsed.netloc, parsed.path, boto3.session.Session().client("s3"))
    raise ValueError(f"PARLEY_ARCHIVE_URL must be file:///path or s3://bucket/prefix, not {url!r}")
