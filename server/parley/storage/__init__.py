"""Persistence: SQL metadata (``sql``) and the message store (``documents``)."""
