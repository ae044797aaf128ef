"""Run a command quietly, printing what it is doing and for how long, every few seconds.

``make setup`` wraps its pip installs in this so that a first run on a fresh machine (about two
minutes of downloads and unpacking) shows progress instead of pip's ``--quiet`` silence: every
10 s, the time so far and pip's latest step (``Collecting av``, ``Installing collected
packages``…). The command's output goes to a log file, printed in full only when it fails.

Usage: ``python scripts/pip_progress.py "what it is doing" "about 2 minutes" -- cmd args...``
Exit status: the command's own.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTERVAL_S = 10.0
#: pip's own progress lines, the latest of which is shown.
STEPS = ("Collecting ", "Downloading ", "Building ", "Installing ", "Obtaining ")


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 2:
        print(__doc__, file=sys.stderr)
        return 2
    what, estimate, command = argv[0], argv[1], argv[3:]
    started = time.monotonic()
    print(f"{what} ({estimate} the first time) …", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "output.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            while True:
                try:
                    code = proc.wait(timeout=INTERVAL_S)
                    break
                except subprocess.TimeoutExpired:
                    print(f"  … {time.monotonic() - started:3.0f} s  {_latest_step(log_path)}", flush=True)
        elapsed = time.monotonic() - started
        if code != 0:
            sys.stderr.write(log_path.read_text(errors="replace"))
            print(f"{what} failed after {elapsed:.0f} s (exit {code})", file=sys.stderr)
        else:
            print(f"{what}: done in {elapsed:.0f} s", flush=True)
    return code


def _latest_step(log_path: Path) -> str:
    """pip's most recent progress line in the command's output so far."""
    step = ""
    with log_path.open(errors="replace") as log:
        for line in log:
            if line.lstrip().startswith(STEPS):
                step = line.strip()
    return step if len(step) <= 90 else step[:89] + "…"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
