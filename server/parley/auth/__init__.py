"""Authentication: password hashing, JWTs, and the interceptor that checks them."""

#: Nothing is re-exported here: import from the submodules.
__all__: list[str] = []
