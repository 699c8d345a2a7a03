# load.sh: sourced by the stress scripts. load_start K starts K busy
# spinners (shell loops, each bounded by `timeout` to 6 hours) and arranges
# for load_stop to kill them when the script exits, however it exits.
load_pids=()
load_stop() {
    for p in "${load_pids[@]}"; do
        kill "$p" 2>/dev/null
    done
    wait "${load_pids[@]}" 2>/dev/null
    load_pids=()
}
load_start() {
    trap load_stop EXIT
    trap 'exit 130' INT TERM
    for ((i = 0; i < $1; i++)); do
        timeout 21600 sh -c 'while :; do :; done' >/dev/null 2>&1 &
        load_pids+=($!)
    done
}
