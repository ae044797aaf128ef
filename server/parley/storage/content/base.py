"""The content-store contract: where what was said lives (SQL for the embedded default, MongoDB).

The message *tree* (ids, parents, depth, role, status, usage) is metadata and lives in SQL with
the branches, so that appending a message and moving a branch head is one SQL transaction, and
reading a page of a branch's path is one recursive query there. The content store holds each
message's content keyed by message id; a page of history costs one ``get_many`` call.
Content is written before the tree row that makes it reachable, so a crash in between leaves an
unreachable document at worst, never a message without content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ContentStore", "MessageContent"]


@dataclass(frozen=True, slots=True)
class MessageContent:
    """What a message says. ``audio_duration_s`` is seconds of the spoken input, if any;
    ``tool_calls`` the calls an assistant message made, each ``{"id", "name", "arguments",
    "kind", "require_approval"}`` (``arguments``: the model's JSON text); ``citations`` the
    spans of ``text`` backed by retrieved sources, each ``{"text": str, "start_index": int,
    "end_index": int, "sources": [{"text": str, "location": str, "location_type": str,
    "metadata": {str: str}}]}`` (the fields of ``parley.domain.models.Citation`` and of the
    proto's ``Citation``; they quote retrieved text, so they are content, not metadata)."""

    text: str
    transcript_language: str = ""
    audio_duration_s: float | None = None
    error_message: str = ""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    citations: tuple[Mapping[str, Any], ...] = ()


class ContentStore(Protocol):
    """Stores message content by message id."""

    async def start(self) -> None:
        """Prepare the store (indexes); called once at server start."""

    async def close(self) -> None:
        """Release connections."""

    async def put(self, session_id: str, message_id: str, content: MessageContent) -> None:
        """Store (or overwrite) the content of one message."""

    async def put_many(self, session_id: str, contents: Mapping[str, MessageContent]) -> None:
        """Store (or overwrite) the content of several messages of ``session_id`` in one round trip."""

    async def get_many(self, session_id: str, message_ids: Sequence[str]) -> Mapping[str, MessageContent]:
        """Content of the given messages of ``session_id`` (one round trip); absent ids are left out."""

    async def delete(self, session_id: str, message_ids: Sequence[str]) -> None:
        """Delete the content of the given messages."""

    async def delete_session(self, session_id: str) -> None:
        """Delete the content of every message of the session."""
