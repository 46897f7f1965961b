#!/usr/bin/env bash
# End-to-end restart measurement of the `spate` binary (issue 5), the process-level twin of the
# Spark harness's task (c) (../shared/bench/spark, run_crash.py):
#
#   spate feed --ack (finite corpus, paced)  <--TCP-->  spate wordcount --socket --ack
#                                                         --checkpoint DIR --batch 1s --output OUT
#
# The job is killed with SIGKILL KILLS times, each time 3.0-5.9 s (seeded) after its first batch,
# and restarted at once with the identical command (recovery through get_or_create). The last
# incarnation runs until the feeder has every line acknowledged, then gets SIGTERM (graceful stop).
#
# Measured per restart, from the spawn of the process (bash $EPOCHREALTIME just before exec) to:
#   * the first completed batch  = the first `batch <ms> ms: ...` status line on stderr
#     (stderr lines are timestamped as they arrive);
#   * the first batch newer than the spawn (batch time > spawn time: the first timer-generated
#     batch, which holds data received after the restart).
# Checks: the feeder's accounting (stats JSON: complete, resume_below_ack, resent, connections) and
# an independent word count of the --output files against the corpus (`wc -w` total and per word).
#
# Usage: benches/recovery/restart.sh          (after `cargo build --release -p spate-cli`)
# Environment: LINES (200000), RATE (5000 lines/s), KILLS (5), SEED (1, kill times), BATCH (1s),
#              WORK (target/tmp/recovery-restart, wiped first), SPATE_BIN (target/release/spate).
# Exit status: 0 if the feed completed, no acknowledged line was lost and the counts match.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${SPATE_BIN:-$ROOT/target/release/spate}
LINES=${LINES:-200000}
RATE=${RATE:-5000}
KILLS=${KILLS:-5}
SEED=${SEED:-1}
BATCH=${BATCH:-1s}
WORK=${WORK:-$ROOT/target/tmp/recovery-restart}

[[ -x $BIN ]] || { echo "no $BIN: run cargo build --release -p spate-cli" >&2; exit 2; }
rm -rf "$WORK"
mkdir -p "$WORK/out"
CKPT=$WORK/ckpt
CORPUS=$WORK/corpus.txt
RANDOM=$SEED

FEED_PID=
JOB_PID=
cleanup() {
    [[ -n $JOB_PID ]] && kill -9 "$JOB_PID" 2>/dev/null || true
    [[ -n $FEED_PID ]] && kill "$FEED_PID" 2>/dev/null || true
}
trap cleanup EXIT

now_ms() { local t=$EPOCHREALTIME; echo $(( ${t%.*} * 1000 + 10#${t#*.} / 1000 )); }

# Prefixes every line of stdin with the arrival time in ms since the epoch.
stamp() { local l t; while IFS= read -r l; do t=$EPOCHREALTIME; printf '%d %s\n' $(( ${t%.*} * 1000 + 10#${t#*.} / 1000 )) "$l"; done; }

"$BIN" gen words --lines "$LINES" --seed 2 --out "$CORPUS"
WORDS=$(wc -w < "$CORPUS")
echo "corpus: $LINES lines, $WORDS words, $(wc -c < "$CORPUS") bytes ($CORPUS)"

"$BIN" feed --listen 127.0.0.1:0 --file "$CORPUS" --rate "$RATE" --ack --duration 600s \
    --progress-secs 0 --stats "$WORK/feed-stats.json" > "$WORK/feed.out" 2> "$WORK/feed.err" &
FEED_PID=$!
ADDR=
for _ in $(seq 1 500); do
    ADDR=$(sed -n 's/^listening on //p' "$WORK/feed.err" | head -1)
    [[ -n $ADDR ]] && break
    sleep 0.01
done
[[ -n $ADDR ]] || { echo "feeder did not start" >&2; cat "$WORK/feed.err" >&2; exit 2; }
echo "feeder: $ADDR, $RATE lines/s, ack mode"

# spawn <run>: starts the job, sets JOB_PID and SPAWN_MS; stderr -> $WORK/run<run>.err (stamped).
spawn() {
    local err=$WORK/run$1.err
    SPAWN_MS=$(now_ms)
    "$BIN" wordcount --socket "$ADDR" --ack --checkpoint "$CKPT" --batch "$BATCH" \
        --output "$WORK/out" --print 0 > /dev/null 2> >(stamp > "$err") &
    JOB_PID=$!
}

# first_batch <run> <min batch ms>: prints "<arrival ms> <batch ms>" of the first status line whose
# batch time is >= min, waiting up to 60 s; empty on timeout.
first_batch() {
    local err=$WORK/run$1.err l
    for _ in $(seq 1 6000); do
        l=$(awk -v min="$2" '$2 == "batch" && $3 + 0 >= min { print $1, $3; exit }' "$err" 2>/dev/null || true)
        [[ -n $l ]] && { echo "$l"; return; }
        sleep 0.01
    done
}

declare -a FIRST NEW
for run in $(seq 0 "$KILLS"); do
    spawn "$run"
    fb=$(first_batch "$run" 0)
    [[ -n $fb ]] || { echo "run $run: no batch within 60 s" >&2; cat "$WORK/run$run.err" >&2; exit 1; }
    first=$(( ${fb%% *} - SPAWN_MS ))
    nb=$(first_batch "$run" $(( SPAWN_MS + 1 )))
    new=$(( ${nb%% *} - SPAWN_MS ))
    restart_line=$(grep -m1 'spate: restart:' "$WORK/run$run.err" | cut -d' ' -f2- || true)
    if (( run == 0 )); then
        echo "fresh start: first batch ${first} ms after spawn"
        FRESH=$first
    else
        FIRST+=("$first")
        NEW+=("$new")
        echo "restart $run: first batch ${first} ms, first new batch ${new} ms after spawn | ${restart_line#spate: }"
    fi
    if (( run < KILLS )); then
        sleep "$(( 3 + RANDOM % 3 )).$(( RANDOM % 10 ))"
        kill -9 "$JOB_PID"
        wait "$JOB_PID" 2>/dev/null || true
        JOB_PID=
    fi
done

# Last incarnation: wait for the feeder to finish (every line acknowledged), then stop gracefully.
wait "$FEED_PID" || echo "feeder exited with $?" >&2
FEED_PID=
sleep 1
t0=$(now_ms)
kill -TERM "$JOB_PID"
wait "$JOB_PID" || echo "job exited with $?" >&2
JOB_PID=
STOP_MS=$(( $(now_ms) - t0 ))
sleep 0.2
tail -1 "$WORK/run$KILLS.err" | cut -d' ' -f2-

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
echo "restart -> first completed batch (ms): ${FIRST[*]}; median $(median "${FIRST[@]}")"
echo "restart -> first batch newer than the spawn (ms): ${NEW[*]}; median $(median "${NEW[@]}")"
echo "fresh start -> first batch: ${FRESH} ms; graceful stop (SIGTERM -> exit): ${STOP_MS} ms"

echo
echo "feeder: $(jq -c '{sent, transmissions, resent, acked, connections, resume_below_ack, ack_regressions, complete, elapsed_secs}' "$WORK/feed-stats.json")"
ok=1
[[ $(jq -r .complete "$WORK/feed-stats.json") == true ]] || { echo "FAIL: feed not complete"; ok=0; }
[[ $(jq -r .resume_below_ack "$WORK/feed-stats.json") == 0 ]] || { echo "FAIL: acknowledged lines lost"; ok=0; }

# Independent check: counts from the output files vs the corpus.
shopt -s nullglob
files=("$WORK"/out/wordcount-*.txt)
got=$(cat "${files[@]}" | awk -F'\t' '{ s += $2 } END { print s + 0 }')
echo "output: ${#files[@]} batch files, $got words counted; corpus (wc -w): $WORDS"
awk -F'\t' '{ c[$1] += $2 } END { for (w in c) print w, c[w] }' "${files[@]}" | sort > "$WORK/got.txt"
tr -s ' \t' '\n\n' < "$CORPUS" | grep -v '^$' | sort | uniq -c | awk '{ print $2, $1 }' | sort > "$WORK/want.txt"
join -a1 -a2 -e0 -o 0,1.2,2.2 "$WORK/got.txt" "$WORK/want.txt" \
    | awk '$2 > $3 { over += $2 - $3; nw++ } $2 < $3 { under += $3 - $2; nw++ }
           END { printf "per word: %d words differ, %d counted too often (duplicates), %d missing (lost)\n", nw, over, under; exit (nw > 0) }' \
    || ok=0
(( got == WORDS )) || { echo "FAIL: $got != $WORDS"; ok=0; }
(( ok )) && echo "OK: exactly once (no lost, no duplicated word)"
(( ok ))
