#!/usr/bin/env bash
# Installs the Debian 12 packages sluice needs to build and test, when they are missing.
# As root it runs apt-get; otherwise it prints the command to run.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libssl-dev openssl libevent-dev libfyaml-dev libhttp-parser-dev libidn2-dev libpcre2-dev libnghttp2-dev
  zlib1g-dev libbrotli-dev libzstd-dev zstd
  libcmocka-dev python3 python3-pytest python3-brotli
  curl iproute2 iptables nginx-light nghttp2-client
  python3-websockets chromium libnss3-tools
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "sluice: missing packages: ${missing[*]}" >&2
  echo "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "sluice: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
