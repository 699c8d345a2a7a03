#!/usr/bin/env bash
# Install-and-consume test (ctest packaging.install_consume): installs the
# build into a scratch prefix, checks the installed layout, then builds and
# runs tests/integration/consumer against it twice: with find_package(troupe)
# (shared and static targets) and with pkg-config (troupe.pc).
#
# Usage: install_consume.sh CMAKE BUILD_DIR CONSUMER_SRC WORK_DIR LIBDIR VERSION
# Environment: CC (compiler), CMAKE_GENERATOR, TR_SAN_FLAGS (sanitizer flags
# of the build, which the consumer needs too).
set -euo pipefail

cmake=$1 build=$2 src=$3 work=$4 libdir=$5 version=$6
prefix=$work/prefix
san=${TR_SAN_FLAGS:-}
cc=${CC:-cc}

for tool in pkg-config readelf "$cc"; do
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
for f in include/troupe/troupe.h include/troupe/err.h \
    "$libdir/libtroupe.so" "$libdir/$soname" "$libdir/libtroupe.so.$version" "$libdir/libtroupe.a" \
    "$libdir/cmake/troupe/troupeConfig.cmake" "$libdir/cmake/troupe/troupeConfigVersion.cmake" \
    "$libdir/cmake/troupe/troupeTargets.cmake" "$libdir/pkgconfig/troupe.pc"; do
    [ -e "$prefix/$f" ] || fail "missing $prefix/$f"
    echo "ok $f"
done
[ "$soname" = "libtroupe.so.${version%%.*}" ] || fail "SONAME is '$soname'"
# Only the public headers are installed.
extra=$(find "$prefix/include" -type f ! -path "$prefix/include/troupe/*.h")
[ -z "$extra" ] || fail "unexpected files under include/: $extra"

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

step "consumer via find_package(troupe)"
CFLAGS="$san" LDFLAGS="$san" "$cmake" -S "$src" -B "$work/cmake-build" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" -DTR_EXPECT_VERSION="$version"
grep -q "^troupe_DIR:PATH=$prefix/$libdir/cmake/troupe\$" "$work/cmake-build/CMakeCache.txt" ||
    fail "find_package found $(grep '^troupe_DIR' "$work/cmake-build/CMakeCache.txt"), not $prefix"
"$cmake" --build "$work/cmake-build"
check_needed "$work/cmake-build/consumer_shared" yes
check_needed "$work/cmake-build/consumer_static" no
"$work/cmake-build/consumer_shared"
"$work/cmake-build/consumer_static"

step "consumer via pkg-config"
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
[ "$(pkg-config --modversion troupe)" = "$version" ] || fail "pkg-config version"
[ "$(pkg-config --variable=prefix troupe)" = "$prefix" ] || fail "troupe.pc prefix"
static_libs=$(pkg-config --static --libs troupe)
echo "pkg-config --static --libs troupe: $static_libs"
case " $static_libs " in *" -lprotobuf-c "*) ;; *) fail "no -lprotobuf-c for static linking" ;; esac
case " $static_libs " in *" -lpthread "*) ;; *) fail "no -lpthread for static linking" ;; esac
# shellcheck disable=SC2046,SC2086 # flags are meant to split into words.
"$cc" $san -Wall -Wextra -Werror -o "$work/pc_consumer" "$src/main.c" \
    $(pkg-config --cflags --libs troupe) -Wl,-rpath,"$(pkg-config --variable=libdir troupe)"
check_needed "$work/pc_consumer" yes
"$work/pc_consumer"

echo
echo "install-and-consume: OK"
