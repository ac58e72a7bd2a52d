#!/usr/bin/env bash
# A venv with the real wyoming-satellite 1.0.0 from PyPI, for the rooms tests
# (tests/test_rooms_live.py): the satellite a Pi Zero 2 W runs, against our brain.
# It pins wyoming==1.4.1 (our own code uses a newer wyoming; the wire format is
# the same), so it lives in its own venv. Its console script is broken in 1.0.0:
# the tests run `python -m wyoming_satellite`.
#
# Usage: scripts/wyoming_satellite_venv.sh [DIR]   (default ~/.cache/edge-assistant/wyoming-satellite)
# Prints the venv's python on success. A marker written last marks a finished
# install; an interrupted one is redone.
set -euo pipefail
source "$(dirname "$0")/cached_venv.sh"
SATELLITE_VERSION=1.0.0
dir=${1:-${EDGE_ASSISTANT_SATELLITE_CACHE:-$HOME/.cache/edge-assistant/wyoming-satellite}}
venv=$dir/venv
marker=$venv/.edge-assistant-complete-$SATELLITE_VERSION

venv_ready "$marker" "$venv"
venv_start "$dir" "$marker" "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "wyoming-satellite==$SATELLITE_VERSION" >&2
venv_finished "$marker" "$venv"
