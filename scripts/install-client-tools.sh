#!/usr/bin/env bash
# Install what the Go and TypeScript clients need, at pinned versions, into repo-local,
# git-ignored places. Idempotent: anything already at its pinned version is skipped.
#
#   bash scripts/install-client-tools.sh
#
# - .tools/bin/protoc-gen-go, .tools/bin/protoc-gen-go-grpc   Go code generators (Go module proxy)
# - clients/typescript/node_modules                            protoc-gen-es, tsc, and the client's
#                                                              runtime packages, as locked in
#                                                              clients/typescript/package-lock.json
# - tests/clients/compose/node_modules                         the Compose specification's JSON schema
#                                                              (shipped by the npm package dclint)
#
# scripts/generate.py runs `buf generate --template clients/buf.gen.yaml` with the first three.
# Needs Go (on PATH or at /usr/local/go/bin; the Go client itself needs >= 1.26) and npm.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GOBIN_DIR="${PARLEY_TOOLS_BIN:-$ROOT/.tools/bin}"

# module path@version of each Go tool; the binary name is the last path element.
GO_TOOLS=(
  "google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12"
  "google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"
)
# npm projects installed exactly as locked (`npm ci`); no install scripts run.
NPM_PROJECTS=(
  "clients/typescript"
  "tests/clients/compose"
)

GO="$(command -v go || true)"
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
  GO=/usr/local/go/bin/go
fi
if [[ -z "$GO" ]]; then
  echo "install-client-tools: Go not found (install Go >= 1.22 or put it on PATH)" >&2
  exit 1
fi
if ! command -v npm >/dev/null; then
  echo "install-client-tools: npm not found (Debian: apt-get install npm)" >&2
  exit 1
fi

mkdir -p "$GOBIN_DIR"
for spec in "${GO_TOOLS[@]}"; do
  pkg="${spec%@*}"
  name="${pkg##*/}"
  stamp="$GOBIN_DIR/.$name.version"
  if [[ -x "$GOBIN_DIR/$name" && -f "$stamp" && "$(cat "$stamp")" == "$spec" ]]; then
    continue
  fi
  echo "installing $spec into $GOBIN_DIR"
  GOBIN="$GOBIN_DIR" GOFLAGS="${GOFLAGS:-} -trimpath" "$GO" install "$spec"
  echo "$spec" >"$stamp"
done

for project in "${NPM_PROJECTS[@]}"; do
  dir="$ROOT/$project"
  stamp="$dir/node_modules/.parley-lock.sha256"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    continue
  fi
  echo "installing npm packages of $project"
  npm ci --prefix "$dir" --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
done
