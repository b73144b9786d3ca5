#!/usr/bin/env bash
# Packs the GPU build and its runtime libraries for a GPU machine that has the CUDA driver,
# cuBLAS and NCCL but neither Open MPI, HDF5, libyaml, cmocka nor OpenBLAS (a cloud GPU image, a
# rented node): one archive, .device/difftrain-gpu.tar.xz, holding
#   bin/      difftrain, every GPU test (test_cuda_*) and GPU benchmark binary of the build;
#   lib/      every shared library those binaries load, copied from this machine, except the C
#             library family, the compiler runtimes and CUDA's own libraries (the GPU machine
#             has newer ones of each);
#   usr/      Open MPI's plugins and help files at their install paths, found through OPAL_PREFIX.
# tools/device_check.sh unpacks it on the GPU machine and runs the GPU tests and benchmarks.
#
#   bash tools/device_pack.sh [BUILD_DIR]     (default build-gpu; configured here if missing)
# Environment: DT_CUDA_ARCH (default 90a: H100/H200, with the wgmma kernels), DT_PACK (the
# archive's path), DT_XZ_LEVEL (compression, default 9e: its 64 MiB window finds the GPU code
# that every binary repeats, 24 MB against 62 at level 6, under a 64 MiB carry limit).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-gpu}
pack=${DT_PACK:-$root/.device/difftrain-gpu.tar.xz}
arch=${DT_CUDA_ARCH:-90a}

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDIFFTRAIN_WERROR=ON \
    -DDIFFTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" >"$build.configure.log" 2>&1 \
    || { cat "$build.configure.log"; exit 1; }
fi
cmake "$build" >/dev/null  # a test file added since the last configure becomes a target
all_targets=$(make -C "$build" help | sed -n 's/^\.\.\. //p')
grep -qx dt_cuda <<<"$all_targets" ||
  { echo "device_pack: $build has no CUDA backend (configure with -DDIFFTRAIN_CUDA=ON)" >&2; exit 1; }

# the GPU programs: difftrain, the GPU tests, the benchmarks (whatever the build defines)
targets=$(grep -E '^(difftrain|test_cuda_[a-z0-9_]+|bench_[a-z0-9_]+)$' <<<"$all_targets" | sort -u)
# shellcheck disable=SC2086
make -C "$build" -j "$(nproc)" $targets >/dev/null

stage=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-pack-XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
bins=()
for t in $targets; do
  f=$(find "$build" -maxdepth 3 -type f -name "$t" -perm -u+x | head -1)
  [ -n "$f" ] || { echo "device_pack: built $t but found no executable" >&2; exit 1; }
  cp "$f" "$stage/bin/"
  bins+=("$stage/bin/$t")
done

# Open MPI's plugins (a singleton rank loads some of them with dlopen) and help texts
ompi_lib=$(dirname "$(readlink -f "$(ldconfig -p | awk '/libmpi\.so\.40 / {print $NF; exit}')")")
pkglib=$(ompi_info --path pkglibdir --parsable 2>/dev/null | sed -n 's/^path:pkglibdir://p')
pkgdata=$(ompi_info --path pkgdatadir --parsable 2>/dev/null | sed -n 's/^path:pkgdatadir://p')
[ -d "$pkglib" ] && [ -d "$pkgdata" ] || { echo "device_pack: Open MPI's plugin folder not found" >&2; exit 1; }
mkdir -p "$stage$pkglib" "$stage$pkgdata"
cp -a "$pkglib/." "$stage$pkglib/"
cp -a "$pkgdata/." "$stage$pkgdata/"
pmix_plugins=$(find /usr/lib -maxdepth 4 -type d -path '*pmix*/lib/pmix' | head -1)
if [ -n "$pmix_plugins" ]; then
  mkdir -p "$stage$pmix_plugins"
  cp -a "$pmix_plugins/." "$stage$pmix_plugins/"
fi

# every library the binaries and plugins load, but the ones the GPU machine brings; twice, for
# the libraries that those libraries need in turn
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|libpthread\.|librt\.|libresolv\.|libutil\.|libstdc\+\+\.|libgcc_s\.|libcuda\.|libcudart\.|libcublas|libnccl\.|libnvidia)'
copy_needed() { # FILE...: copies into lib/ what they load
  ldd "$@" 2>/dev/null | awk '$3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
    name=$(basename "$lib")
    grep -Eq "$skip" <<<"$name" || [ -e "$stage/lib/$name" ] || cp -L "$lib" "$stage/lib/$name"
  done
}
mapfile -t plugins < <(find "$stage/usr" -name '*.so' -type f)
copy_needed "${bins[@]}" "${plugins[@]}"
copy_needed "$stage"/lib/*.so*
echo "$ompi_lib" >"$stage/ompi_libdir.txt"
git -C "$root" rev-parse HEAD >"$stage/commit.txt" 2>/dev/null || true

mkdir -p "$(dirname "$pack")"
tar -C "$stage" -cf - . | xz -T0 -"${DT_XZ_LEVEL:-9e}" >"$pack.tmp"
mv "$pack.tmp" "$pack"
echo "device_pack: $(ls "$stage/bin" | wc -l) programs, $(ls "$stage/lib" | wc -l) libraries," \
     "$(du -sh "$stage" | cut -f1) unpacked, $(du -h "$pack" | cut -f1) in $pack"
