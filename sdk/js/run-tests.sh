#!/usr/bin/env bash
# Every check of the JavaScript SDK; exits non-zero on the first failure.
#   1. npm ci (when node_modules is missing or stale)
#   2. build check: the committed dist/ equals a fresh esbuild build, size <= 5 KB min+gzip
#   3. tsc --strict over the declarations and types/types-test.ts
#   4. node --test: unit tests (fake server) + integration tests (real ../../target/debug/confab,
#      or $CONFAB_BIN)
#   5. the same unit suite once more through the standard WHATWG WebSocket of Node (when available)
#   6. browser test: Debian chromium + playwright-core open the demo served by confab in two pages
# Set SKIP_BROWSER=1 to skip step 6 (e.g. on a machine without chromium) — CI must not set it.
set -euo pipefail
cd "$(dirname "$0")"

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

echo "== build check"
node scripts/build.mjs --check

echo "== tsc --strict (declarations, types-test, JSDoc of src)"
npx tsc -p tsconfig.json        # declarations + types/types-test.ts
npx tsc -p tsconfig.src.json    # JSDoc types of the sources (checkJs)

echo "== node --test (unit + integration)"
node --test --test-reporter=spec test/unit/ test/integration/

echo "== standard WebSocket path (globalThis.WebSocket)"
if node --experimental-websocket -e 'process.exit(typeof WebSocket == "function" ? 0 : 1)' 2>/dev/null; then
  node --experimental-websocket --test --test-reporter=spec test/unit/whatwg.test.js
else
  node --test --test-reporter=spec test/unit/whatwg.test.js # Node >= 22 has it built in
fi

if [[ "${SKIP_BROWSER:-}" != 1 ]]; then
  echo "== browser (chromium + playwright-core)"
  if [[ ! -x /usr/bin/chromium && -z "${CHROMIUM_BIN:-}" ]]; then
    echo "chromium is missing: apt-get update && apt-get install -y chromium" >&2
    exit 1
  fi
  node --test --test-reporter=spec test/browser/
fi
echo "== all JavaScript SDK checks passed"
