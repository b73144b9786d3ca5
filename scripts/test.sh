#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole test suite (the README's test command and
# what CI runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/install-deps.sh"
bash "$root/scripts/build.sh"
cd "${DIFFTRAIN_BUILD_DIR:-$root/build}"
ctest --output-on-failure -j 2 --timeout 900
