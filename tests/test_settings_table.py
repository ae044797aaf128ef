"""README.md's settings table is generated from ``parley.config.Settings`` and must not go stale.

Runs ``scripts/settings_table.py`` in-process (no server, no subprocess): a few milliseconds.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Literal

import pytest
from parley.config import Settings
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
FIX = "run `python scripts/settings_table.py` and commit README.md"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


settings_table = _load_script()


class _Example(BaseSettings):
    """A settings class with one field of each kind the generator treats specially."""

    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")

    mode: Literal["a", "b"] = "a"
    token: SecretStr = SecretStr("do-not-print-me")
    optional_key: SecretStr | None = None
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="Worker threads.")
    aliases: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    pipe: str = Field(default="a|b", description="Has a | in it.")
    legacy: str = Field(default="x", json_schema_extra={"readme_default": "see docs"})


def test_readme_settings_table_is_fresh() -> None:
    problem = settings_table.check(ROOT / "README.md")
    assert problem is None, f"{problem}\n(hint: {FIX})"


def test_a_stale_table_is_caught(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    fresh = settings_table.update_readme((ROOT / "README.md").read_text(), settings_table.render_table())
    stale = fresh.replace("| `PARLEY_GRPC_LISTEN` |", "| `PARLEY_GRPC_LISTEN_OLD` |")
    assert stale != fresh
    readme.write_text(stale)
    problem = settings_table.check(readme)
    assert problem is not None and "python scripts/settings_table.py" in problem


def test_missing_markers_are_reported(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# No table here\n")
    problem = settings_table.check(readme)
    assert problem is not None and settings_table.START_MARKER in problem


def test_one_row_per_field_and_no_secret_shown() -> None:
    table = settings_table.render_table(Settings)
    rows = table.splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)
    for row, (name, field) in zip(rows, Settings.model_fields.items(), strict=True):
        # A field read under a standard name (OTEL_EXPORTER_OTLP_ENDPOINT) has it as its alias.
        variable = field.validation_alias if isinstance(field.validation_alias, str) else f"PARLEY_{name}"
        assert row.startswith(f"| `{variable.upper()}` |")
    # No key is built in: unset, each install generates its own ({data_dir}/jwt-secret).
    assert "| `PARLEY_JWT_SECRET` | (none) |" in table


def test_rendering_of_each_kind_of_field() -> None:
    rows = {
        line.split(" | ")[0].strip("| `"): line
        for line in settings_table.render_table(_Example).splitlines()[2:]
    }
    assert rows["EXAMPLE_MODE"] == "| `EXAMPLE_MODE` | `a` | One of `a`, `b`. |"
    assert rows["EXAMPLE_TOKEN"] == "| `EXAMPLE_TOKEN` | (built in, not shown) | |"
    assert rows["EXAMPLE_OPTIONAL_KEY"] == "| `EXAMPLE_OPTIONAL_KEY` | (none) | |"
    assert rows["EXAMPLE_THREADS"] == (
        "| `EXAMPLE_THREADS` | computed at start-up | Worker threads. Allowed: at least 1. |"
    )
    assert rows["EXAMPLE_ALIASES"] == "| `EXAMPLE_ALIASES` | `{}` | |"
    assert rows["EXAMPLE_TIMEOUT_SECONDS"] == (
        "| `EXAMPLE_TIMEOUT_SECONDS` | `5` | Allowed: more than 0, at most 60. |"
    )
    assert rows["EXAMPLE_PIPE"] == r"| `EXAMPLE_PIPE` | `a\|b` | Has a \| in it. |"
    assert rows["EXAMPLE_LEGACY"] == "| `EXAMPLE_LEGACY` | see docs | |"
    assert "do-not-print-me" not in settings_table.render_table(_Example)


def test_fields_without_a_description_are_listed() -> None:
    assert settings_table.undocumented_fields(_Example) == [
        "mode",
        "token",
        "optional_key",
        "aliases",
        "timeout_seconds",
        "legacy",
    ]


def test_check_command_exits_1_on_a_stale_readme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{settings_table.START_MARKER}\n| old |\n{settings_table.END_MARKER}\n")
    monkeypatch.setattr(settings_table, "README", readme)
    assert settings_table.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert settings_table.main([]) == 0
    assert settings_table.main(["--check"]) == 0
