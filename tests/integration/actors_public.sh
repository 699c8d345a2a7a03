#!/usr/bin/env bash
# actors_public.sh ACTORS_DIR: actors/ is built on libtroupe's public API
# only (DESIGN.md: daemon -> actors -> runtime). Its files include no
# header of runtime/'s layers ("task/task.h" and the like: the only quoted
# includes are the folder's own headers, actor_int.h and frame.h) and name
# no tr__ internal.
set -euo pipefail
root=${1:?usage: actors_public.sh ACTORS_DIR}
cd "$root"
bad=0
while IFS= read -r f; do
    while IFS= read -r line; do
        echo "$f: includes an internal header: $line"
        bad=1
    done < <(grep -E '^#include "' "$f" | grep -vE '^#include "(actor_int|frame)\.h"' || true)
    while IFS= read -r line; do
        echo "$f: names a runtime internal: $line"
        bad=1
    done < <(grep -nE '\btr__[a-z]' "$f" || true)
done < <(find . -name '*.c' -o -name '*.h')
if [ "$bad" -ne 0 ]; then
    exit 1
fi
echo "actors/: public headers only ($(find . -name '*.[ch]' | wc -l) files)"
