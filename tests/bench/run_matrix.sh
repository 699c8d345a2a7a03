#!/usr/bin/env bash
# run_matrix.sh: runs every benchmark on the three schedulers (rr, ws,
# hybrid) with --workers 2, plus spawn_join and skynet with --workers 1 on
# ws (their issue's targets are for one worker) and ping_pong --apart; then
# timers (1 and 2 ws workers), idle_memory and timer_latency (1 worker), and
# the actor benchmarks (actor_ping_pong, actor_create, fan_in; 2 ws workers).
# tcp_echo needs a server and a load process on separate cores:
# tests/bench/run_tcp_echo.sh.
# Prints each benchmark's JSON lines as they come, then a markdown table
# (bench | sched | workers | headline | peak RSS) to paste into README.md.
#
# usage: tests/bench/run_matrix.sh [BUILD_DIR] [BENCH_ARGS...]
#   BUILD_DIR   the build tree (default build)
#   BENCH_ARGS  passed to every benchmark, e.g. --runs 7
#
# The TROUPE_SCHED, TROUPE_WORKERS and TROUPE_DETERMINISTIC variables would
# override the flags, so they are unset here. Exits 1 if any benchmark
# failed (its self-check, or it did not run); the others still run.
set -euo pipefail

build=${1:-build}
if [[ $# -gt 0 ]]; then
    shift
fi
extra=("$@")
dir="$build/tests/bench"
if [[ ! -d $dir ]]; then
    echo "run_matrix.sh: no $dir (build first, or pass the build dir)" >&2
    exit 2
fi
unset TROUPE_SCHED TROUPE_WORKERS TROUPE_DETERMINISTIC

# Each row: bench name and its flags.
runs=()
for b in spawn_join skynet ping_pong yield_storm; do
    if [[ $b == spawn_join || $b == skynet ]]; then
        runs+=("$b --workers 1 --sched ws")
    fi
    for s in rr ws hybrid; do
        runs+=("$b --workers 2 --sched $s")
    done
    if [[ $b == ping_pong ]]; then
        runs+=("$b --workers 2 --apart")
    fi
done
# Issue #4's: timers on one and two workers, idle memory on one.
runs+=("timers --workers 1 --sched ws" "timers --workers 2 --sched ws" "idle_memory --workers 1 --sched ws")
# Issue #8's: a 1 ms sleeper beside a busy task on one worker.
runs+=("timer_latency --workers 1 --sched ws")
# The actors': ping-pong, create-use-stop and fan-in, on two ws workers.
runs+=("actor_ping_pong --workers 2 --sched ws" "actor_create --workers 2 --sched ws"
    "fan_in --workers 2 --sched ws")

# field LINE NAME: the value of a JSON field of our flat one-line objects.
field() {
    sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$1"
}

# human VALUE UNIT: a figure the way README.md writes them.
human() {
    awk -v v="$1" -v u="$2" 'BEGIN {
        if (u ~ /\/s$/) {
            if (v >= 1e6) { printf "%.2f M %s", v / 1e6, u }
            else if (v >= 1e3) { printf "%.1f k %s", v / 1e3, u }
            else { printf "%.0f %s", v, u }
        } else if (u == "B") {
            printf "%.0f MB", v / 1e6
        } else if (u == "ms") {
            printf "%.1f ms", v
        } else {
            printf "%g %s", v, u
        }
    }'
}

rows=()
failed=0
for r in "${runs[@]}"; do
    read -r -a words <<<"$r"
    name=${words[0]}
    exe="$dir/bench_$name"
    echo "# bench_$name ${words[*]:1} ${extra[*]}" >&2
    status=0
    out=$("$exe" "${words[@]:1}" "${extra[@]}") || status=$?
    if [[ -n $out ]]; then
        printf '%s\n' "$out"
    fi
    head=$(head -n 1 <<<"$out")
    wall=$(grep -m 1 '"metric":"wall"' <<<"$out" || true)
    rss=$(grep -m 1 '"metric":"peak_rss"' <<<"$out" || true)
    if [[ $status -ne 0 || -z $head ]]; then
        failed=1
        label=$name
        sched=$(sed -n 's/.*--sched \([a-z]*\).*/\1/p' <<<"$r")
        if [[ $r == *--apart* ]]; then
            label="$name (apart)"
            sched=rr
        fi
        workers=$(sed -n 's/.*--workers \([0-9]*\).*/\1/p' <<<"$r")
        rows+=("| $label | $sched | $workers | FAILED (exit $status) | |")
        continue
    fi
    label=$name
    if [[ $(field "$head" metric) == *_apart ]]; then
        label="$name (apart)"
    fi
    headline=$(human "$(field "$head" value)" "$(field "$head" unit)")
    if [[ -n $wall && $(field "$head" metric) != wall ]]; then
        headline="$headline ($(human "$(field "$wall" value)" ms))"
    fi
    if [[ $(field "$head" ok) != true ]]; then
        headline="$headline, self-check FAILED"
        failed=1
    fi
    peak=""
    if [[ -n $rss ]]; then
        peak=$(human "$(field "$rss" value)" B)
    fi
    rows+=("| $label | $(field "$head" sched) | $(field "$head" workers) | $headline | $peak |")
done

echo
echo "| bench | sched | workers | headline | peak RSS |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
exit "$failed"
