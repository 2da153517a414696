#!/usr/bin/env bash
# Runs every test of Confab: Rust formatting and lints, the Rust unit and integration
# tests (real server, real SQLite, real WebSockets, SIGKILL cycles, slow consumers), the
# compatibility suites that drive the unmodified leancloud-realtime 2.4.0, 3.5.7 and
# 4.3.1 SDKs, the hook tests against an unmodified leanengine@3.8.0 app, the JavaScript SDK's Node and headless-Chromium suites,
# the admin console end to end in headless Chromium, a small benchmark
# run against Confab and its peers, and a bounded fuzz run. Installs what it needs (npm packages; Debian's chromium when
# run as root). With CI=true nothing may be skipped; elsewhere a missing browser is
# skipped with a loud warning.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n==== %s\n' "$*"; }

if [[ "${CI:-}" == "true" ]]; then
  ci=1
else
  ci=0
fi

chromium_bin="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [[ ! -x "$chromium_bin" ]] && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  say "installing Debian's chromium for the browser tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! command -v redis-server >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  say "installing Debian's redis-server for the cluster tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v redis-server >/dev/null; then
  if [[ $ci == 1 ]]; then
    echo "redis-server is required in CI (apt-get install redis-server)" >&2
    exit 1
  fi
  printf '\n!!! SKIPPING the Redis cluster tests: redis-server not found (apt-get install redis-server)\n\n'
fi
# The openssl command (Debian's openssl) makes the self-signed certificates of the TLS
# tests (crates/confab-server/tests/tls.rs) at test time.
if ! command -v openssl >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  say "installing Debian's openssl for the TLS tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
if ! command -v openssl >/dev/null; then
  echo "the openssl command is required by the TLS tests (apt-get install openssl)" >&2
  exit 1
fi
# PostgreSQL's server programs (Debian's postgresql): the PostgreSQL store's tests start
# their own throw-away server from /usr/lib/postgresql/*/bin on a free port. The
# package may also start a cluster of its own on 5432; the tests never use it.
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null && [[ $(id -u) == 0 ]] \
  && command -v apt-get >/dev/null; then
  say "installing Debian's postgresql for the PostgreSQL store tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  if [[ $ci == 1 ]]; then
    echo "PostgreSQL's server programs are required in CI (apt-get install postgresql)" >&2
    exit 1
  fi
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
  printf '!!! SKIPPING the PostgreSQL store tests: no /usr/lib/postgresql/*/bin/postgres.\n'
  printf '!!! Install it with: apt-get install postgresql\n'
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n'
fi

skip_browser=0
if [[ ! -x "$chromium_bin" ]]; then
  if [[ $ci == 1 ]]; then
    echo "chromium is required in CI (apt-get install chromium)" >&2
    exit 1
  fi
  skip_browser=1
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
  printf '!!! SKIPPING the headless-browser tests: %s not found.\n' "$chromium_bin"
  printf '!!! Install it with: apt-get install chromium\n'
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n'
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo doc -D warnings (no broken or private links in the API docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

say "installing the LeanEngine hook receiver (unmodified leanengine@3.8.0) for the hook tests"
(cd compat/hooks && npm ci --no-audit --no-fund --silent)

say "cargo test (unit + integration against the real binary)"
cargo test --workspace --locked

say "integration suites again, every server on PostgreSQL (one throw-away server per suite)"
CONFAB_TEST_STORE=postgres cargo test --locked -p confab-server \
  --test messages --test conversations --test session --test rest --test rest_more --test migrate \
  --test hooks_leanengine

say "integration suites again, every server a 3-node cluster (PostgreSQL + Redis) behind a round-robin balancer"
# Not all of rest_more: a silence set through one node reaches the others an event
# later, and its tests send right after. Its tests of what spans the nodes (stats,
# app-wide broadcasts: `every_node`) do run.
CONFAB_TEST_STORE=cluster cargo test --locked -p confab-server \
  --test messages --test conversations --test session --test rest --test signatures \
  --test metrics --test protobuf --test hostile --test reliability_crash --test tls \
  --test hooks_leanengine
CONFAB_TEST_STORE=cluster cargo test --locked -p confab-server --test rest_more -- every_node

export CONFAB_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/confab"

say "compatibility: unmodified leancloud-realtime@2.4.0 against confab"
bash compat/run.sh

say "compatibility again: every SDK suite against a 3-node cluster (PostgreSQL + Redis) behind a round-robin balancer"
CONFAB_COMPAT_CLUSTER=1 bash compat/run.sh

say "REST API: the Python SDK (leancloud 3.0.2) and schemathesis (docs/openapi.json) against the real binary"
if command -v python3 >/dev/null; then
  bash compat/rest/run.sh
elif [[ $ci == 1 ]]; then
  echo "python3 is required in CI for the REST suites" >&2
  exit 1
else
  printf '\n!!! SKIPPING the REST suites of the REST API: python3 not found.\n\n'
fi

say "JavaScript SDK: build, types, Node and browser suites"
SKIP_BROWSER=$skip_browser bash sdk/js/run-tests.sh

say "admin console: /console/ in headless Chromium against the real binary (compat/console)"
if [[ $skip_browser == 1 ]]; then
  printf '\n!!! SKIPPING the admin console browser test: %s not found (apt-get install chromium)\n\n' "$chromium_bin"
else
  CHROMIUM_BIN="$chromium_bin" bash compat/console/run.sh
fi

say "benchmarks: confab-bench smoke run (tiny sizes, debug build) against Confab, Socket.IO and the bare Node and Rust broadcasters"
# The reliability tests (SIGKILL cycles, slow consumers) ran with cargo test above.
(cd bench/peers && npm ci --no-audit --no-fund --silent)
cargo build --locked -p confab-bench
timeout 300 target/debug/confab-bench run --targets confab,socketio,bare,bare-rust \
  --confab-bin target/debug/confab --peers-dir bench/peers \
  --idle 300 --members 30 --pairs 3 --opens 300 --seconds 1 --warmup 0.3 \
  --out "$(mktemp -d)/bench-smoke.json"

say "benchmarks: the cluster smoke run (3 Confab nodes on PostgreSQL + Redis vs 3 Socket.IO processes with the Redis adapter)"
timeout 300 target/debug/confab-bench run --cluster --nodes 3 --targets confab,socketio \
  --scenarios idle,fanout,fanout-half,durable \
  --confab-bin target/debug/confab --peers-dir bench/peers \
  --idle 300 --members 30 --pairs 6 --pair-window 1 --seconds 1 --warmup 0.5 \
  --out "$(mktemp -d)/bench-cluster-smoke.json"

say "benchmarks: kill-a-node recovery on the cluster (500 tagged sessions over 3 nodes, one SIGKILLed: every one of its clients back in session elsewhere, none refused)"
timeout 120 target/debug/confab-bench run --cluster --nodes 3 --targets confab --scenarios failover \
  --confab-bin target/debug/confab --peers-dir bench/peers --failover-clients 500 --strict \
  --out "$(mktemp -d)/bench-failover-smoke.json"

say "fuzz: each cargo-fuzz target for a bounded time"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" timeout 900 bash fuzz/run.sh

say "every suite passed"
