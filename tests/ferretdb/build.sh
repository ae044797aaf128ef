#!/usr/bin/env bash
# Builds tests/ferretdb/bin/ferretdb-test: an embedded FerretDB v1.24 (SQLite backend) for Parley's tests.
# Needs only `go` (>= 1.24) and access to the Go module proxy (or a warm module cache).
# Idempotent: does nothing when the binary is newer than main.go, go.mod, go.sum and this script.
# Set FORCE=1 to rebuild anyway.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/bin/ferretdb-test"

if [[ "${FORCE:-0}" != 1 && -x "$out" ]]; then
  stale=0
  for src in "$here/main.go" "$here/go.mod" "$here/go.sum" "$here/build.sh"; do
    if [[ "$src" -nt "$out" ]]; then
      stale=1
      break
    fi
  done
  if [[ "$stale" == 0 ]]; then
    exit 0
  fi
fi

go_bin="${GO:-}"
if [[ -z "$go_bin" ]]; then
  if command -v go >/dev/null 2>&1; then
    go_bin="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then
    go_bin=/usr/local/go/bin/go
  else
    echo "build.sh: 'go' not found (install Go >= 1.24)" >&2
    exit 1
  fi
fi

mkdir -p "$here/bin"
tmp="$(mktemp "$here/bin/.ferretdb-test.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

echo "building $out ..." >&2
cd "$here"
# No toolchain downloads: use the installed Go. go.sum is committed, so the module graph is read-only.
# ferretdb_no_postgresql drops the unused PostgreSQL backend (smaller, faster build).
GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 \
  "$go_bin" build -trimpath -buildvcs=false -tags ferretdb_no_postgresql -o "$tmp" .
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "built $out" >&2
