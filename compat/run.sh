#!/usr/bin/env bash
# Compatibility suite: the unmodified leancloud-realtime@2.4.0 SDK against the real Confab server.
#   1. the SDK's own mocha suite (node_modules/leancloud-realtime/test/specs.js), seeded and redirected;
#   2. our scenarios (test/*.test.mjs) with node's test runner.
# Server binary: $CONFAB_BIN, else ../target/debug/confab (built with `cargo build -p confab-server`
# if missing). Exits non-zero if either runner fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ ! -d node_modules/leancloud-realtime ]; then
  npm ci --no-audit --no-fund
fi

if [ -z "${CONFAB_BIN:-}" ] && [ ! -x ../target/debug/confab ]; then
  (cd .. && cargo build -p confab-server)
fi

status=0
echo "== leancloud-realtime@2.4.0 own mocha suite (test/specs.js) =="
node official/run-official.mjs || status=$?

echo "== Confab 2.4.0 compatibility scenarios (node --test) =="
node --test --test-concurrency=1 --test-force-exit --test-timeout=180000 test/ || status=$?

exit "$status"
