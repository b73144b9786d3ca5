#!/usr/bin/env bash
# tools/device_pack.sh and tools/device_check.sh, on a machine made to look like a bare GPU image:
# in a private mount namespace, the build's runtime libraries that such an image lacks (Open MPI
# and its plugins, PMIx, hwloc, libevent, HDF5, libyaml, cmocka, OpenBLAS, libgfortran, ...) are
# hidden behind empty files, the installed difftrain must then fail to start (the hiding works),
# and the packed one must pass device_check's smoke stage (an Open MPI singleton, HDF5
# checkpoint, YAML config, OpenBLAS training), run every GPU test program (each exits 0 or 77)
# and reach the skip of the attn and tma benchmark stages.
# Skipped (77) for a build without the CUDA backend, or where mount namespaces are not allowed.
#
# usage: device_pack.sh BUILD_DIR
set -u
BUILD=${1:?usage: device_pack.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
fail() { echo "device_pack: FAIL: $*" >&2; exit 1; }
make -C "$BUILD" help 2>/dev/null | grep -qx '\.\.\. dt_cuda' ||
  { echo "device_pack: the build has no CUDA backend: skipped"; exit 77; }
unshare -m true 2>/dev/null || { echo "device_pack: no mount namespaces here: skipped"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-pack-test-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

DT_XZ_LEVEL=0 DT_PACK=$tmp/pack.tar.xz bash "$ROOT/tools/device_pack.sh" "$BUILD" || fail "device_pack.sh"

cat >"$tmp/bare.sh" <<'EOF'
set -u
libdir=/usr/lib/x86_64-linux-gnu
for f in "$libdir"/lib{mpi,open-pal,open-rte,pmix,hwloc,event_core-2.1,event_pthreads-2.1}.so* \
         "$libdir"/lib{hdf5_openmpi,hdf5_openmpi_hl,yaml-0,cmocka,gfortran,sz,aec}.so* \
         "$libdir"/openblas*/lib*.so* "$libdir"/blas/lib*.so* "$libdir"/lapack/lib*.so*; do
  [ -f "$f" ] && [ ! -L "$f" ] && mount --bind /dev/null "$f"
done
mkdir -p "$TMP_EMPTY"
for d in "$libdir/openmpi" /usr/share/openmpi "$libdir/pmix2" /etc/openmpi; do
  [ -d "$d" ] && mount --bind "$TMP_EMPTY" "$d"
done
if "$SYSTEM_BIN" --help >/dev/null 2>&1; then echo "the installed difftrain still starts"; exit 3; fi
OUT=$TMP_OUT DT_PACK=$TMP_PACK DT_UNPACK=$TMP_UNPACK bash "$ROOT/tools/device_check.sh" smoke tests \
  attn tma
EOF
TMP_EMPTY=$tmp/empty TMP_OUT=$tmp/out TMP_PACK=$tmp/pack.tar.xz TMP_UNPACK=$tmp/unpacked \
  SYSTEM_BIN=$BUILD/difftrain ROOT=$ROOT unshare -m bash "$tmp/bare.sh" >"$tmp/bare.out" 2>&1
rc=$?
cat "$tmp/bare.out"
[ $rc -ne 3 ] || fail "hiding the system's libraries did not work"
[ $rc -eq 0 ] || { cat "$tmp/out/smoke.log" 2>/dev/null | tail -20; fail "device_check.sh exited $rc"; }
grep -q "checkpoint: saved step 2" "$tmp/out/smoke.log" || fail "the smoke run saved no checkpoint"
n=$(ls "$tmp/unpacked/bin" | grep -c '^test_cuda_')
[ "$n" -ge 1 ] || fail "no GPU test program was packed"
[ "$(grep -cE '^(PASS|SKIP) test_cuda_' "$tmp/out/tests.log")" -eq "$n" ] ||
  fail "not every GPU test program ran (exit 0 or 77): $(cat "$tmp/out/tests.log")"
# the benchmark stages without a GPU: each says so and counts as skipped
grep -q "bench_attn" "$tmp/out/attn.log" && grep -q "no usable GPU: skipped" "$tmp/out/tma.log" ||
  fail "the attn and tma stages did not run to their skip: $(cat "$tmp/out/attn.log" "$tmp/out/tma.log")"
echo "device_pack: the packed build runs without the system's libraries ($n GPU test programs)"
