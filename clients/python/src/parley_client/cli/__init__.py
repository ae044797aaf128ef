"""The ``parley`` command-line interface (``parley --help``)."""

from parley_client.cli.main import main

__all__ = ["main"]
