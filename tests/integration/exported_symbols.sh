#!/usr/bin/env bash
# Exported-symbol test (ctest packaging.exported_symbols): every dynamic
# symbol that libtroupe.so defines must start with tr_ (internals are hidden
# by -fvisibility=hidden; public functions carry TR_API) or troupe__v1__
# (the generated protobuf-c code of proto/, whose one copy libtroupe owns),
# apart from the linker's own, and the library must carry the expected
# SONAME.
#
# With a third argument, a regular expression, the library (another of
# ours: libtroupe-client.so) must export only names it matches, and none
# of the generated code (libtroupe's alone).
#
# Usage: exported_symbols.sh LIBTROUPE_SO EXPECTED_SONAME [ONLY_RE]
set -euo pipefail

lib=$1 want_soname=$2 only=${3:-}

for tool in nm readelf; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool not found"
        exit 77
    fi
done

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [ "$soname" != "$want_soname" ]; then
    echo "FAIL: SONAME of $lib is '$soname', want '$want_soname'" >&2
    exit 1
fi
echo "SONAME $soname"

# nm -D prints "VALUE TYPE NAME[@VERSION]"; keep the name.
syms=$(nm -D --defined-only "$lib" | awk '{ sub(/@.*/, "", $3); print $3 }')
if [ -n "$only" ]; then
    bad=$(printf '%s\n' "$syms" | grep -v -E "$only" |
        grep -v -x -E '_init|_fini|_edata|_end|__bss_start|__end__|_DYNAMIC|_GLOBAL_OFFSET_TABLE_|^$' || true)
    if [ -n "$bad" ]; then
        echo "FAIL: $lib exports symbols outside $only:" >&2
        printf '%s\n' "$bad" | sed 's/^/  /' >&2
        exit 1
    fi
    echo "$(printf '%s\n' "$syms" | grep -c -E "$only") exported symbols, all $only: OK"
    exit 0
fi
bad=$(printf '%s\n' "$syms" | grep -v -E '^(tr_|troupe__v1__|$)' |
    grep -v -x -E '_init|_fini|_edata|_end|__bss_start|__end__|_DYNAMIC|_GLOBAL_OFFSET_TABLE_' || true)
echo "$(printf '%s\n' "$syms" | grep -c '^tr_') exported tr_ symbols"
nproto=$(printf '%s\n' "$syms" | grep -c '^troupe__v1__' || true)
echo "$nproto exported troupe__v1__ symbols"
if [ "$nproto" -eq 0 ]; then
    echo "FAIL: $lib exports none of the generated troupe__v1__ descriptors" >&2
    exit 1
fi
if [ -n "$bad" ]; then
    echo "FAIL: $lib exports symbols outside the tr_ namespace:" >&2
    printf '%s\n' "$bad" | sed 's/^/  /' >&2
    exit 1
fi
echo "exported symbols: OK"
