#!/usr/bin/env bash
# Sets up encodec-cpp on a fresh Debian 12 machine: installs the Debian packages
# it builds with, then configures and builds everything (Release) into build/.
# Run as root (or with sudo). Re-running it only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-openmp libdnnl-dev
  libsndfile1-dev libsoxr-dev libcurl4-openssl-dev libssl-dev libzip-dev
  libcli11-dev nlohmann-json3-dev libspdlog-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libboost-dev libprotobuf-dev protobuf-compiler libopus-dev portaudio19-dev prometheus-cpp-dev
)

if [[ "${ENCODEC_SKIP_APT:-0}" != 1 ]]; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
      echo "setup.sh: installing packages needs root: run it as root (sudo is not installed)," \
           "or set ENCODEC_SKIP_APT=1 if they are installed" >&2
      exit 1
    fi
    SUDO=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${PACKAGES[@]}"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
echo "Built: build/core/encodec (the CLI), build/server/encodecd, build/client/encodec-client, tests in build/tests, benchmarks in build/bench"
