#!/usr/bin/env bash
# under_load.sh N [options] [-- extra ctest args]: runs the ctest suite N
# times while a competing load we own keeps every CPU busy, as CI's machine
# may be, and prints "N runs, K failed" with the log of every failure.
#
#   --build DIR   build tree to test (default: build)
#   -j J          ctest parallelism (default: 2)
#   -L LABEL      only tests with this label (e.g. concurrency under TSan)
#   -R REGEX      only tests matching REGEX
#   --load K      busy spinners to run beside the suite (default: one per CPU)
#   --logs DIR    where each failed run's log is kept (default: a temp dir)
#
# The load is bounded: each spinner is a shell loop under `timeout`, killed
# when the script ends whatever the outcome. Exit status: 0 when every run
# passed, 1 otherwise, 2 on bad usage.
set -uo pipefail

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
runs=$1
shift
case $runs in '' | *[!0-9]*) usage ;; esac
build=build jobs=2 label="" regex="" load=$(nproc) logs=""
extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    -j*) jobs=${1#-j}; shift ;;
    -L) label=$2; shift 2 ;;
    -R) regex=$2; shift 2 ;;
    --load) load=$2; shift 2 ;;
    --logs) logs=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) usage ;;
    esac
done
[ -f "$build/CTestTestfile.cmake" ] || {
    echo "under_load: $build is not a configured build tree (cmake -S . -B $build && cmake --build $build)" >&2
    exit 2
}
[ -n "$logs" ] || logs=$(mktemp -d /tmp/under_load.XXXXXX)
mkdir -p "$logs"

. "$(dirname "$0")/load.sh"
load_start "$load"

args=(--test-dir "$build" -j"$jobs" --timeout 600 --output-on-failure)
[ -n "$label" ] && args+=(-L "$label")
[ -n "$regex" ] && args+=(-R "$regex")
args+=("${extra[@]}")

failed=0
start=$(date +%s)
for ((r = 1; r <= runs; r++)); do
    log="$logs/run-$r.log"
    if ctest "${args[@]}" >"$log" 2>&1; then
        rm -f "$log"
        printf 'run %d/%d: ok\n' "$r" "$runs"
    else
        failed=$((failed + 1))
        names=$(sed -n 's/^[[:space:]]*[0-9]* - \(.*\) (.*)$/\1/p' "$log" | tr '\n' ' ')
        printf 'run %d/%d: FAILED %s(log: %s)\n' "$r" "$runs" "$names" "$log"
    fi
done
load_stop

printf '\n%d runs, %d failed (%ss, %d spinners, ctest -j%s%s%s, %s)\n' "$runs" "$failed" \
    "$(($(date +%s) - start))" "$load" "$jobs" "${label:+ -L $label}" "${regex:+ -R $regex}" "$build"
if [ "$failed" -gt 0 ]; then
    for f in "$logs"/run-*.log; do
        printf '\n==== %s ====\n' "$f"
        cat "$f"
    done
    exit 1
fi
exit 0
