"""Generate every artefact that comes from the protos, with one command.

    python scripts/generate.py          # write generated code
    python scripts/generate.py --check  # exit 1 if anything committed is stale (CI)

Outputs (all committed, never hand-edited):
- ``gen/python/parley_proto/v1/``: Python messages, gRPC stubs and mypy stubs
  (grpcio-tools' bundled protoc + mypy-protobuf). Imports are rewritten from ``parley.v1`` to
  ``parley_proto.v1`` so the generated package does not collide with the server package
  ``parley`` (the approach of temporalio/sdk-python's ``scripts/gen_protos.py``).
- ``gen/descriptor/parley.binpb``: a FileDescriptorSet with imports and source info, for
  Envoy's gRPC-JSON transcoder.

Other generators (OpenAPI, Go, TypeScript) register themselves in ``EXTRA_STEPS``.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GOOGLEAPIS = ROOT / "third_party" / "googleapis"
PY_OUT = ROOT / "gen" / "python" / "parley_proto"
DESCRIPTOR_OUT = ROOT / "gen" / "descriptor" / "parley.binpb"

_IMPORT_RE = re.compile(r"^from parley\.v1 import ", re.MULTILINE)
_IMPORT_RE_PYI = re.compile(r"\bparley\.v1\.", re.MULTILINE)
_IMPORT_RE_PYI_FROM = re.compile(r"^import parley\.v1\.(\w+)$", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTOS.glob("parley/v1/*.proto"))


def _protoc(args: list[str]) -> None:
    import grpc_tools
    from grpc_tools import protoc

    wkt = Path(grpc_tools.__file__).parent / "_proto"
    argv = ["protoc", f"-I{PROTOS}", f"-I{GOOGLEAPIS}", f"-I{wkt}", *args]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed: {' '.join(argv)}")


def generate_python(out: Path) -> None:
    """Write the Python package for the parley.v1 protos into ``out`` (a parley_proto dir)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = [str(p.relative_to(PROTOS)) for p in proto_files()]
        bindir = Path(sys.executable).parent
        _protoc(
            [
                f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
                f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
                f"--python_out={tmp}",
                f"--grpc_python_out={tmp}",
                f"--mypy_out={tmp}",
                f"--mypy_grpc_out={tmp}",
                *files,
            ]
        )
        src = Path(tmp) / "parley" / "v1"
        (out / "v1").mkdir(parents=True, exist_ok=True)
        for path in sorted(src.iterdir()):
            text = path.read_text()
            text = _IMPORT_RE.sub("from parley_proto.v1 import ", text)
            if path.suffix == ".pyi":
                text = _IMPORT_RE_PYI_FROM.sub(r"import parley_proto.v1.\1", text)
                text = _IMPORT_RE_PYI.sub("parley_proto.v1.", text)
            (out / "v1" / path.name).write_text(text)
        (out / "__init__.py").write_text('"""Generated code for the parley.v1 protos. Do not edit."""\n')
        (out / "v1" / "__init__.py").write_text("")
        (out / "py.typed").write_text("")


def generate_descriptor(out: Path) -> None:
    """Write a FileDescriptorSet (with imports and source info) for Envoy."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = [str(p.relative_to(PROTOS)) for p in proto_files()]
    _protoc([f"--descriptor_set_out={out}", "--include_imports", "--include_source_info", *files])


# Each step: (name, target path relative to ROOT, function writing into a given path).
EXTRA_STEPS: list[tuple[str, str, Callable[[Path], None]]] = []


def _steps() -> list[tuple[str, str, Callable[[Path], None]]]:
    return [
        ("python", "gen/python/parley_proto", generate_python),
        ("descriptor", "gen/descriptor/parley.binpb", generate_descriptor),
        *EXTRA_STEPS,
    ]


def _same(a: Path, b: Path) -> bool:
    if a.is_file() or b.is_file():
        return a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    if any(not filecmp.cmp(a / f, b / f, shallow=False) for f in cmp.common_files):
        return False
    return all(_same(a / d, b / d) for d in cmp.common_dirs)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if committed output is stale")
    args = parser.parse_args()
    stale: list[str] = []
    for name, rel, fn in _steps():
        target = ROOT / rel
        if args.check:
            with tempfile.TemporaryDirectory() as tmp:
                fresh = Path(tmp) / target.name
                fn(fresh)
                if not target.exists() or not _same(fresh, target):
                    stale.append(f"{name}: {rel}")
        else:
            if target.is_dir():
                shutil.rmtree(target)
            fn(target)
            print(f"generated {name}: {rel}")
    if stale:
        print("stale generated code (run `make generate` and commit):\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
