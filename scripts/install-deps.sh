#!/usr/bin/env bash
# Installs what rtnq needs to build and test, from Debian's packages.
# Runs apt-get only when something is missing, so repeated runs are quick.
set -euo pipefail

packages=(cmake g++ make nlohmann-json3-dev libcli11-dev libxsimd-dev doctest-dev clang libclang-rt-14-dev time)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo_prefix=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_prefix=(sudo)
fi
echo "install-deps: installing ${missing[*]}" >&2
"${sudo_prefix[@]}" apt-get update
DEBIAN_FRONTEND=noninteractive "${sudo_prefix[@]}" apt-get install -y "${missing[@]}"
