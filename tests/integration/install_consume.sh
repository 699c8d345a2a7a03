#!/usr/bin/env bash
# Install-and-consume test (ctest packaging.install_consume): installs the
# build into a scratch prefix (WORK_DIR/prefix, emptied first), checks the
# installed layout, then builds and runs tests/integration/consumer against
# it by every route README.md documents:
#   - find_package(troupe): troupe::troupe (NEEDED libtroupe.so.N) and
#     troupe::troupe_static (no NEEDED libtroupe);
#   - pkg-config troupe (shared): with -Wl,-rpath,PREFIX/LIBDIR, and
#     without an rpath but with LD_LIBRARY_PATH=PREFIX/LIBDIR; ldd must
#     resolve libtroupe.so.N to the scratch prefix's copy;
#   - pkg-config troupe-static: Libs names libtroupe.a, and the program
#     neither needs nor loads any libtroupe.so.
#
#   - the daemon: trouped and troupe run from the prefix through their own
#     RUNPATH, the systemd unit names the installed trouped, and a program
#     built with pkg-config troupe-client runs a job on the installed
#     trouped.
#
# Usage: install_consume.sh CMAKE BUILD_DIR CONSUMER_SRC WORK_DIR LIBDIR VERSION
# Environment: CC (compiler), CMAKE_GENERATOR, TR_SAN_FLAGS (sanitizer flags
# of the build, which the consumer needs too).
set -euo pipefail

cmake=$1 build=$2 src=$3 work=$4 libdir=$5 version=$6
prefix=$work/prefix
san=${TR_SAN_FLAGS:-}
cc=${CC:-cc}

for tool in pkg-config readelf ldd "$cc"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool not found"
        exit 77
    fi
done

step() { printf '\n--- %s\n' "$*"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

rm -rf "$work"
mkdir -p "$work"

step "cmake --install into $prefix"
"$cmake" --install "$build" --prefix "$prefix"

step "installed layout"
soname=$(readelf -d "$prefix/$libdir/libtroupe.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
for f in include/troupe/troupe.h include/troupe/err.h include/troupe/v1/executor.pb-c.h \
    include/troupe/plugin.h \
    "$libdir/libtroupe.so" "$libdir/$soname" "$libdir/libtroupe.so.$version" "$libdir/libtroupe.a" \
    "$libdir/cmake/troupe/troupeConfig.cmake" "$libdir/cmake/troupe/troupeConfigVersion.cmake" \
    "$libdir/cmake/troupe/troupeTargets.cmake" "$libdir/pkgconfig/troupe.pc" \
    "$libdir/pkgconfig/troupe-static.pc"; do
    [ -e "$prefix/$f" ] || fail "missing $prefix/$f"
    echo "ok $f"
done
[ "$soname" = "libtroupe.so.${version%%.*}" ] || fail "SONAME is '$soname'"
# Only the public headers are installed.
extra=$(find "$prefix/include" -type f ! -path "$prefix/include/troupe/*.h")
[ -z "$extra" ] || fail "unexpected files under include/: $extra"

# The programs below must find the scratch prefix's libtroupe through their
# own RUNPATH (or the LD_LIBRARY_PATH given on purpose), never through the
# caller's environment.
unset LD_LIBRARY_PATH
pfx_lib=$prefix/$libdir

# Linked against the installed copy: NEEDED libtroupe.so.N for the shared one,
# nothing for the static one.
check_needed() {
    local exe=$1 want=$2
    if readelf -d "$exe" | grep -q "(NEEDED).*\[$soname\]"; then
        [ "$want" = yes ] || fail "$exe needs $soname but should be static"
    else
        [ "$want" = no ] || fail "$exe does not need $soname"
    fi
}

# check_loads EXE [VAR=VALUE...]: the dynamic loader, given that
# environment, resolves libtroupe.so.N to the scratch prefix's copy.
check_loads() {
    local exe=$1 got
    shift
    got=$(env "$@" ldd "$exe" | sed -n "s/^[[:space:]]*$soname => \([^ ]*\) .*/\1/p")
    [ "$got" = "$pfx_lib/$soname" ] ||
        fail "$exe loads $soname from '${got:-nowhere}', not $pfx_lib ($*)"
    echo "ok $(basename "$exe") loads $got"
}

step "consumer via find_package(troupe)"
CFLAGS="$san" LDFLAGS="$san" "$cmake" -S "$src" -B "$work/cmake-build" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" -DTR_EXPECT_VERSION="$version"
grep -q "^troupe_DIR:PATH=$prefix/$libdir/cmake/troupe\$" "$work/cmake-build/CMakeCache.txt" ||
    fail "find_package found $(grep '^troupe_DIR' "$work/cmake-build/CMakeCache.txt"), not $prefix"
"$cmake" --build "$work/cmake-build"
check_needed "$work/cmake-build/consumer_shared" yes
check_needed "$work/cmake-build/consumer_static" no
check_loads "$work/cmake-build/consumer_shared"
"$work/cmake-build/consumer_shared"
"$work/cmake-build/consumer_static"

step "pkg-config modules"
export PKG_CONFIG_PATH=$pfx_lib/pkgconfig
pkg-config --validate troupe troupe-static || fail "pkg-config --validate"
for pc in troupe troupe-static; do
    [ "$(pkg-config --modversion $pc)" = "$version" ] || fail "$pc.pc version"
    [ "$(pkg-config --variable=prefix $pc)" = "$prefix" ] || fail "$pc.pc prefix"
    [ "$(pkg-config --variable=libdir $pc)" = "$pfx_lib" ] || fail "$pc.pc libdir"
done
# troupe.pc --static: the private dependencies, for a fully static link.
static_libs=$(pkg-config --static --libs troupe)
echo "pkg-config --static --libs troupe: $static_libs"
case " $static_libs " in *" -lprotobuf-c "*) ;; *) fail "no -lprotobuf-c for static linking" ;; esac
case " $static_libs " in *" -lpthread "*) ;; *) fail "no -lpthread for static linking" ;; esac
# troupe-static.pc: the archive by path (-ltroupe would pick the .so) and
# its dependencies without --static.
archive_libs=$(pkg-config --libs troupe-static)
echo "pkg-config --libs troupe-static: $archive_libs"
case " $archive_libs " in *" $pfx_lib/libtroupe.a "*) ;; *) fail "troupe-static does not name $pfx_lib/libtroupe.a" ;; esac
case " $archive_libs " in *" -ltroupe "*) fail "troupe-static says -ltroupe" ;; esac
case " $archive_libs " in *" -lprotobuf-c "*) ;; *) fail "troupe-static lacks -lprotobuf-c" ;; esac
case " $archive_libs " in *" -lpthread "*) ;; *) fail "troupe-static lacks -lpthread" ;; esac

# The commands below are README.md's ("Using libtroupe"), with DIR the
# scratch prefix.
# shellcheck disable=SC2046,SC2086 # flags are meant to split into words.
{
    step "consumer via pkg-config troupe, with an rpath"
    "$cc" $san -Wall -Wextra -Werror -o "$work/pc_rpath" "$src/main.c" \
        $(pkg-config --cflags --libs troupe) -Wl,-rpath,"$pfx_lib"
    check_needed "$work/pc_rpath" yes
    check_loads "$work/pc_rpath"
    "$work/pc_rpath"

    step "consumer via pkg-config troupe, with LD_LIBRARY_PATH"
    "$cc" $san -Wall -Wextra -Werror -o "$work/pc_env" "$src/main.c" \
        $(pkg-config --cflags --libs troupe)
    check_needed "$work/pc_env" yes
    if readelf -d "$work/pc_env" | grep -Eq '\((RUNPATH|RPATH)\)'; then
        fail "pc_env has an rpath, so LD_LIBRARY_PATH is not what finds libtroupe"
    fi
    check_loads "$work/pc_env" LD_LIBRARY_PATH="$pfx_lib"
    LD_LIBRARY_PATH=$pfx_lib "$work/pc_env"

    step "consumer via pkg-config troupe-static"
    "$cc" $san -Wall -Wextra -Werror -o "$work/pc_static" "$src/main.c" \
        $(pkg-config --cflags --libs troupe-static)
    check_needed "$work/pc_static" no
    if ldd "$work/pc_static" | grep -q libtroupe; then
        fail "pc_static loads a libtroupe: $(ldd "$work/pc_static" | grep libtroupe)"
    fi
    echo "ok pc_static: no libtroupe in NEEDED or in ldd"
    "$work/pc_static"
}

step "the daemon, its client library and the CLI, installed"
for f in bin/trouped bin/troupe include/troupe/client.h include/troupe/actor.h \
    "$libdir/libtroupe-client.so" "$libdir/libtroupe-actors.so" \
    "$libdir/pkgconfig/troupe-client.pc" lib/systemd/system/trouped.service \
    share/doc/troupe/trouped.conf share/doc/troupe/examples/pipeline.yaml; do
    [ -e "$prefix/$f" ] || fail "missing $prefix/$f"
    echo "ok $f"
done
grep -qx "ExecStart=$prefix/bin/trouped" "$prefix/lib/systemd/system/trouped.service" ||
    fail "trouped.service does not start $prefix/bin/trouped"
# Their own RUNPATH finds the prefix's libraries (LD_LIBRARY_PATH is unset).
for exe in trouped troupe; do
    "$prefix/bin/$exe" --version | grep -qx "$exe $version" || fail "$exe --version"
    got=$(ldd "$prefix/bin/$exe" | sed -n "s/^[[:space:]]*$soname => \([^ ]*\) .*/\1/p")
    [ "$(readlink -f "$got")" = "$(readlink -f "$pfx_lib/$soname")" ] ||
        fail "$exe loads $soname from '${got:-nowhere}', not $pfx_lib"
    echo "ok $exe $version, $soname from the prefix"
done

# shellcheck disable=SC2046 # flags are meant to split into words.
"$cc" $san -Wall -Wextra -Werror -o "$work/client_main" "$src/client_main.c" \
    $(pkg-config --cflags --libs troupe-client) -Wl,-rpath,"$pfx_lib"

# A plugin built against the installed <troupe/plugin.h>, in a directory
# only we may write (trouped refuses others).
mkdir -m 0700 "$work/plugins"
# shellcheck disable=SC2046 # flags are meant to split into words.
"$cc" $san -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden -o "$work/plugins/hello.so" \
    "$src/plugin_main.c" $(pkg-config --cflags --libs troupe)
chmod 0644 "$work/plugins/hello.so"

step "the installed trouped runs a job and a plugin's for the installed client library"
sock=$work/trouped.sock
mkfifo "$work/ready"
"$prefix/bin/trouped" --ephemeral --config none --listen "ipc://$sock" --durability process \
    --plugin-dir "$work/plugins" >"$work/ready" 2>"$work/trouped.log" &
tpid=$!
exec 3<"$work/ready"
# The ready line is the event (a blocking read with a deadline, no polling).
if ! read -r -t 60 -u 3 line || [ "${line%% *}" != TROUPED ]; then
    kill "$tpid" 2>/dev/null || true
    cat "$work/trouped.log" >&2
    fail "trouped never said it was ready"
fi
exec 3<&-
echo "$line"
if ! "$work/client_main" "ipc://$sock" consumer.hello; then
    kill "$tpid" 2>/dev/null || true
    cat "$work/trouped.log" >&2
    fail "client_main against the installed trouped"
fi
# client_main asked for a graceful Shutdown: trouped exits 0 by itself.
wait "$tpid" || fail "trouped exited with $?"
echo "ok trouped stopped"

echo
echo "install-and-consume: OK"
