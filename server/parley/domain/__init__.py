"""The conversation engine and the rules of every resource, free of gRPC and SQL."""
