"""SQL storage (SQLAlchemy 2 async): SQLite for the embedded default, PostgreSQL in production."""

from parley.storage.sql.agents import AgentStore
from parley.storage.sql.engine import Database
from parley.storage.sql.replicas import ReplicaStore
from parley.storage.sql.sessions import SendTarget, SessionStore
from parley.storage.sql.users import RefreshOutcome, UserStore

__all__ = [
    "AgentStore",
    "Database",
    "RefreshOutcome",
    "ReplicaStore",
    "SendTarget",
    "SessionStore",
    "UserStore",
]
