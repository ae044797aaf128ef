#!/usr/bin/env bash
# Installs the system packages Parley needs, if missing (Debian/Ubuntu; uses sudo when not root).
#   espeak-ng  text-to-speech for the embedded default (voices en-us, ar)
#   libmagic1  audio type detection (python-magic)
#   postgresql the test suite's PostgreSQL runs (a throwaway cluster started by the tests)
#   redis      redis-server for the replica tests (a throwaway server started by the tests)
#   jq         the README walkthrough parses grpcurl output with it
#   buf        protobuf lint / breaking-change checks (npm package @bufbuild/buf)
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
ldconfig -p 2>/dev/null | grep -q libmagic.so.1 || need+=(libmagic1)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v npm >/dev/null || need+=(npm)
command -v jq >/dev/null || need+=(jq)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ! command -v buf >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo npm install -g --silent @bufbuild/buf@1.75.0
fi
