#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh Debian/Ubuntu machine or a Pi.
# Installs the few Debian packages the tests use (with sudo unless root), builds
# .venv (llama-cpp-python compiles once with patches/ applied, about 20 minutes on
# 2 cores; scripts/install_llama_cpp.sh caches the wheel), then runs pytest. Extra arguments go to pytest: -m "not slow", -x, ...
set -euo pipefail
cd "$(dirname "$0")/.."

# The deployment tests run shellcheck and systemd-analyze, PortAudio serves the
# audio devices, python3-venv is what provision_pi.sh builds with, patch applies
# patches/ to llama.cpp.
packages=(shellcheck systemd python3-venv libportaudio2 alsa-utils patch)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    as_root=()
    [[ $(id -u) -eq 0 ]] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m venv .venv
scripts/install_llama_cpp.sh .venv/bin/python   # llama.cpp with the stateful audio encoder (patches/)
.venv/bin/pip install -e '.[test]'
scripts/wyoming_satellite_venv.sh >/dev/null   # the real satellite the rooms tests run against (cached)
exec .venv/bin/python -m pytest "$@"
