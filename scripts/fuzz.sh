#!/usr/bin/env bash
# A fuzz campaign of one target on the stable toolchain:
#   scripts/fuzz.sh TARGET [RUNS] [libFuzzer options...]
# e.g. `nice scripts/fuzz.sh batch_line 1000000`. Targets: `cargo run -q -p berth-fuzz --example seeds`
# lists them (and writes their seeds to fuzz/corpus/). Without a sanitizer (stable rustc cannot
# build one; `RUSTC_BOOTSTRAP=1` only unlocks cargo-fuzz's -Z flags), a finding is a panic, a
# hang past -timeout, or an allocation past the target's memory budget (berth_fuzz::budget).
# Crashers land in fuzz/artifacts/TARGET/; keep them in fuzz/regressions/TARGET/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET [RUNS] [libFuzzer options...]}
runs=${2:-1000000}
shift $(( $# >= 2 ? 2 : 1 ))
root=$(pwd)
cargo run -q -p berth-fuzz --example seeds >/dev/null
mkdir -p "fuzz/regressions/$target"
RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --features libfuzzer "$target" \
  "$root/fuzz/corpus/$target" "$root/fuzz/regressions/$target" -- \
  -runs="$runs" -timeout=1 -rss_limit_mb=2048 -print_final_stats=1 "$@"
