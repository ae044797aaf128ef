"""Smoke test of the benchmark harness (``bench/``), so it keeps working; it measures nothing.

Runs ``python bench/run.py`` as ``make bench`` would, but tiny: the fixed-rate upstream with
5-token replies, one client, 1-second runs, on the paths ``direct``, ``parley-grpc`` and
``parley-rest``, then the unary phase for 1 second (Parley's gRPC and REST, and the bare floor).
It asserts behaviour only: the Markdown table is written with the expected columns and every run
finished without errors. No timing is asserted.

Skipped parts: the LiteLLM path when ``bench/.venv-litellm`` is absent, and ghz's unary run when
``.tools/bin/ghz`` is absent (``make`` installs neither; ``python bench/run.py`` does); the whole
test without Go (the load generator is Go). It runs in the SQLite configuration of the suite only:
the harness starts its own server on its own SQLite file, so the PostgreSQL and MongoDB
configurations would repeat it unchanged. It takes about 30 s once the load generator is built
(its first build compiles gRPC: about a minute on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STREAM_HEADER = (
    "| clients | path | requests | errors | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | "
    "tokens/s | proxy CPU ms / 1k tokens |"
)
UNARY_HEADER = "| path | client | concurrency | requests | errors | RPS | p50 ms | p99 ms |"
TOKENS = 5

pytestmark = pytest.mark.skipif(
    os.environ.get("PARLEY_TEST_DATABASE") == "postgres"
    or os.environ.get("PARLEY_TEST_MESSAGE_STORE") == "mongo",
    reason="the benchmark runs its own SQLite server: once per suite run is enough",
)


def test_bench_runs_and_writes_its_tables(tmp_path: Path) -> None:
    if not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()):
        pytest.skip("Go is not installed: the load generator cannot be built")
    paths = ["direct", "parley-grpc", "parley-rest"]
    if (ROOT / "bench" / ".venv-litellm" / "bin" / "litellm").exists():
        paths.append("litellm")
    have_ghz = (ROOT / ".tools" / "bin" / "ghz").exists()
    argv = [
        sys.executable, "bench/run.py", "--no-install", "--out", str(tmp_path),
        "--phases", "stream,unary", "--paths", ",".join(paths), "--clients", "1",
        "--tokens", str(TOKENS), "--rate", "100", "--duration", "1", "--ramp", "0", "--pause", "0",
        "--unary-concurrency", "2", "--unary-duration", "1",
    ]  # fmt: skip
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/local/go/bin"}
    env = {k: v for k, v in env.items() if not k.startswith("PARLEY_")}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, f"bench/run.py failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    markdown = (tmp_path / "results.md").read_text()
    assert STREAM_HEADER in markdown
    assert UNARY_HEADER in markdown
    results = json.loads((tmp_path / "results.json").read_text())
    assert not results.get("phase_errors")
    assert [run["path"] for run in results["stream"]] == paths
    for run in results["stream"]:
        assert run["clients"] == 1
        assert run["requests"] >= 1, run
        assert run["errors"] == 0, run
        assert run["tokens"] == run["requests"] * TOKENS, run
        assert f"| 1 | {run['path']} | {run['requests']} | 0 |" in markdown
    clients = [row["client"] for row in results["unary"]]
    # gRPC and REST against Parley, then gRPC against the bare grpc.aio floor.
    assert clients == (["ghz"] if have_ghz else []) + ["bench/loadgen"] * 3
    assert "floor" in results["unary"][-1]["path"]
    for row in results["unary"]:
        assert row["errors"] == 0, row
        assert row["requests"] > 0, row
    assert {"Parley", "Python", "Envoy"} <= set(results["versions"])
    assert results["machine"]["cores"] >= 1
