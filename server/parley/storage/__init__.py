"""Persistence: SQL (``sql``: metadata and the message tree), message content (``content``: SQL or
MongoDB), and the two put together (``messages``)."""

#: Nothing is re-exported here: import from the submodules.
__all__: list[str] = []
