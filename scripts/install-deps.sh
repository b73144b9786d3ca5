#!/usr/bin/env bash
# Installs the Debian 12 packages that difftrain's build, tests and demo need.
# Idempotent and quiet: prints nothing when everything is already installed.
set -euo pipefail

packages=(
  build-essential cmake pkg-config          # toolchain
  libopenmpi-dev openmpi-bin                 # MPI (the program links it from the start)
  libopenblas-openmp-dev                     # CPU matrix products (OpenMP build)
  libyaml-dev                                # configs
  libhdf5-openmpi-dev                        # checkpoints (the Open MPI flavour)
  libcmocka-dev                              # unit tests
  python3-torch python3-numpy                # independent reference checks and benchmarks
  python3-h5py                               # reads checkpoints in the tests (index.h5 from Python)
  python3-matplotlib                         # tools/plot_*.py (loss, needles, attention figures)
  procps                                     # pgrep, for the failure tests
  fortunes                                   # the demo's natural-English corpus
  # a one-machine Slurm for the Slurm tests; its srun --mpi=pmix loads the libpmix.so of
  # libpmix-dev, which libopenmpi-dev brings
  slurmctld slurmd slurm-client
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
