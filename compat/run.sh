#!/usr/bin/env bash
# Compatibility suite: the unmodified leancloud-realtime SDKs against the real Confab server.
#   1. 2.4.0's own mocha suite (node_modules/leancloud-realtime/test/specs.js), seeded and redirected;
#   2. our 2.4.0 scenarios (test/*.test.mjs) with node's test runner;
#   3. our 4.3.1 scenarios (v4/*.test.mjs, npm alias leancloud-realtime-4), binary then base64 frames;
#   4. our 3.5.7 scenarios (v3/*.test.mjs, npm alias leancloud-realtime-3).
# Server binary: $CONFAB_BIN, else ../target/debug/confab (built with `cargo build -p confab-server`
# if missing). Exits non-zero if either runner fails.
#
# CONFAB_COMPAT_CLUSTER=1: every server is a cluster of three nodes (one throw-away PostgreSQL and one
# throw-away Redis for the whole run, a database per cluster) behind a round-robin TCP balancer
# (lib/cluster.mjs); the services are stopped and removed when this script ends, however it ends.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ ! -d node_modules/leancloud-realtime ] || [ ! -d node_modules/leancloud-realtime-4 ] || [ ! -d node_modules/leancloud-realtime-3 ]; then
  npm ci --no-audit --no-fund
fi

if [ -z "${CONFAB_BIN:-}" ] && [ ! -x ../target/debug/confab ]; then
  (cd .. && cargo build -p confab-server)
fi

if [[ "${CONFAB_COMPAT_CLUSTER:-}" =~ ^(1|true|yes|on)$ ]]; then
  if ! command -v redis-server >/dev/null || ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    if [[ "${CI:-}" == "true" ]]; then
      echo "compat cluster mode needs redis-server and PostgreSQL's server programs in CI (apt-get install redis-server postgresql)" >&2
      exit 1
    fi
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
    printf '!!! SKIPPING the compatibility suites in cluster mode: redis-server or\n'
    printf '!!! /usr/lib/postgresql/*/bin/postgres missing (apt-get install redis-server postgresql)\n'
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n'
    exit 0
  fi
  services_out="$(mktemp)"
  # Lives as long as this shell (it polls our pid), so the services go away even if we are killed.
  node lib/cluster.mjs --services-for $$ > "$services_out" &
  services_pid=$!
  trap 'kill "$services_pid" 2>/dev/null || true; rm -f "$services_out"' EXIT
  for _ in $(seq 1 600); do
    [ -s "$services_out" ] && break
    kill -0 "$services_pid" 2>/dev/null || { echo "compat: cluster services failed to start" >&2; exit 1; }
    sleep 0.2
  done
  [ -s "$services_out" ] || { echo "compat: cluster services did not start in time" >&2; exit 1; }
  CONFAB_COMPAT_SERVICES="$(head -n1 "$services_out")"
  export CONFAB_COMPAT_SERVICES
  echo "== cluster mode: 3 nodes per server, services $CONFAB_COMPAT_SERVICES =="
fi

status=0
echo "== leancloud-realtime@2.4.0 own mocha suite (test/specs.js) =="
node official/run-official.mjs || status=$?

echo "== Confab 2.4.0 compatibility scenarios (node --test) =="
node --test --test-concurrency=1 --test-force-exit --test-timeout=180000 test/ || status=$?

# leancloud-realtime@4.3.1 (protobuf protocol), once per framing: binary (lc.protobuf2.*) and
# base64 text (noBinary, lc.proto2base64.*); push mode (lc.*.1) is chosen per test inside the suite.
for mode in binary base64; do
  echo "== Confab 4.3.1 compatibility scenarios, $mode frames (node --test v4/) =="
  CONFAB_V4_MODE=$mode node --test --test-concurrency=1 --test-force-exit --test-timeout=180000 v4/ || status=$?
done

echo "== Confab 3.5.7 compatibility scenarios (node --test v3/) =="
node --test --test-concurrency=1 --test-force-exit --test-timeout=180000 v3/ || status=$?

exit "$status"
