"""Content stores: where message content lives (SQL for the embedded default, MongoDB)."""

from parley.storage.documents.base import ContentStore, MessageContent
from parley.storage.documents.sql import SqlContentStore

__all__ = ["ContentStore", "MessageContent", "SqlContentStore"]
