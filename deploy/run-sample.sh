#!/usr/bin/env bash
# run-sample.sh [BUILD_DIR [WORKLOAD]]: the README's run command. Starts
# trouped on its embedded defaults (an ephemeral state directory, SQLite, a
# private ipc socket), runs a sample workload with `troupe run` (default
# deploy/examples/pipeline.yaml: a build-and-test pipeline), showing each
# job as it ends, then stops the daemon (SIGTERM) and waits for it. Exits
# with troupe's status: 0 when every job succeeded. Run from the repository
# root after the build.
set -euo pipefail

build=${1:-build}
workload=${2:-deploy/examples/pipeline.yaml}
trouped="$build/daemon/trouped"
troupe="$build/daemon/troupe"
for b in "$trouped" "$troupe"; do
    if [ ! -x "$b" ]; then
        echo "run-sample: $b is missing: build first (cmake --build $build)" >&2
        exit 2
    fi
done

dir=$(mktemp -d /tmp/troupe-sample.XXXXXX)
url="ipc://$dir/trouped.sock"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

# trouped says "TROUPED READY <url>" on stdout once it listens: read that
# line (no sleeping), keeping the pipe open so that it can write on.
exec {out}< <(exec "$trouped" --ephemeral --listen "$url" 2>"$dir/trouped.log")
pid=$!
if ! read -r -t 30 -u "$out" word1 word2 ready_url || [ "$word1 $word2" != "TROUPED READY" ]; then
    echo "run-sample: trouped did not start; its log:" >&2
    cat "$dir/trouped.log" >&2 || true
    exit 1
fi
echo "trouped is up at $ready_url (an ephemeral state directory, removed when it stops)"

rc=0
"$troupe" --url "$ready_url" run "$workload" || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "run-sample: the daemon's log:" >&2
    cat "$dir/trouped.log" >&2 || true
fi

kill -TERM "$pid"
wait "$pid" || true
pid=""
echo "trouped stopped; troupe run exited $rc"
exit "$rc"
