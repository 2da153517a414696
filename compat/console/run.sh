#!/usr/bin/env bash
# The admin console (/console/) end to end: headless Debian Chromium (playwright-core)
# against the real confab binary ($CONFAB_BIN, else target/debug/confab, built if
# missing) with its development app. Screenshots go to $CONSOLE_SCREENSHOTS, else a
# temporary directory the test prints. Needs /usr/bin/chromium ($CHROMIUM_BIN).
set -euo pipefail
cd "$(dirname "$0")"

root="$(cd ../.. && pwd)"
export CONFAB_BIN="${CONFAB_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/confab}"
if [[ ! -x "$CONFAB_BIN" ]]; then
  (cd "$root" && cargo build --locked -p confab-server)
fi
if [[ ! -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ]]; then
  echo "chromium is missing: apt-get update && apt-get install -y chromium" >&2
  exit 1
fi
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
node --test console.test.mjs
