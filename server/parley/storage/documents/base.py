"""The message-store contract, shared by the SQL and MongoDB implementations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from parley.domain.models import Message

__all__ = ["MessageStore"]


class MessageStore(Protocol):
    """Stores the nodes of each session's message tree.

    Messages are immutable once written, except that a reply is written once, at its end.
    Reading a page of a branch's path costs O(1) round trips whatever the depth.
    """

    async def start(self) -> None:
        """Prepare the store (indexes); called once at server start."""

    async def close(self) -> None:
        """Release connections."""

    async def insert(self, message: Message) -> None:
        """Store a new message. ``message.parent_id`` must already be stored.

        Raises ``AlreadyExists`` (reason ``DUPLICATE_REQUEST_ID``) when the session already has a
        message with the same non-empty ``request_id``.
        """

    async def get(self, session_id: str, message_id: str) -> Message | None:
        """The message, if it belongs to ``session_id``."""

    async def find_by_request_id(self, session_id: str, request_id: str) -> Message | None:
        """The user message stored by the send with this idempotency key."""

    async def children(self, session_id: str, parent_id: str) -> Sequence[Message]:
        """Messages whose parent is ``parent_id``, oldest first."""

    async def path(self, session_id: str, head_id: str, min_depth: int, limit: int) -> Sequence[Message]:
        """Ancestors of ``head_id`` (inclusive) with ``depth >= min_depth``, oldest first, at most
        ``limit`` of them (the oldest ones)."""

    async def delete_session(self, session_id: str) -> None:
        """Delete every message of the session."""
