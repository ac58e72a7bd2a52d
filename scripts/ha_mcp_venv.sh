#!/usr/bin/env bash
# A venv with Home Assistant 2025.4.4 and its mcp_server, for the MCP tests.
# HA's MCP server needs Python 3.13; 2025.4.4 is the newest HA that accepts 3.13.0
# (pyenv's), and it serves MCP over SSE at /mcp_server/sse. pip is held to the
# package_constraints.txt inside HA's own wheel, or it picks a pydantic with which
# mcp 1.5.0 fails to import.
#
# Usage: scripts/ha_mcp_venv.sh [--install-python] [DIR]   (default ~/.cache/edge-assistant/home-assistant-mcp)
# Prints the venv's python on success. Exit 3: no Python 3.13 found (message on stderr).
# --install-python (what .ci/run passes): without a Python 3.13, try to get one:
# pyenv install 3.13.0 where pyenv is, else Debian's python3.13 package where apt has it.
# A marker written last marks a finished install; an interrupted one is redone.
set -euo pipefail
source "$(dirname "$0")/cached_venv.sh"
HA_VERSION=2025.4.4
install_python=0
if [[ ${1:-} == --install-python ]]; then
    install_python=1
    shift
fi
dir=${1:-${EDGE_ASSISTANT_HA_MCP_CACHE:-$HOME/.cache/edge-assistant/home-assistant-mcp}}
venv=$dir/venv
marker=$venv/.edge-assistant-complete-$HA_VERSION

venv_ready "$marker" "$venv"

find_python313() {
python313=""
for candidate in "${PYTHON313:-}" "$(command -v pyenv >/dev/null && echo "$(pyenv root)/versions/3.13.0/bin/python3.13")" \
    "$HOME/.pyenv/versions/3.13.0/bin/python3.13" "$(command -v python3.13 || true)"; do
    if [[ -n $candidate && -x $candidate ]] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'; then
        python313=$candidate
        break
    fi
done
}
find_python313
if [[ -z $python313 && $install_python == 1 ]]; then
    if command -v pyenv >/dev/null; then
        pyenv install -s 3.13.0 >&2 || true
    elif command -v apt-get >/dev/null && apt-cache show python3.13-venv >/dev/null 2>&1; then
        as_root=()
        [[ $(id -u) -eq 0 ]] || as_root=(sudo)
        DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends python3.13-venv >&2 || true
    fi
    find_python313
fi
if [[ -z $python313 ]]; then
    echo "no Python 3.13 (Home Assistant's MCP server needs it): install it with pyenv (pyenv install 3.13.0) or set PYTHON313" >&2
    exit 3
fi

venv_start "$dir" "$marker" "$venv"
"$python313" -m venv "$venv"
"$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$dir/wheel" "homeassistant==$HA_VERSION" >&2
wheel=$(ls "$dir"/wheel/homeassistant-"$HA_VERSION"-*.whl)
"$venv/bin/python" - "$wheel" "$dir/constraints.txt" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    text = wheel.read("homeassistant/package_constraints.txt").decode()
open(sys.argv[2], "w").write(text)
PY
"$venv/bin/pip" install -q --disable-pip-version-check -c "$dir/constraints.txt" "$dir/wheel/$(basename "$wheel")" \
    hassil==2.2.3 home-assistant-intents==2025.3.28 mcp==1.5.0 aiohttp_sse==2.2.0 anyio==4.9.0 \
    home-assistant-frontend==20250411.0 isal==1.7.1 >&2
venv_finished "$marker" "$venv"
