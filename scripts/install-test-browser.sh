#!/usr/bin/env bash
# Installs the browser of the playground's browser tests (tests/browser/): Debian's Chromium,
# if missing (uses sudo when not root). Playwright for Python (a dev dependency) only drives it:
# the tests launch /usr/bin/chromium by executable_path, and Playwright never downloads a browser
# of its own. Only `make test` needs it (setup-dev); `make run` does not.
#
#   bash scripts/install-test-browser.sh
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
