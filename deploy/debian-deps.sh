#!/usr/bin/env bash
# Installs what building and testing troupe needs on Debian 12 (bookworm):
# the toolchain, nng, protobuf-c, cmocka and valgrind, all from Debian's own
# packages (see README "Dependencies"). Idempotent: when every package is
# already installed it changes nothing and does not touch the network.
# Runs as root, or through sudo when run by another user. apt never prompts.
set -euo pipefail

# cmake needs make, and gcc only recommends libc6-dev: both are named because
# of --no-install-recommends.
packages=(
    cmake make gcc libc6-dev pkg-config
    libnng-dev libprotobuf-c-dev protobuf-c-compiler libcmocka-dev
    valgrind
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

echo "debian-deps: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
