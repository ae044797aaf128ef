"""Telemetry of a Parley process: metrics, traces and logs."""

#: Nothing is re-exported here: import from the submodules.
__all__: list[str] = []
