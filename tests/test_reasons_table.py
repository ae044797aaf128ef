"""README.md lists every ErrorReason of protos/parley/v1/errors.proto, and the list cannot go stale."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from parley.domain.errors import Reason

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reasons_table", ROOT / "scripts" / "reasons_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


reasons_table = _load()


def test_readme_lists_every_reason() -> None:
    assert reasons_table.check() is None, reasons_table.check()
    assert sorted(name for name, _, _ in reasons_table.reasons()) == sorted(r.name for r in Reason)


def test_a_stale_table_is_caught(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{reasons_table.START_MARKER}\n| old |\n{reasons_table.END_MARKER}\n")
    assert "stale" in (reasons_table.check(readme) or "")
