"""Runs: replies produced by server-side tasks that outlive the RPC that started them.

- ``events``: what a run's stream is made of;
- ``log``: the run event log (replay from any sequence number, then live);
- ``manager``: the run lifecycle (start, follow, cancel, checkpoints, shutdown);
- ``admission``: per-user reply slots and per-branch send locks;
- ``sweep``: this process's lease on its runs, and the sweep of runs left by dead processes;
- ``replay``: a finished reply's stream rebuilt from the stored message.
"""

#: Nothing is re-exported here: import from the submodules.
__all__: list[str] = []
