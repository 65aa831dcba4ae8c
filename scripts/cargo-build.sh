#!/usr/bin/env bash
# Release build of the native library, installed at $1 (make build, the rockspec).
#
# On an x86-64 build host with AES-NI, PCLMULQDQ and AVX2 the crates are
# compiled to use them directly instead of behind a runtime CPU switch (about
# 15% more decryptions per second, see README "Benchmarks"). The library
# records what it was compiled for (kk_required_cpu) and the Lua loader refuses
# it, with a message, on a CPU that lacks one. KONG_KEYRING_PORTABLE=1 builds
# for any x86-64 (e.g. an image built on one machine and run on others).
#
#   scripts/cargo-build.sh <dest>          build and install
#   scripts/cargo-build.sh --features      print the features a build here uses
set -euo pipefail
cd "$(dirname "$0")/.."

WANTED=(aes pclmulqdq avx2)

host_features() {
  [ "$(uname -m)" = x86_64 ] && [ -z "${KONG_KEYRING_PORTABLE:-}" ] || return 0
  local flags f
  flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
  for f in "${WANTED[@]}"; do
    [[ "$flags" == *" $f "* ]] || return 0
  done
  echo "${WANTED[*]}"
}

features=$(host_features)
if [ "${1:-}" = --features ]; then
  echo "$features"
  exit 0
fi
dest=${1:?usage: $0 <dest> | --features}

rustflags=${RUSTFLAGS:-}
if [ -n "$features" ]; then
  rustflags="$rustflags -C target-feature=$(printf '+%s,' $features | sed 's/,$//')"
  echo "building for this host's ${features// /, }"
else
  echo "building for any $(uname -m) CPU"
fi
RUSTFLAGS="$rustflags" cargo build --release --locked
install -D -m0755 target/release/libkong_keyring.so "$dest"
