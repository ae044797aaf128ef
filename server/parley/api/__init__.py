"""gRPC servicers (thin: proto → domain call → proto) and the request handlers that wrap them."""

#: Nothing is re-exported here: import from the submodules.
__all__: list[str] = []
