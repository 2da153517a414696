#!/usr/bin/env bash
# The REST API against the real confab binary, with two PyPI packages installed by pip
# into a venv (compat/rest/.venv, versions pinned below):
#   1. LeanCloud's unmodified Python SDK (`leancloud`), whose realtime helpers call the
#      legacy /1.1/rtm endpoints and whose Conversation class writes _Conversation through
#      the storage API (python_sdk.py);
#   2. schemathesis: requests generated from docs/openapi.json; every answer must be no
#      5xx, a documented status, JSON, and match its documented schema. Bounded: a few
#      examples per operation and --max-time. Three generated cases in four are pointed at
#      conversations and messages that exist (seed.py, schemathesis_hooks.py), so they get
#      past the 404 of a random id into each operation's own checks.
#
# Server binary: $CONFAB_BIN, else target/debug/confab. CONFAB_COMPAT_CLUSTER=1: a 3-node cluster
# behind a round-robin balancer instead of one server (compat/lib/cluster-serve.mjs).
set -euo pipefail
cd "$(dirname "$0")/../.."

bin="${CONFAB_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/confab}"
[[ -x "$bin" ]] || cargo build --locked -p confab-server
venv=compat/rest/.venv
if [[ ! -x "$venv/bin/schemathesis" ]] || ! "$venv/bin/python" -c 'import leancloud' 2>/dev/null; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 needs its venv module.
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$venv"
      python3 -m venv "$venv"
    else
      echo "python3 -m venv does not work: install python3-venv" >&2
      exit 1
    fi
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5' 'leancloud==3.0.2'
fi

work=$(mktemp -d)
pid=""
cleanup() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/confab.toml" <<'TOML'
[[apps]]
id = "schema-app"
key = "schema-key"
master_key = "schema-master"
[[apps]]
id = "python-app"
key = "python-key"
master_key = "python-master"
TOML
if [[ "${CONFAB_COMPAT_CLUSTER:-}" =~ ^(1|true|yes|on)$ ]]; then
  # Three nodes on a throw-away PostgreSQL and Redis behind a round-robin balancer (see
  # compat/README.md, cluster mode); the launcher stops everything when killed or when we are gone,
  # and exits as soon as a node dies.
  CONFAB_BIN="$bin" node compat/lib/cluster-serve.mjs --for $$ --config "$work/confab.toml" \
    > "$work/stdout" 2> "$work/server.log" &
  pid=$!
  wait_steps=1200
else
  "$bin" serve --config "$work/confab.toml" --listen 127.0.0.1:0 --data-dir "$work/data" \
    > "$work/stdout" 2> "$work/server.log" &
  pid=$!
  wait_steps=100
fi
for _ in $(seq "$wait_steps"); do
  grep -q '^listening on ' "$work/stdout" 2>/dev/null && break
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$work/stdout" | head -1)
[[ -n "$url" ]] || { cat "$work/server.log"; echo "confab did not start" >&2; exit 1; }

# Real data (conversations of every kind with messages), so generated requests also
# reach existing conversations: schemathesis_hooks.py points most generated cases at it.
seed=$(python3 compat/rest/seed.py "$url")

echo "== LeanCloud's Python SDK (leancloud 3.0.2) =="
"$venv/bin/python" compat/rest/python_sdk.py "$url" python-app python-master

echo "== schemathesis with docs/openapi.json =="
status=0
# One worker: CPython 3.11's ast module can fail when threads parse at once
# ("AST constructor recursion depth mismatch"), which schemathesis does with more.
CONFAB_SEED="$seed" SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=compat/rest \
  "$venv/bin/schemathesis" run docs/openapi.json --url "$url" \
  -H 'X-LC-Id: schema-app' -H 'X-LC-Key: schema-master,master' \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing --max-examples "${SCHEMATHESIS_EXAMPLES:-8}" \
  --max-time "${SCHEMATHESIS_SECONDS:-120}" --seed 1 --workers 1 --suppress-health-check all \
  --request-timeout 10 || status=$?
if [[ $status != 0 ]]; then
  echo "---- server log (tail)" >&2
  tail -50 "$work/server.log" >&2
fi
# The server survived everything it was sent.
kill -0 "$pid"
exit $status
