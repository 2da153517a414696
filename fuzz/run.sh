#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time on the committed corpus.
#   fuzz/run.sh            # 20 s per target (CI)
#   FUZZ_SECONDS=600 fuzz/run.sh json_v2_decode
# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP=1 enables them on the stable
# toolchain for this script only. New corpus entries land in a scratch copy, so the
# committed corpus stays small; crashes are written to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-20}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(json_v2_decode protobuf_decode where_query config_parse attributes_update)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  scratch="$(mktemp -d)"
  cp -r "corpus/$t/." "$scratch/"
  echo "==== fuzzing $t for ${seconds}s"
  cargo fuzz run -O "$t" "$scratch" -- -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 2>&1 | tail -n 3
  rm -rf "$scratch"
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
