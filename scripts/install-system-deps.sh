#!/usr/bin/env bash
# Debian packages the tests need: prometheus (monitoring test) and chromium + chromedriver
# (UI test). Idempotent: when every binary is already there it returns at once, without apt.
set -euo pipefail

# binary -> Debian package that ships it
declare -A PACKAGE_OF=(
  [prometheus]=prometheus
  [chromium]=chromium
  [chromedriver]=chromium-driver
)

missing=()
for binary in "${!PACKAGE_OF[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$binary]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps the install small; the prometheus package's service is not
# started here (tests start their own on loopback with a temp config).
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for binary in "${!PACKAGE_OF[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || { echo "install-system-deps: $binary still missing after apt-get" >&2; exit 1; }
done
