"""SQL storage (SQLAlchemy 2 async): SQLite for the embedded default, PostgreSQL in production."""

from parley.storage.sql.engine import Database
from parley.storage.sql.store import MetadataStore

__all__ = ["Database", "MetadataStore"]
