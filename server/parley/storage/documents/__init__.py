"""Message stores: where message content lives (SQL for the embedded default, MongoDB)."""

from parley.storage.documents.base import MessageStore
from parley.storage.documents.sql import SqlMessageStore

__all__ = ["MessageStore", "SqlMessageStore"]
