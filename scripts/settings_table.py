"""Generate README.md's settings table from ``parley.config.Settings``.

    python scripts/settings_table.py          # rewrite the table in README.md
    python scripts/settings_table.py --check  # exit 1 if README.md's table is stale

``tests/test_settings_table.py`` runs the same check in the test suite.

The table sits between ``<!-- settings:start -->`` and ``<!-- settings:end -->`` in README.md and
has one row per field of ``Settings``, in declaration order:

- **variable**: the settings class's ``env_prefix`` (``PARLEY_``) plus the field name,
  upper-cased; a field with a string ``validation_alias`` uses the alias instead, as
  pydantic-settings does.
- **default**, as an operator would write it: ``true``/``false``, ``10`` for ``10.0``, strings
  and paths as they are, containers as JSON. ``None`` is "(none)", an empty string "(empty)", a
  field without a default "(required)". Secrets (``SecretStr``/``SecretBytes``) never show a
  value: "(none)" when unset, else "(built in, not shown)". A ``default_factory`` that is a
  container type (``dict``, ``list``, ...) shows its empty value; any other factory runs at
  start-up (for instance from the CPU count), so the column says "computed at start-up" and the
  field's description must say how. A field can override the column with
  ``Field(json_schema_extra={"readme_default": "..."})``.
- **meaning**: the field's ``description``, then the allowed values the type states (``Literal``
  choices, ``ge``/``gt``/``le``/``lt`` bounds). A field without a description still gets a row;
  the script lists such fields on stderr so that someone writes one.
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import sys
import types
import typing
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

__all__ = [
    "END_MARKER",
    "README",
    "START_MARKER",
    "check",
    "main",
    "render_table",
    "undocumented_fields",
    "update_readme",
]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START_MARKER = "<!-- settings:start -->"
END_MARKER = "<!-- settings:end -->"

_BLOCK = re.compile(re.escape(START_MARKER) + r"\n(.*?)" + re.escape(END_MARKER), re.S)
_HEADER = "| variable | default | meaning |\n| --- | --- | --- |\n"
_CONTAINER_FACTORIES: tuple[type, ...] = (dict, list, set, frozenset, tuple)
_SECRET_TYPES: tuple[type, ...] = (SecretStr, SecretBytes)


def _settings_class() -> type[BaseSettings]:
    """``parley.config.Settings``, importable also without the editable install."""
    try:
        from parley.config import Settings
    except ModuleNotFoundError:
        sys.path.insert(0, str(ROOT / "server"))
        from parley.config import Settings
    return Settings


def _type_args(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (``X | None``), else the annotation alone."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _is_secret(field: FieldInfo) -> bool:
    return any(
        isinstance(arg, type) and issubclass(arg, _SECRET_TYPES) for arg in _type_args(field.annotation)
    )


def _literal_choices(field: FieldInfo) -> list[Any]:
    choices: list[Any] = []
    for arg in _type_args(field.annotation):
        if typing.get_origin(arg) is typing.Literal:
            choices.extend(typing.get_args(arg))
    return choices


def _plain(value: Any) -> str:
    """A value as it would be written in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, (set, frozenset)):
        value = sorted(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _code(text: str) -> str:
    """``text`` as a Markdown code span that is safe inside a table cell."""
    escaped = text.replace("|", "\\|")
    return f"`` {escaped} ``" if "`" in text else f"`{escaped}`"


def _cell(text: str) -> str:
    """Prose for a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("readme_default"), str):
        return _cell(str(extra["readme_default"]))
    if field.default_factory is not None:
        if field.default_factory in _CONTAINER_FACTORIES:
            return _code(_plain(field.default_factory()))
        return "computed at start-up"
    if field.default is PydanticUndefined:
        return "(required)"
    value = field.default
    if _is_secret(field):
        raw = value.get_secret_value() if isinstance(value, _SECRET_TYPES) else value
        return "(none)" if not raw else "(built in, not shown)"
    if value is None:
        return "(none)"
    if value == "":
        return "(empty)"
    return _code(_plain(value))


def _bounds(field: FieldInfo) -> str:
    """``ge``/``gt``/``le``/``lt`` constraints in words: "60 to 86400", "at least 1", "more than 0"."""
    low: tuple[Any, bool] | None = None  # (bound, inclusive)
    high: tuple[Any, bool] | None = None
    for item in field.metadata:
        if getattr(item, "ge", None) is not None:
            low = (item.ge, True)
        if getattr(item, "gt", None) is not None:
            low = (item.gt, False)
        if getattr(item, "le", None) is not None:
            high = (item.le, True)
        if getattr(item, "lt", None) is not None:
            high = (item.lt, False)
    if low and high and low[1] and high[1]:
        return f"{_plain(low[0])} to {_plain(high[0])}"
    words = []
    if low:
        words.append(("at least " if low[1] else "more than ") + _plain(low[0]))
    if high:
        words.append(("at most " if high[1] else "less than ") + _plain(high[0]))
    return ", ".join(words)


def _meaning(field: FieldInfo) -> str:
    parts = []
    if field.description:
        text = field.description.strip()
        parts.append(_cell(text if text.endswith((".", "!", "?", ")")) else f"{text}."))
    choices = _literal_choices(field)
    if choices:
        parts.append("One of " + ", ".join(_code(_plain(c)) for c in choices) + ".")
    bounds = _bounds(field)
    if bounds:
        parts.append(f"Allowed: {bounds}.")
    return " ".join(parts)


def _env_name(settings_cls: type[BaseSettings], name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias.upper()
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    return f"{prefix}{name}".upper()


def _row(*cells: str) -> str:
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|\n"


def render_table(settings_cls: type[BaseSettings] | None = None) -> str:
    """The Markdown table (header, separator, one row per field; ends with a newline).

    ``settings_cls`` defaults to ``parley.config.Settings``. Never reads the environment or a
    ``.env`` file: the table shows the defaults in the code, whatever this machine sets.
    """
    cls = settings_cls or _settings_class()
    rows = [
        _row(_code(_env_name(cls, name, field)), _default(field), _meaning(field))
        for name, field in cls.model_fields.items()
    ]
    return _HEADER + "".join(rows)


def undocumented_fields(settings_cls: type[BaseSettings] | None = None) -> list[str]:
    """Names of the fields of ``settings_cls`` (default ``Settings``) without a description."""
    cls = settings_cls or _settings_class()
    return [name for name, field in cls.model_fields.items() if not (field.description or "").strip()]


def update_readme(text: str, table: str) -> str:
    """``text`` (README.md's content) with ``table`` between the settings markers.

    Raises ``ValueError`` when the markers are missing or out of order.
    """
    if not _BLOCK.search(text):
        raise ValueError(f"README.md has no {START_MARKER} ... {END_MARKER} block")
    return _BLOCK.sub(lambda _: f"{START_MARKER}\n{table}{END_MARKER}", text, count=1)


def check(readme: Path | None = None, settings_cls: type[BaseSettings] | None = None) -> str | None:
    """None when the settings table of ``readme`` (default README.md) matches ``settings_cls``
    (default ``Settings``); else what is wrong and the command that fixes it."""
    readme = readme or README
    text = readme.read_text(encoding="utf-8")
    try:
        fresh = update_readme(text, render_table(settings_cls))
    except ValueError as exc:
        return str(exc)
    if fresh != text:
        return (
            f"{readme.name}'s settings table is stale (it must match parley.config.Settings): "
            "run `python scripts/settings_table.py` and commit README.md"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (1: stale table or missing markers)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if README.md's settings table is stale")
    args = parser.parse_args(argv)

    missing = undocumented_fields()
    if missing:
        print(f"settings without a description: {', '.join(missing)}", file=sys.stderr)
    if args.check:
        problem = check(README)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    text = README.read_text(encoding="utf-8")
    try:
        fresh = update_readme(text, render_table())
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    if fresh != text:
        README.write_text(fresh, encoding="utf-8")
        print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
