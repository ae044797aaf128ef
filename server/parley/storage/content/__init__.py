"""Content stores: where message content lives (SQL for the embedded default, MongoDB)."""

from parley.storage.content.base import ContentStore, MessageContent
from parley.storage.content.sql import SqlContentStore

__all__ = ["ContentStore", "MessageContent", "SqlContentStore"]
