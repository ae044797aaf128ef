"""The README's grpcurl walkthroughs, run as written against a live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import av

from tests.support.server import ROOT, ServerProcess


def _block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {name}:start -->\s*```bash\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
    assert block, f"README.md lost its {name} block"
    return block.group(1)


def test_readme_walkthroughs(server: ServerProcess, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PARLEY_ADDR": server.target,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    # A fresh username per run: the suite's database is shared by all tests.
    blocks = [
        _block(name)
        for name in ("walkthrough", "walkthrough-branches", "walkthrough-voice", "walkthrough-runs")
    ]
    script = "".join(blocks).replace('"ada"', f'"ada{os.getpid()}"')
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "parley.v1.ChatService" in out
    assert '"message_accepted"' in out and '"text_delta"' in out and '"message_completed"' in out
    assert '"STATUS_COMPLETE"' in out
    # The two `jq` listings: the fork's path, then main's. Each starts with the first question.
    listings = out.split("ROLE_USER: Hello! What is a good name for a cat?")
    assert len(listings) == 3, out
    fork_path, main_path = listings[1], listings[2]
    assert "And for a dog?" in fork_path and "goldfish" not in fork_path
    assert "And for a goldfish?" in main_path and "dog" not in main_path.split("\n{")[0]
    assert '"active": true' in out  # ListBranches marks the active branch
    # The voice block: what was heard, and the reply audio saved as files that decode.
    assert "heard (en):" in out and "capital" in out.lower()
    for name, fmt in (("reply.mp3", "mp3"), ("reply.ogg", "ogg")):
        with av.open(str(tmp_path / name)) as container:
            assert container.format.name == fmt
            assert sum(f.samples for f in container.decode(audio=0)) > 0
    # The runs block: left after event N, cancelled, then resumed at exactly N + 1.
    left = re.search(r"left sessions/\S+/messages/\S+ after event (\d+)", out)
    assert left, out
    seen = int(left.group(1))
    assert seen >= 1
    assert re.search(r"^STATUS_(INCOMPLETE STOP_REASON_CANCELLED|COMPLETE STOP_REASON_\w+)$", out, re.M)
    resumed = [line for line in out.splitlines() if line.startswith('{"n":')]
    assert resumed and resumed[0].startswith(f'{{"n":"{seen + 1}"')
    assert resumed[-1].endswith('"event":"message_completed"}')
