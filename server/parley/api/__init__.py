"""gRPC servicers (thin: proto → domain call → proto) and the request interceptor."""

#: Nothing is re-exported here: import from the submodules.
__all__: list[str] = []
