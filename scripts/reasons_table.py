"""Generate README.md's table of error reasons from ``protos/parley/v1/errors.proto``.

    python scripts/reasons_table.py          # rewrite the table in README.md
    python scripts/reasons_table.py --check  # exit 1 if README.md's table is stale

The table sits between ``<!-- error-reasons:start -->`` and ``<!-- error-reasons:end -->``: one
row per value of ``enum ErrorReason`` (the ``google.rpc.ErrorInfo.reason`` strings), in the
proto's order, with the gRPC code and the meaning from the value's comment, which ends with the
code in parentheses ("... (INVALID_ARGUMENT)."). ``tests/test_reasons_table.py`` runs the check.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

__all__ = ["END_MARKER", "START_MARKER", "check", "main", "reasons", "render_table"]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PROTO = ROOT / "protos" / "parley" / "v1" / "errors.proto"
START_MARKER = "<!-- error-reasons:start -->"
END_MARKER = "<!-- error-reasons:end -->"

_BLOCK = re.compile(re.escape(START_MARKER) + r"\n(.*?)" + re.escape(END_MARKER), re.S)
_VALUE = re.compile(r"^\s*([A-Z][A-Z0-9_]*) = (\d+);")
_CODE = re.compile(r"^(.*) \(([A-Z_]+)\)\.$", re.S)


def reasons(proto: Path = PROTO) -> list[tuple[str, str, str]]:
    """(name, gRPC code, meaning) of every ErrorReason value but ``ERROR_REASON_UNSPECIFIED``."""
    out: list[tuple[str, str, str]] = []
    comment: list[str] = []
    inside = False
    for line in proto.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("enum ErrorReason"):
            inside = True
        elif inside and stripped == "}":
            break
        elif inside and stripped.startswith("//"):
            comment.append(stripped[2:].strip())
        elif inside and (value := _VALUE.match(line)):
            name, text = value.group(1), " ".join(comment)
            comment = []
            if name == "ERROR_REASON_UNSPECIFIED":
                continue
            parsed = _CODE.match(text)
            if parsed is None:
                raise SystemExit(f"{proto.name}: the comment of {name} must end with '(GRPC_CODE).'")
            out.append((name, parsed.group(2), parsed.group(1)))
    return out


def render_table(proto: Path = PROTO) -> str:
    rows = ["| reason | gRPC code | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | `{code}` | {meaning}. |" for name, code, meaning in reasons(proto)]
    return "\n".join(rows) + "\n"


def check(readme: Path = README, proto: Path = PROTO) -> str | None:
    """None if the README's table is current, else what is wrong and how to fix it."""
    match = _BLOCK.search(readme.read_text())
    if match is None:
        return f"{readme.name} has no {START_MARKER} ... {END_MARKER} block"
    if match.group(1) != render_table(proto):
        return f"{readme.name}'s error reasons table is stale: run `python scripts/reasons_table.py`"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    if args.check:
        problem = check()
        if problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    text = README.read_text()
    if _BLOCK.search(text) is None:
        print(f"README.md has no {START_MARKER} block", file=sys.stderr)
        return 1
    README.write_text(_BLOCK.sub(lambda _: f"{START_MARKER}\n{render_table()}{END_MARKER}", text))
    print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
