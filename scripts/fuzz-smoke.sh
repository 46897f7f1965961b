#!/usr/bin/env bash
# Runs every fuzz target under fuzz/ for SECONDS (default 20, at most 30) with cargo +nightly fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
[ "$secs" -gt 30 ] && secs=30
if [ ! -f fuzz/Cargo.toml ]; then echo "no fuzz package"; exit 0; fi
targets=$(cd fuzz && cargo +nightly fuzz list)
for t in $targets; do
  echo "--- fuzz $t (${secs}s)"
  (cd fuzz && cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -seed=1 -rss_limit_mb=2048 2>&1 | tail -3)
done
