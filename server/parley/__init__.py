"""Parley: an open gRPC backend for AI agents that people talk to."""

__all__ = ["__version__"]

__version__ = "0.1.0"
