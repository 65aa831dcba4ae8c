#!/usr/bin/env bash
# make bench: machine, date and commit, then the field-encryption table, the
# worker-propagation figure, the real-Kong table (bench/kong.sh: keyring ON
# node vs OFF node), the cluster key-exchange table (bench/cluster.sh: two
# nodes), secret references (bench/vaults.sh) and the rewrap job
# (bench/rewrap.sh), all measured in this run.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cpu"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo none)"
features=$(luajit -e 'io.write(require("kong.keyring.cpu").required(package.searchpath("kong.keyring.native", package.cpath)))')
echo "library: built for ${features:-any $(uname -m) CPU} (scripts/cargo-build.sh; KONG_KEYRING_PORTABLE=1 for any)"

# every part runs even when one misses a target or fails; the exit status
# says whether all of them passed
failed=()
part() {
  echo
  "$@" || failed+=("$*")
}
part luajit bench/field.lua
part luajit bench/propagation.lua
part bench/kong.sh
part bench/cluster.sh
part bench/vaults.sh
part bench/rewrap.sh
echo
if ((${#failed[@]})); then
  echo "parts with a FAIL or an error: ${failed[*]}"
  exit 1
fi
echo "every part passed"
