#!/usr/bin/env bash
# make bench: machine, date and commit, then the field-encryption table, the
# worker-propagation figure, the real-Kong table (bench/kong.sh: keyring ON
# node vs OFF node) and the cluster key-exchange table (bench/cluster.sh: two
# nodes), all measured in this run.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cpu"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo none)"
features=$(luajit -e 'io.write(require("kong.keyring.cpu").required(package.searchpath("kong.keyring.native", package.cpath)))')
echo "library: built for ${features:-any $(uname -m) CPU} (scripts/cargo-build.sh; KONG_KEYRING_PORTABLE=1 for any)"
echo
luajit bench/field.lua
echo
luajit bench/propagation.lua
echo
bench/kong.sh
echo
bench/cluster.sh
echo; bench/vaults.sh
echo; bench/rewrap.sh
