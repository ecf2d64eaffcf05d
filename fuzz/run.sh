#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 20), one after the other, keeping the
# corpora in fuzz/corpus/<target>. Exits non-zero on the first crash; the crashing input is in
# fuzz/artifacts/<target>/.
#
#   bash fuzz/run.sh          # 20 s per target (what CI runs)
#   bash fuzz/run.sh 600      # 10 minutes per target
#   TARGETS="tokens id_token" bash fuzz/run.sh 60
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
# cargo-fuzz needs nightly-only flags; the stable toolchain accepts them with this.
export RUSTC_BOOTSTRAP=1
targets="${TARGETS:-$(cargo fuzz list)}"
cargo fuzz build -O
for t in $targets; do
  mkdir -p "corpus/$t" "seeds/$t"
  echo "==> fuzz $t for ${secs}s"
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::|INFO: Seed|#[0-9]+ +DONE|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)" || true
  if ls "artifacts/$t"/crash-* "artifacts/$t"/leak-* "artifacts/$t"/oom-* >/dev/null 2>&1; then
    echo "fuzz target $t found a failing input:" >&2
    ls "artifacts/$t" >&2
    exit 1
  fi
done
echo "fuzzing: no target found a failing input"
