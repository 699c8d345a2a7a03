#!/usr/bin/env bash
# abab.sh: compares two builds of the same benchmark, run alternately
# (A B A B ...), so that whatever else the machine does falls on both.
#
# usage: tests/bench/abab.sh OLD_BUILD NEW_BUILD BENCH PROCS [BENCH_ARGS...]
#   e.g. tests/bench/abab.sh /tmp/old-rel build-rel yield_storm 5 --workers 2 --runs 3
#
# Runs PROCS processes of each build, alternating, each printing its
# headline (the first JSON line: the median of its --runs). Then prints
# every figure, each build's median and range, and the verdict the issue
# uses: the new build is worse only when its median is below 0.95x the old
# median AND the two ranges do not overlap (for a figure where higher is
# better; pass --lower-is-better for times). Exits 1 on "worse", 2 on bad
# usage or a failed run.
set -euo pipefail

lower=0
if [[ ${1:-} == --lower-is-better ]]; then
    lower=1
    shift
fi
[[ $# -ge 4 ]] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
old=$1 new=$2 bench=$3 procs=$4
shift 4
unset TROUPE_SCHED TROUPE_WORKERS TROUPE_DETERMINISTIC

a=() b=()
for ((i = 1; i <= procs; i++)); do
    for side in old new; do
        dir=$old
        [[ $side == new ]] && dir=$new
        # The whole output first: head closing the pipe early would kill
        # the benchmark with SIGPIPE.
        out=$("$dir/tests/bench/bench_$bench" "$@" 2>/dev/null) || true
        v=$(head -n 1 <<<"$out" | sed -n 's/.*"value":\([^,]*\),.*/\1/p')
        if [[ -z $v ]]; then
            echo "abab: $side run $i of bench_$bench failed" >&2
            exit 2
        fi
        printf '%s %d: %s\n' "$side" "$i" "$v"
        if [[ $side == old ]]; then a+=("$v"); else b+=("$v"); fi
    done
done

python3 - "$lower" "${#a[@]}" "${a[@]}" "${b[@]}" <<'PY'
import statistics, sys
lower = sys.argv[1] == "1"
n = int(sys.argv[2])
a = [float(x) for x in sys.argv[3:3 + n]]
b = [float(x) for x in sys.argv[3 + n:]]
ma, mb = statistics.median(a), statistics.median(b)
print(f"old: median {ma:.6g} range [{min(a):.6g}, {max(a):.6g}] over {len(a)}")
print(f"new: median {mb:.6g} range [{min(b):.6g}, {max(b):.6g}] over {len(b)}")
ratio = (ma / mb) if lower else (mb / ma)
overlap = min(a) <= max(b) and min(b) <= max(a)
worse = ratio < 0.95 and not overlap
print(f"new/old: {ratio:.3f}x ({'higher' if not lower else 'lower'} is better); "
      f"ranges {'overlap' if overlap else 'do not overlap'}: {'WORSE' if worse else 'ok'}")
sys.exit(1 if worse else 0)
PY
