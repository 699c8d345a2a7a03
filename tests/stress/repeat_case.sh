#!/usr/bin/env bash
# repeat_case.sh N EXE PATTERN [--load K]: runs the test cases of one cmocka
# executable that match PATTERN (TU_FILTER, cmocka's wildcards) N times
# while K busy spinners (default: one per CPU) load the machine, and prints
# "N runs, K failed" with the output of every failed run. For a flake's own
# regression test, which must hold up far more often than the whole suite
# can be run.
#   tests/stress/repeat_case.sh 1000 build/tests/runtime/test_runtime_sched '*counters_lag*'
set -uo pipefail
[ $# -ge 3 ] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
runs=$1 exe=$2 pattern=$3
shift 3
load=$(nproc)
[ "${1:-}" = --load ] && load=$2
[ -x "$exe" ] || { echo "repeat_case: $exe is not an executable" >&2; exit 2; }
. "$(dirname "$0")/load.sh"
load_start "$load"
log=$(mktemp)
failed=0 start=$(date +%s)
for ((r = 1; r <= runs; r++)); do
    if ! TU_FILTER="$pattern" timeout 600 "$exe" >"$log" 2>&1; then
        failed=$((failed + 1))
        printf '\n==== run %d failed ====\n' "$r"
        cat "$log"
    fi
    if ! grep -q 'test(s) run' "$log" || grep -q 'Running 0 test' "$log"; then
        echo "repeat_case: no test matched $pattern" >&2
        rm -f "$log"
        exit 2
    fi
done
rm -f "$log"
printf '%d runs, %d failed (%s %s, %ss, %d spinners)\n' "$runs" "$failed" "$(basename "$exe")" \
    "$pattern" "$(($(date +%s) - start))" "$load"
[ "$failed" -eq 0 ]
