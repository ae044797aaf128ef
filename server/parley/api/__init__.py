"""gRPC servicers (thin: proto → domain call → proto) and the request interceptor."""
