#!/usr/bin/env bash
# run_tcp_echo.sh: issue #4's TCP echo comparison. Each echo server in turn
# is started pinned to one core (taskset -c 0), the script waits until its
# port accepts connections, bench_tcp_echo_load (a separate process that
# does not use troupe) runs against it pinned to the other core (-c 1), and
# the server is stopped with SIGTERM and must exit 0. Prints the load
# generator's JSON lines after each run (each with "server": the label), then a
# markdown table and the ratio of each server's rate to libuv's (the issue's
# target: troupe on one worker >= 1.2x libuv measured in the same run).
#
# usage: tests/bench/run_tcp_echo.sh [options] [-- LOAD_ARGS...]
#   --build DIR        build tree (default build)
#   --port P           port the servers listen on (default 7878; must be free)
#   --workers N        troupe server's workers (default 1)
#   --sched S          troupe server's scheduler rr|ws|hybrid (default ws)
#   --servers LIST     default servers to run, comma-separated, from troupe
#                      and libuv (default troupe,libuv); one whose executable
#                      is not built is skipped with a note
#   --server LABEL CMD an extra server (repeatable): CMD is a shell command
#                      line in which {port} stands for the port, e.g.
#                      --server mine './my_server --port {port}'
#   --server-cpu C     core for the servers (default 0)
#   --load-cpu C       core for the load generator (default 1)
#   LOAD_ARGS          passed to bench_tcp_echo_load, e.g. --seconds 10
#                      --conns 64 --size 64 --warmup 1 (its defaults)
#
# The troupe server is BUILD/runtime/examples/echo_server --port P --workers
# N --sched S; libuv's is BUILD/tests/bench/uv_echo_server --port P (built
# when pkg-config finds libuv). TROUPE_SCHED, TROUPE_WORKERS and
# TROUPE_DETERMINISTIC are unset so that the flags decide. Without taskset or
# with fewer than two cores, everything runs unpinned (with a warning).
#
# Exit status: 0 when every server that ran passed (the load's self-check,
# the server's exit status 0 after SIGTERM); 1 when one failed; 2 for bad
# usage, a busy port, or when no server could be run.
set -euo pipefail

build=build
port=7878
workers=1
sched=ws
servers=troupe,libuv
server_cpu=0
load_cpu=1
extra_labels=()
extra_cmds=()
load_args=()

usage() {
    sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p;};}' "$0" >&2
}

while [[ $# -gt 0 ]]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --sched) sched=$2; shift 2 ;;
    --servers) servers=$2; shift 2 ;;
    --server)
        if [[ $# -lt 3 ]]; then usage; exit 2; fi
        extra_labels+=("$2"); extra_cmds+=("$3"); shift 3 ;;
    --server-cpu) server_cpu=$2; shift 2 ;;
    --load-cpu) load_cpu=$2; shift 2 ;;
    --) shift; load_args=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run_tcp_echo.sh: unknown option $1" >&2; usage; exit 2 ;;
    esac
done
if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    echo "run_tcp_echo.sh: bad port $port" >&2
    exit 2
fi

load="$build/tests/bench/bench_tcp_echo_load"
if [[ ! -x $load ]]; then
    echo "run_tcp_echo.sh: no $load (build the bench_tcp_echo_load target)" >&2
    exit 2
fi
unset TROUPE_SCHED TROUPE_WORKERS TROUPE_DETERMINISTIC

# Pinning.
pin_server=()
pin_load=()
if command -v taskset >/dev/null && (($(nproc) >= 2)); then
    pin_server=(taskset -c "$server_cpu")
    pin_load=(taskset -c "$load_cpu")
else
    echo "run_tcp_echo.sh: warning: no taskset or fewer than 2 cores: not pinning" >&2
fi

# The servers to run: label, sched and workers labels, command line.
labels=()
scheds=()
nworkers=()
cmds=()
IFS=, read -r -a wanted <<<"$servers"
for s in "${wanted[@]}"; do
    case $s in
    troupe)
        exe="$build/runtime/examples/echo_server"
        if [[ -x $exe ]]; then
            labels+=("troupe-$sched-$workers")
            scheds+=("$sched")
            nworkers+=("$workers")
            cmds+=("$(printf '%q' "$exe") --port {port} --workers $workers --sched $sched")
        else
            echo "run_tcp_echo.sh: note: no $exe (not built yet): troupe skipped" >&2
        fi
        ;;
    libuv)
        exe="$build/tests/bench/uv_echo_server"
        if [[ -x $exe ]]; then
            labels+=(libuv)
            scheds+=(none)
            nworkers+=(1)
            cmds+=("$(printf '%q' "$exe") --port {port}")
        else
            echo "run_tcp_echo.sh: note: no $exe (libuv not found at configure time): libuv skipped" >&2
        fi
        ;;
    "") ;;
    *) echo "run_tcp_echo.sh: unknown server $s (troupe, libuv; or use --server)" >&2; exit 2 ;;
    esac
done
for i in "${!extra_labels[@]}"; do
    labels+=("${extra_labels[$i]}")
    scheds+=(none)
    nworkers+=(1)
    cmds+=("${extra_cmds[$i]}")
done
if [[ ${#labels[@]} -eq 0 ]]; then
    echo "run_tcp_echo.sh: no server to run" >&2
    exit 2
fi

# port_open: whether something accepts connections on the port (one
# connect attempt, closed at once).
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# field LINE NAME: the value of a JSON field of our flat one-line objects.
field() {
    sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" <<<"$1"
}

server_pid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# stop_server PID: SIGTERM, then wait at most 10 s for it to exit (killed
# after that); sets server_rc to its exit status. Not in a subshell: only
# this shell can wait for its child.
server_rc=0
stop_server() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "run_tcp_echo.sh: server did not exit within 10 s of SIGTERM: killed" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    server_rc=0
    wait "$pid" || server_rc=$?
}

# cpu_ticks PID: utime + stime of a process, in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || true
}

# ms VALUE_US: microseconds as milliseconds with three decimals.
ms() {
    awk -v v="$1" 'BEGIN { printf "%.3f", v / 1e3 }'
}

rows=()
rates=()
failed=0
for i in "${!labels[@]}"; do
    label=${labels[$i]}
    cmd=${cmds[$i]//\{port\}/$port}
    echo "# $label: ${pin_server[*]} $cmd" >&2
    if port_open; then
        echo "run_tcp_echo.sh: port $port already accepts connections: pick another with --port" >&2
        exit 2
    fi
    # exec: the shell becomes the server, so $! is the server's pid.
    "${pin_server[@]}" bash -c "exec $cmd" &
    server_pid=$!

    # Wait until the port accepts connections: at most 200 attempts 25 ms
    # apart (5 s), giving up early if the server died.
    up=0
    for ((k = 0; k < 200; k++)); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        if port_open; then
            up=1
            break
        fi
        sleep 0.025
    done
    if [[ $up -ne 1 ]]; then
        stop_server "$server_pid"
        server_pid=""
        echo "run_tcp_echo.sh: $label never accepted connections on port $port (exit $server_rc)" >&2
        rows+=("| $label | FAILED (did not start) | | | | |")
        rates+=("")
        failed=1
        continue
    fi

    status=0
    cpu0=$(cpu_ticks "$server_pid")
    t0=$(date +%s.%N)
    out=$("${pin_load[@]}" "$load" --port "$port" --label "$label" --sched "${scheds[$i]}" \
        --workers "${nworkers[$i]}" "${load_args[@]}") || status=$?
    cpu1=$(cpu_ticks "$server_pid")
    t1=$(date +%s.%N)
    # The server's CPU use (user + system) over the load run, in % of one
    # core: under 100 means it had headroom and the load generator was the
    # limit.
    cpu_pct=$(awk -v a="$cpu0" -v b="$cpu1" -v s="$t0" -v e="$t1" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (a != "" && b != "" && e > s) printf "%.0f", (b - a) / hz / (e - s) * 100 }')
    stop_server "$server_pid"
    server_pid=""
    if [[ -n $out ]]; then
        printf '%s\n' "$out"
    fi

    head=$(head -n 1 <<<"$out")
    p50=$(grep -m 1 '"metric":"latency_p50"' <<<"$out" || true)
    p99=$(grep -m 1 '"metric":"latency_p99"' <<<"$out" || true)
    note=""
    if [[ $status -ne 0 || -z $head || $(field "$head" ok) != true ]]; then
        note="load self-check FAILED (exit $status)"
        failed=1
    fi
    if [[ $server_rc -ne 0 ]]; then
        note="${note:+$note; }server exit $server_rc after SIGTERM"
        failed=1
    fi
    rate=""
    if [[ -n $head ]]; then
        rate=$(field "$head" value)
    fi
    rates+=("$rate")
    r_k=$(awk -v v="$rate" 'BEGIN { if (v != "") printf "%.1f k", v / 1e3 }')
    p50_ms=""
    p99_ms=""
    if [[ -n $p50 ]]; then p50_ms=$(ms "$(field "$p50" value)"); fi
    if [[ -n $p99 ]]; then p99_ms=$(ms "$(field "$p99" value)"); fi
    rows+=("| $label | $r_k | $p50_ms | $p99_ms | $cpu_pct | $note |")
done

echo
echo "| server | msgs/s | p50 (ms) | p99 (ms) | server CPU % | notes |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"

# Each server's rate against libuv's from this run.
base=""
for i in "${!labels[@]}"; do
    if [[ ${labels[$i]} == libuv ]]; then
        base=${rates[$i]}
    fi
done
if [[ -n $base ]]; then
    echo
    for i in "${!labels[@]}"; do
        if [[ ${labels[$i]} != libuv && -n ${rates[$i]} ]]; then
            awk -v l="${labels[$i]}" -v r="${rates[$i]}" -v b="$base" \
                'BEGIN { if (b > 0) printf "%s / libuv: %.2fx (issue #4 target: >= 1.2x)\n", l, r / b }'
        fi
    done
fi
exit "$failed"
