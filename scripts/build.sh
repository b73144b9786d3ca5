#!/usr/bin/env bash
# Configures and builds difftrain into build/ (CUDA backend when nvcc is found; set
# DIFFTRAIN_CUDA=OFF to skip it). Extra arguments go to cmake's configure step.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${DIFFTRAIN_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDIFFTRAIN_WERROR=ON \
  -DDIFFTRAIN_CUDA="${DIFFTRAIN_CUDA:-AUTO}" "$@" >"$build.configure.log" 2>&1 \
  || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)"
