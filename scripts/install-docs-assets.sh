#!/usr/bin/env bash
# Install the browser assets of the API docs page (/docs, served by Envoy) from the npm registry,
# exactly as locked in envoy/docs/package-lock.json, into envoy/docs/node_modules (git-ignored).
# Idempotent: skipped when node_modules already matches the lock file.
#
#   bash scripts/install-docs-assets.sh
#
# --ignore-scripts: no install scripts run (swagger-ui-dist's only dependency, @scarf/scarf,
# would otherwise send install analytics; scarfSettings in package.json switches it off too).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCS="$ROOT/envoy/docs"
STAMP="$DOCS/node_modules/.parley-lock.sha256"

if ! command -v npm >/dev/null; then
  echo "install-docs-assets: npm not found (Debian: apt-get install npm)" >&2
  exit 1
fi

want="$(sha256sum "$DOCS/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -f "$DOCS/node_modules/swagger-ui-dist/swagger-ui-bundle.js" ]]; then
  exit 0
fi
npm ci --prefix "$DOCS" --ignore-scripts --no-audit --no-fund --loglevel=error
echo "$want" >"$STAMP"
