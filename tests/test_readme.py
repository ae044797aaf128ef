"""The README's grpcurl walkthrough, run as written against a live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.server import ROOT, ServerProcess


def _walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- walkthrough:start -->\s*```bash\n(.*?)```\s*<!-- walkthrough:end -->", text, re.S
    )
    assert block, "README.md lost its walkthrough block"
    return block.group(1)


def test_readme_walkthrough_streams_a_reply(server: ServerProcess) -> None:
    env = {
        **os.environ,
        "PARLEY_ADDR": server.target,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    # A fresh username per run: the suite's database is shared by all tests.
    script = _walkthrough().replace('"ada"', f'"ada{os.getpid()}"')
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "parley.v1.ChatService" in out
    assert '"message_accepted"' in out and '"text_delta"' in out and '"message_completed"' in out
    assert '"STATUS_COMPLETE"' in out
    # ListMessages at the end shows the exchange.
    assert out.count('"ROLE_USER"') >= 2
