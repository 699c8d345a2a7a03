#!/usr/bin/env bash
# Installs what building and testing troupe needs on Debian 12 (bookworm):
# the toolchain, nng, protobuf-c, cmocka, valgrind, clang with its
# libFuzzer runtime (the fuzz step of .ci/run), openssl (the nodes'
# tls+tcp test makes its certificate with it), the daemon's libyaml
# (workload files), SQLite (the job store) and jansson (the CLI's --json),
# and task-spooler (the peer bench_daemon_exec compares against; its
# binary is tsp), all from Debian's own
# packages (see README "Dependencies"). Idempotent: when every package is
# already installed it changes nothing and does not touch the network.
# Waits (up to 5 minutes) for another apt that holds apt's or dpkg's lock.
# Runs as root, or through sudo when run by another user. apt never prompts.
set -euo pipefail

# cmake needs make, and gcc only recommends libc6-dev: both are named because
# of --no-install-recommends.
packages=(
    cmake make gcc libc6-dev pkg-config
    libnng-dev libprotobuf-c-dev protobuf-c-compiler libcmocka-dev libyaml-dev
    valgrind
    clang libclang-rt-14-dev
    openssl
    libsqlite3-dev libjansson-dev
    task-spooler
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    if [ "$status" != installed ]; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "debian-deps: all ${#packages[@]} packages already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "debian-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
fi

# On a fresh machine another apt (apt-daily, unattended-upgrades, a
# provisioner) may hold the locks. DPkg::Lock::Timeout makes apt-get wait
# up to lock_wait seconds for the dpkg lock, which install needs; update
# ignores it for the lock of the package lists (apt 2.6 fails at once
# there), so apt_update retries while another process holds that one.
lock_wait=300
apt_get=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout="$lock_wait")

# apt_update runs apt-get update, again every 5 s for at most lock_wait
# seconds while it fails because the lists lock is held.
apt_update() {
    local err rc deadline=$((SECONDS + lock_wait))
    err=$(mktemp)
    while :; do
        rc=0
        "${apt_get[@]}" update -q </dev/null 2>"$err" || rc=$?
        if [ "$rc" -eq 0 ] || ! grep -q 'lists/lock' "$err" || [ "$SECONDS" -ge "$deadline" ]; then
            cat "$err" >&2
            rm -f "$err"
            return "$rc"
        fi
        echo "debian-deps: $(grep -m1 'lists/lock' "$err"); retrying in 5 s" >&2
        sleep 5
    done
}

echo "debian-deps: installing ${missing[*]}"
apt_update
"${apt_get[@]}" install -y -q --no-install-recommends "${missing[@]}" </dev/null
