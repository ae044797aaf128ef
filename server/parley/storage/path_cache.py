"""The history a send needs, kept between the turns of a conversation.

Every send reads the path from the branch head up (the context of the reply,
domain/prompt.py). A path to a given message never changes once its messages are final: the
tree only grows, and a finished message is never rewritten. So when a reply this process wrote
finishes, the path to it is the path its send read plus the user message and the reply, and
the next send to that branch finds it here instead of in the database.

- Entries are keyed by their last message's id and keep at most ``per_path`` of the newest
  messages (``CONTEXT_MAX_MESSAGES``, what a context can use), with the depth of the first.
- An entry is served only when all its messages are final (not IN_PROGRESS or
  REQUIRES_ACTION); a reply's entry is completed when the reply is stored
  (:meth:`PathCache.replace`).
- Bounded by ``max_messages`` in all entries, least recently used dropped first. Nothing is
  shared between replicas: another replica reads the database, as after a restart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from parley.domain.models import Message, MessageStatus

__all__ = ["PathCache"]

_UNFINISHED = frozenset({MessageStatus.IN_PROGRESS, MessageStatus.REQUIRES_ACTION})


@dataclass(frozen=True, slots=True)
class _Path:
    messages: tuple[Message, ...]  # oldest first, ending at the key

    @property
    def start_depth(self) -> int:
        return self.messages[0].depth if self.messages else 0


class PathCache:
    """Recent paths by their head's id (see the module docstring)."""

    def __init__(self, *, per_path: int, max_messages: int = 20_000) -> None:
        self._per_path = per_path
        self._max = max_messages
        self._paths: OrderedDict[str, _Path] = OrderedDict()
        self._size = 0

    def get(self, head_id: str, min_depth: int) -> Sequence[Message] | None:
        """The path to ``head_id`` from depth ``min_depth``, if it is here whole and final."""
        path = self._paths.get(head_id)
        if path is None or (path.start_depth > min_depth and path.start_depth > 0):
            return None
        if any(m.status in _UNFINISHED for m in path.messages):
            return None
        self._paths.move_to_end(head_id)
        return [m for m in path.messages if m.depth >= min_depth]

    def put(self, messages: Sequence[Message]) -> None:
        """Remember a path read from the database (oldest first, ending at its head)."""
        if messages:
            self._store(tuple(messages))

    def extend(self, parent_id: str | None, written: Sequence[Message]) -> None:
        """``written`` were stored below ``parent_id`` (None: at the root): remember the path to
        the last of them if the path to the parent is here."""
        if parent_id is None:
            self._store(tuple(written))
            return
        parent = self._paths.get(parent_id)
        if parent is not None:
            self._store(parent.messages + tuple(written))

    def replace(self, message: Message) -> None:
        """``message`` was stored in a new state (a reply finished, a tool step ended)."""
        path = self._paths.get(message.id)
        if path is not None and path.messages and path.messages[-1].id == message.id:
            self._paths[message.id] = _Path((*path.messages[:-1], message))

    def forget(self, message_id: str) -> None:
        path = self._paths.pop(message_id, None)
        if path is not None:
            self._size -= len(path.messages)

    def _store(self, messages: tuple[Message, ...]) -> None:
        messages = messages[-self._per_path :]
        key = messages[-1].id
        self.forget(key)
        self._paths[key] = _Path(messages)
        self._size += len(messages)
        while self._size > self._max and self._paths:
            _, dropped = self._paths.popitem(last=False)
            self._size -= len(dropped.messages)
