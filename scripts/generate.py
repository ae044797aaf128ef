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
                f"--mypy_out=quiet:{tmp}",
                f"--mypy_grpc_out=quiet:{tmp}",
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


# The error detail types the server puts in statuses (ErrorInfo, BadRequest, RequestInfo): Envoy's
# transcoder (convert_grpc_status) can only turn a status into JSON if their types are in the set.
DESCRIPTOR_EXTRA_FILES = ["google/rpc/status.proto", "google/rpc/error_details.proto"]


def generate_descriptor(out: Path) -> None:
    """Write a FileDescriptorSet (with imports and source info) for Envoy."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = [str(p.relative_to(PROTOS)) for p in proto_files()]
    _protoc(
        [
            f"--descriptor_set_out={out}",
            "--include_imports",
            "--include_source_info",
            *files,
            *DESCRIPTOR_EXTRA_FILES,
        ]
    )


# Each step: (name, target path relative to ROOT, function writing into a given path).
EXTRA_STEPS: list[tuple[str, str, Callable[[Path], None]]] = []


# --- OpenAPI (the document Envoy serves at /openapi.json) -----------------------------------------

OPENAPI_TOOL = "protoc-gen-openapiv2"  # grpc-gateway's generator; bash scripts/install-go-tools.sh
OPENAPI_OPTIONS = ROOT / "envoy" / "openapi-options.yaml"  # info, bearer security (not in the protos)
OPENAPI_FILE = "parley.swagger.json"


def _go_tool(name: str) -> Path:
    """A Go tool from ``.tools/bin`` (where scripts/install-go-tools.sh puts it), $GOBIN,
    $GOPATH/bin or PATH."""
    import os

    candidates = [ROOT / ".tools" / "bin" / name]
    if os.environ.get("GOBIN"):
        candidates.append(Path(os.environ["GOBIN"]) / name)
    candidates.append(Path(os.environ.get("GOPATH") or Path.home() / "go") / "bin" / name)
    if found := shutil.which(name):
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise SystemExit(f"{name} not found: run `bash scripts/install-go-tools.sh`")


def generate_openapi(out: Path) -> None:
    """Write ``out/parley.swagger.json``: OpenAPI 2.0 for the REST mapping Envoy serves.

    protoc-gen-openapiv2 does the work (one merged document, path patterns such as
    ``{name=agents/*}`` expanded to ``/v1/agents/{agent}`` so ordinary OpenAPI clients can call
    them). Two facts of this deployment are then written into the document, from the protos'
    descriptors: server-streaming methods answer with Server-Sent Events (Envoy's
    ``stream_sse_style_delimited``), each event one JSON message, rather than grpc-gateway's
    ``{"result": ...}`` stream envelope; and path parameters take the resources' singular names
    (``google.api.resource``), where the generator would only strip an "s" ("branche").
    """
    import json

    from google.api import resource_pb2
    from google.protobuf import descriptor_pb2

    files = [str(p.relative_to(PROTOS)) for p in proto_files()]
    first = f"- file: {files[0]}"
    if first not in OPENAPI_OPTIONS.read_text():
        # protoc-gen-openapiv2's merge keeps only the first file's document-level options.
        raise SystemExit(f"{OPENAPI_OPTIONS}: the file option must name {files[0]} (the first proto file)")
    with tempfile.TemporaryDirectory() as tmp:
        raw, descriptor = Path(tmp) / "openapi", Path(tmp) / "set.binpb"
        raw.mkdir()
        opts = ",".join(
            [
                "allow_merge=true",
                "merge_file_name=parley",
                "openapi_naming_strategy=simple",
                "expand_slashed_path_patterns=true",
                "preserve_rpc_order=true",
                "allow_delete_body=true",  # AuthService.DeleteUser takes the password in its body
                f"openapi_configuration={OPENAPI_OPTIONS}",
            ]
        )
        _protoc(
            [
                f"--plugin=protoc-gen-openapiv2={_go_tool(OPENAPI_TOOL)}",
                f"--openapiv2_out={raw}",
                f"--openapiv2_opt={opts}",
                f"--descriptor_set_out={descriptor}",
                *files,
            ]
        )
        doc = json.loads((raw / OPENAPI_FILE).read_text())
        fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes())

    streaming: dict[str, str] = {}  # operationId -> streamed message's simple name
    singular: dict[str, str] = {}  # collection id -> singular, e.g. branches -> branch
    for file in fds.file:
        for service in file.service:
            for method in service.method:
                if method.server_streaming:
                    streaming[f"{service.name}_{method.name}"] = method.output_type.rsplit(".", 1)[-1]
        for message in file.message_type:
            resource = message.options.Extensions[resource_pb2.resource]
            if resource.plural and resource.singular:
                singular[resource.plural] = resource.singular

    renamed_paths: dict[str, object] = {}
    for path, operations in doc["paths"].items():
        segments = path.split("/")
        renames: dict[str, str] = {}
        for i, segment in enumerate(segments[1:], start=1):
            name = segment[1:].split("}", 1)[0] if segment.startswith("{") else ""
            wanted = singular.get(segments[i - 1], name)
            if name and name != wanted:
                renames[name] = wanted
                segments[i] = segment.replace(f"{{{name}}}", f"{{{wanted}}}", 1)
        for operation in operations.values():
            for param in operation.get("parameters", []):
                if param["in"] == "path" and param["name"] in renames:
                    param["name"] = renames[param["name"]]
            message = streaming.get(operation["operationId"])
            if message is not None:
                operation["produces"] = ["text/event-stream", "application/json"]
                operation["responses"]["200"] = {
                    "description": (
                        f"A stream of Server-Sent Events: each event's `data:` line is one {message} "
                        "as JSON, in order. A failure before the first event is an error status with "
                        "a JSON google.rpc.Status body."
                    ),
                    "schema": {"$ref": f"#/definitions/{message}"},
                }
        renamed_paths["/".join(segments)] = operations
    doc["paths"] = renamed_paths

    out.mkdir(parents=True, exist_ok=True)
    (out / OPENAPI_FILE).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


EXTRA_STEPS.append(("openapi", "gen/openapi", generate_openapi))


# --- Go and TypeScript clients (clients/go/parleyv1, clients/typescript/src/gen) ------------------


def _buf_client(
    template: str, paths: tuple[str, ...], generated: str, plugins: tuple[str, ...]
) -> Callable[[Path], None]:
    """A step that runs ``buf generate`` with a client's template (``local:`` plugins, installed by
    scripts/install-client-tools.sh) and writes the ``generated`` folder of its output to ``out``."""

    def generate(out: Path) -> None:
        import subprocess

        missing = [p for p in plugins if not (ROOT / p).is_file()]
        if missing:
            raise SystemExit(f"missing {', '.join(missing)}: run `bash scripts/install-client-tools.sh`")
        buf = shutil.which("buf")
        if buf is None:
            raise SystemExit("buf not found: run `bash scripts/install-system-deps.sh`")
        inputs = [arg for path in paths for arg in ("--path", path)]
        with tempfile.TemporaryDirectory() as tmp:
            argv = [buf, "generate", "--template", template, *inputs, "-o", tmp]
            subprocess.run(argv, cwd=ROOT, check=True)
            shutil.copytree(Path(tmp) / generated, out, dirs_exist_ok=True)

    return generate


EXTRA_STEPS.append(
    (
        "go client",
        "clients/go/parleyv1",
        _buf_client(
            "clients/go/buf.gen.yaml",
            ("protos/parley",),
            "clients/go/parleyv1",
            (".tools/bin/protoc-gen-go", ".tools/bin/protoc-gen-go-grpc"),
        ),
    )
)
EXTRA_STEPS.append(
    (
        "typescript client",
        "clients/typescript/src/gen",
        _buf_client(
            "clients/typescript/buf.gen.yaml",
            ("protos/parley", "third_party/googleapis/google/rpc/error_details.proto"),
            "clients/typescript/src/gen",
            ("clients/typescript/node_modules/.bin/protoc-gen-es",),
        ),
    )
)


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
