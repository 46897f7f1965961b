#!/usr/bin/env bash
# Profile spate wordcount under the comparison's load with perf (the hot spots quoted in
# docs/performance.md, "Side by side with Spark").
#   benches/compare/profile.sh [stateless|stateful] [RATE lines/s] [SECONDS]
# Needs: perf, a release spate (SPATE_BIN or benches/compare/.bin/spate or target/release/spate),
# the cyclic corpus (benches/compare/.work/corpus_cyclic_500k.txt, made by `run` or here).
# Output: benches/compare/.runs/profile-<mode>/{perf.data,report.txt}
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:-stateless}
rate=${2:-2000000}
secs=${3:-8}
spate=${SPATE_BIN:-}
[ -z "$spate" ] && for c in "$here/.bin/spate" "$here/../../target/release/spate"; do [ -x "$c" ] && { spate=$c; break; }; done
[ -n "$spate" ] || { echo "no spate binary (set SPATE_BIN)"; exit 2; }
out="$here/.runs/profile-$mode"
rm -rf "$out"; mkdir -p "$out"
corpus="$here/.work/corpus_cyclic_500k.txt"
[ -f "$corpus" ] || { mkdir -p "$here/.work"; "$spate" gen words --lines 500000 --seed 1 --out "$corpus"; }
"$spate" feed --listen 127.0.0.1:0 --file "$corpus" --cycle --rate "$rate" --duration "$((secs + 4))s" \
  --progress-secs 0 --stats "$out/feed.json" > /dev/null 2> "$out/feed.log" &
feed=$!
addr=""
for _ in $(seq 100); do addr=$(sed -n 's/^listening on //p' "$out/feed.log"); [ -n "$addr" ] && break; sleep 0.05; done
extra=()
[ "$mode" = stateful ] && extra=(--checkpoint "$out/ckpt")
"$spate" wordcount --socket "$addr" --batch 1s --print 0 --output "$out/out" "${extra[@]}" 2> "$out/wordcount.log" &
wc=$!
sleep 2
perf record -F 499 -g -o "$out/perf.data" -p "$wc" -- sleep "$secs" 2> "$out/perf-record.log" || true
kill -TERM "$wc" 2>/dev/null || true
wait "$wc" || true
wait "$feed" || true
perf report -i "$out/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^$' | head -80 > "$out/report.txt" || true
perf report -i "$out/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep '%' | head -20 > "$out/threads.txt" || true
echo "== threads (comm)"; cat "$out/threads.txt"
echo "== top symbols"; grep -E '^ +[0-9]' "$out/report.txt" | head -30
echo "== batches"; grep '^batch' "$out/wordcount.log" | tail -4
