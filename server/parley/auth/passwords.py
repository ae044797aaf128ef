"""Password hashing with Argon2id (argon2-cffi).

Parameters follow the OWASP Password Storage Cheat Sheet's first recommended Argon2id
configuration: m = 19 MiB (19,456 KiB), t = 2 iterations, p = 1. Hashing costs tens of
milliseconds of CPU, so the async wrappers run it in a worker thread.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["Passwords"]


class Passwords:
    """Hash and verify passwords off the event loop."""

    def __init__(self, *, memory_kib: int = 19_456, time_cost: int = 2, parallelism: int = 1) -> None:
        self._hasher = PasswordHasher(memory_cost=memory_kib, time_cost=time_cost, parallelism=parallelism)
        # Verified against when the user does not exist, so that timing does not reveal usernames.
        self._dummy_hash = self._hasher.hash("parley-dummy-password")

    async def hash(self, password: str) -> str:
        """PHC-format Argon2id hash of ``password``."""
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True iff ``password`` matches; with ``password_hash=None`` spends the same time, returns False."""
        target = password_hash if password_hash is not None else self._dummy_hash

        def check() -> bool:
            try:
                return self._hasher.verify(target, password) and password_hash is not None
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(check)
