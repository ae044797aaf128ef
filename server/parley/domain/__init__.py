"""The conversation engine and the rules of every resource, free of gRPC (storage is injected)."""

#: Nothing is re-exported here: import from the submodules.
__all__: list[str] = []
