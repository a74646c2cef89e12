#!/bin/sh
# Installs the build into a temporary prefix, then builds a consumer with find_package(mproc)
# and with pkg-config, and runs both. Usage: check.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src/tests/install" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/cm/consumer"
"$tmp/cm/consumer_static"
pcdir=$(dirname "$(find "$tmp/prefix" -name mproc.pc | head -n1)")
cc $(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags mproc) "$src/tests/install/consumer.c" \
  -o "$tmp/pc_consumer" $(PKG_CONFIG_PATH="$pcdir" pkg-config --libs mproc)
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/pc_consumer"
echo "install check passed"
