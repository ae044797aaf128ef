"""Schemathesis against the served OpenAPI document: no generated request gets a 5xx.

Bounded: a few examples per operation (all phases: coverage, fuzzing, stateful), one worker, a
fixed seed so CI runs are reproducible. Settings in tests/rest/schemathesis.toml (the RPCs that
are not built yet are allowed their 501).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.rest.helpers import RestUser
from tests.support.envoy import EnvoyProcess

HERE = Path(__file__).resolve().parent
MAX_EXAMPLES = 10
SEED = 20261121


def test_schemathesis_finds_no_server_errors(
    envoy: EnvoyProcess, rest_alice: RestUser, tmp_path: Path
) -> None:
    agent = rest_alice.create_agent(displayName="Survivor")
    session = rest_alice.create_session(agent["name"], title="Before the fuzz")["name"]
    rest_alice.send(session, "Hello before the fuzz")
    before = rest_alice.messages(session)

    st = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [
            str(st),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{envoy.base_url}/openapi.json",
            "--url",
            envoy.base_url,
            "--header",
            f"Authorization: Bearer {rest_alice.user.access_token}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--request-timeout",
            "60",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=tmp_path,  # its caches (.schemathesis, .hypothesis) stay out of the repository
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    doc = rest_alice.client.get("/openapi.json").json()
    operations = sum(len(ops) for ops in doc["paths"].values())
    assert f"Tested: {operations}" in output, output[-2000:]  # every operation, none skipped

    # The fuzzing did not touch what the user already had.
    assert rest_alice.client.get(f"/v1/{agent['name']}").json()["agent"] == agent
    assert rest_alice.client.get(f"/v1/{session}").json()["session"]["title"] == "Before the fuzz"
    assert rest_alice.messages(session) == before
