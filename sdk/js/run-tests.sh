#!/usr/bin/env bash
# Every check of the JavaScript SDK; exits non-zero on the first failure.
#   1. npm ci (when node_modules is missing or older than package-lock.json)
#   2. build check: the committed dist/ equals a fresh esbuild build, and <= 5 KB min+gzip
#   3. tsc --strict: declarations + types/types-test.ts, and the JSDoc types of src/ (checkJs)
#   4. one node --test run (one closing "# pass N / # fail N" summary):
#      test/unit/         node:test against an in-process fake server, incl. the standard
#                         WHATWG WebSocket path (Node >= 22, or Node 20 --experimental-websocket)
#      test/integration/  the REAL server: ../../target/debug/confab (or $CONFAB_BIN)
#      test/browser/      Debian chromium + playwright-core open the demo served by confab
# SKIP_BROWSER=1 leaves out test/browser/ (for machines without chromium) — CI must not set it.
set -euo pipefail
cd "$(dirname "$0")"

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

echo "== build check"
node scripts/build.mjs --check

echo "== tsc --strict (declarations, types-test, JSDoc of src)"
npx tsc -p tsconfig.json
npx tsc -p tsconfig.src.json

suites=(test/unit/ test/integration/)
if [[ "${SKIP_BROWSER:-}" != 1 ]]; then
  if [[ ! -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ]]; then
    echo "chromium is missing: apt-get update && apt-get install -y chromium (or SKIP_BROWSER=1)" >&2
    exit 1
  fi
  suites+=(test/browser/)
fi

flags=()
if ! node -e 'process.exit(typeof WebSocket == "function" ? 0 : 1)' &&
  node --experimental-websocket -e 'process.exit(typeof WebSocket == "function" ? 0 : 1)' 2>/dev/null; then
  flags+=(--experimental-websocket)
fi

echo "== node ${flags[*]} --test ${suites[*]}"
node "${flags[@]}" --test "${suites[@]}"
echo "== all JavaScript SDK checks passed"
