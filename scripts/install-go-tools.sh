#!/usr/bin/env bash
# Install the Go code generators the repository uses, at pinned versions, into .tools/bin
# (repo-local, git-ignored). Idempotent: a tool already at its pinned version is skipped.
#
#   bash scripts/install-go-tools.sh
#
# Tools:
#   protoc-gen-openapiv2  grpc-gateway's OpenAPI generator; scripts/generate.py runs it to
#                         write gen/openapi/ (the document Envoy serves at /openapi.json).
#
# Needs Go >= 1.22 (found on PATH or at /usr/local/go/bin) and the Go module proxy.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GOBIN_DIR="${PARLEY_TOOLS_BIN:-$ROOT/.tools/bin}"

# module path@version of each tool; the binary name is the last path element.
TOOLS=(
  "github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.31.0"
)

GO="$(command -v go || true)"
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
  GO=/usr/local/go/bin/go
fi
if [[ -z "$GO" ]]; then
  echo "install-go-tools: Go not found (install Go >= 1.22 or put it on PATH)" >&2
  exit 1
fi

mkdir -p "$GOBIN_DIR"
for spec in "${TOOLS[@]}"; do
  pkg="${spec%@*}"
  version="${spec##*@}"
  name="${pkg##*/}"
  stamp="$GOBIN_DIR/.$name.version"
  if [[ -x "$GOBIN_DIR/$name" && -f "$stamp" && "$(cat "$stamp")" == "$spec" ]]; then
    continue
  fi
  echo "installing $name $version into $GOBIN_DIR"
  GOBIN="$GOBIN_DIR" GOFLAGS="${GOFLAGS:-} -trimpath" "$GO" install "$spec"
  echo "$spec" >"$stamp"
done
