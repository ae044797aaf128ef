"""``scripts/pip_progress.py``: what ``make setup`` prints while pip runs (in-process, a second).

The command is a small Python program standing in for pip: it prints pip-style progress lines
with pauses, so the test sees the progress lines, the summary and the exit status pass through.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pip_progress", ROOT / "scripts" / "pip_progress.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pip_progress = _load()

FAKE_PIP = (
    "import sys, time\n"
    "print('Collecting xllamacpp', flush=True); time.sleep(0.35)\n"
    "print('Installing collected packages: ' + 'x, ' * 60, flush=True); time.sleep(0.35)\n"
    "sys.exit(int(sys.argv[1]))\n"
)


def test_prints_the_latest_step_while_running_and_the_time_when_done(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pip_progress, "INTERVAL_S", 0.3)
    code = pip_progress.main(["installing", "a moment", "--", sys.executable, "-c", FAKE_PIP, "0"])
    out = capsys.readouterr()
    assert code == 0
    lines = out.out.splitlines()
    assert lines[0] == "installing (a moment the first time) …"
    assert any(line.endswith("Collecting xllamacpp") for line in lines[1:-1])
    long = [line for line in lines if "Installing collected packages" in line]
    assert long and all(line.endswith("…") and len(line) < 110 for line in long)  # cut, not wrapped
    assert lines[-1].startswith("installing: done in ")
    assert out.err == ""  # the command's own output stays in the log when it succeeds


def test_a_failing_command_shows_its_output_and_keeps_its_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pip_progress, "INTERVAL_S", 0.3)
    code = pip_progress.main(["installing", "a moment", "--", sys.executable, "-c", FAKE_PIP, "3"])
    err = capsys.readouterr().err
    assert code == 3
    assert "Collecting xllamacpp" in err and "installing failed after" in err and "(exit 3)" in err


def test_usage_error_without_the_separator(capsys: pytest.CaptureFixture[str]) -> None:
    assert pip_progress.main(["installing", "pip", "install", "x"]) == 2
    assert "Usage:" in capsys.readouterr().err
