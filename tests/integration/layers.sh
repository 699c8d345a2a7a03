#!/usr/bin/env bash
# layers.sh RUNTIME_DIR: checks the layer rule of README's Architecture on
# every source of libtroupe. Layers, bottom up:
#
#   base -> task -> sched -> exec -> reactor -> io, fs, sync
#
# A file in runtime/<layer>/ includes ("...") its own layer's header and the
# headers of the layers below it, plus these named back-edges, from .c files
# only (a layer header never includes a layer above it):
#   task  -> sched   a wake, start or yield pushes to the scheduler
#   task  -> exec    a task runs in a worker; a start or cancel from outside
#                    is a command on the executor's inbox
#   sched -> exec    inject (overflow), notify parked workers, unpark
#   exec  -> reactor park: the driver waits in the reactor's backend
# io, fs and sync sit side by side on top; fs may use io (the blocking pool).
# Examples use public headers only. Also: every cross-file prototype lives
# in a header (no "... TR__HIDDEN;" declaration in a .c file), and every
# layer folder has its one header, which states what it may include.
#
# Struct fields: no file outside a layer names the fields of that layer's
# structs; it goes through the accessors its header offers. Checked for
# the runtime and worker structs (exec/: r_*, w_*), the task slot (task/:
# s_word, s_spec, s_result, s_join_*, s_polls, s_last_poll_ms; s_next is
# the link of the queue holding the slot, so sched/ may use it) and the
# reactor (reactor/: rx_*, and the registration tr_io's io_*).
set -euo pipefail
root=${1:?usage: layers.sh RUNTIME_DIR}
cd "$root"

declare -A below=(
    [base]=""
    [task]="base"
    [sched]="base task"
    [exec]="base task sched"
    [reactor]="base task sched exec"
    [io]="base task sched exec reactor"
    [fs]="base task sched exec reactor io"
    [sync]="base task sched exec reactor"
    [examples]=""
)
declare -A back=(
    [task]="sched exec"
    [sched]="exec"
    [exec]="reactor"
)

fail=0
bad() {
    echo "layers: $*" >&2
    fail=1
}

for dir in */; do
    layer=${dir%/}
    [ "$layer" = include ] && continue
    if [ -z "${below[$layer]+set}" ]; then
        bad "runtime/$layer/: a folder that is no layer (add it to README's Architecture and here)"
        continue
    fi
    if [ "$layer" != examples ]; then
        h="$layer/$layer.h"
        if [ ! -f "$h" ]; then
            bad "runtime/$h: missing (each layer has one internal header)"
        elif ! grep -q "may include" "$h"; then
            bad "runtime/$h: does not say which layer headers it may include"
        fi
    fi
    while IFS= read -r f; do
        is_header=0
        case $f in *.h) is_header=1 ;; esac
        while IFS=: read -r line inc; do
            target=${inc%%/*}
            if [ "$target" = "$inc" ]; then
                bad "runtime/$f:$line: #include \"$inc\" names no layer (write \"<layer>/<layer>.h\")"
                continue
            fi
            if [ "$inc" != "$target/$target.h" ]; then
                bad "runtime/$f:$line: #include \"$inc\": a layer is reached through its one header"
                continue
            fi
            [ "$target" = "$layer" ] && continue
            ok=0
            for l in ${below[$layer]}; do
                [ "$l" = "$target" ] && ok=1
            done
            if [ $ok -eq 0 ] && [ $is_header -eq 0 ]; then
                for l in ${back[$layer]:-}; do
                    [ "$l" = "$target" ] && ok=1
                done
            fi
            if [ $ok -eq 0 ]; then
                bad "runtime/$f:$line: $layer may not include $target ($inc)"
            fi
        done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" |
            sed -E 's/^([0-9]+):[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]*)".*/\1:\2/')
        if [ $is_header -eq 0 ]; then
            while IFS= read -r hit; do
                bad "runtime/$f:${hit%%:*}: a cross-file prototype in a .c file (move it to a header)"
            done < <(grep -n 'TR__HIDDEN;[[:space:]]*$' "$f" || true)
        fi
    done < <(find "$layer" -name '*.[ch]' | sort)
done

# owner:regex of that layer's struct fields, as in "p->FIELD" or "x.FIELD".
fields=(
    'exec:(->|\.)[rw]_[a-z0-9_]+'
    'task:(->|\.)s_(word|spec|result|join_ops|join_data|polls|last_poll_ms)\b'
    'reactor:(->|\.)rx_[a-z0-9_]+'
    'reactor:(->|\.)io_[a-z0-9_]+'
)
for rule in "${fields[@]}"; do
    owner=${rule%%:*}
    re=${rule#*:}
    while IFS= read -r hit; do
        bad "$hit: names a field of $owner/'s structs (use $owner/$owner.h's accessors)"
    done < <(find . -name '*.[ch]' ! -path "./$owner/*" ! -path './include/*' -print0 |
        xargs -0 grep -nE -- "$re" /dev/null | sed 's|^\./|runtime/|' || true)
done

if [ $fail -ne 0 ]; then
    exit 1
fi
echo "layers: every #include in $(pwd) keeps to the layer rule"
