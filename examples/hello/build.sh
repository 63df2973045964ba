#!/bin/sh
# Builds the bundle example into OUT (default: examples/hello/build):
#   OUT/lib/libgreet.so.1                  (soname libgreet.so.1; GREETING picks its answer)
#   OUT/bin/hello                          (needs libgreet.so.1; RUNPATH $ORIGIN/../lib)
#   OUT/plugins/libhello-plugin.so.1       (dlopen()ed by hello by soname)
# Needs a C compiler (Debian: apt-get install gcc libc6-dev).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build}
greeting=${GREETING:-hello from libgreet 1}
cc=${CC:-cc}
mkdir -p "$out/bin" "$out/lib" "$out/plugins"
"$cc" -shared -fPIC -O2 -Wl,-soname,libgreet.so.1 -DGREETING="\"$greeting\"" \
  -o "$out/lib/libgreet.so.1" "$here/greet.c"
"$cc" -shared -fPIC -O2 -Wl,-soname,libhello-plugin.so.1 \
  -o "$out/plugins/libhello-plugin.so.1" "$here/plugin.c"
"$cc" -O2 -o "$out/bin/hello" "$here/hello.c" "$out/lib/libgreet.so.1" \
  -Wl,--enable-new-dtags -Wl,-rpath,'$ORIGIN/../lib'
