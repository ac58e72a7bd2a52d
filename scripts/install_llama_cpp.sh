#!/usr/bin/env bash
# Install llama-cpp-python (the pyproject.toml pin) built from its sdist with
# edge-assistant's patch applied: patches/llama-cpp-python-VERSION-audio-stream.patch
# adds the stateful Gemma 4 audio encoder (mtmd_audio_stream_*) that streaming needs.
#
#   scripts/install_llama_cpp.sh PYTHON     # e.g. .venv/bin/python
#
# The build takes about 20 minutes on 2 cores (longer on a Pi); the wheel is kept in
# ~/.cache/edge-assistant/wheels/ (EDGE_ASSISTANT_WHEELS overrides), keyed on the
# patch, CMAKE_ARGS and this CPU's instruction set (llama.cpp is built for the CPU
# it runs on), so a second run installs in seconds and a changed patch rebuilds.
# CMAKE_ARGS passes through to llama.cpp's build as for a plain pip install.
set -euo pipefail

version=0.3.36                 # pyproject.toml's pin
label=edge.stream1             # the patched build's local version: VERSION+LABEL
here=$(cd "$(dirname "$0")" && pwd)
patch=$(dirname "$here")/patches/llama-cpp-python-$version-audio-stream.patch
cache=${EDGE_ASSISTANT_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-assistant/wheels}

die() { echo "install_llama_cpp: error: $*" >&2; exit 1; }

(( $# == 1 )) || die "usage: scripts/install_llama_cpp.sh PYTHON"
python=$1
"$python" -c 'import sys' 2>/dev/null || die "$python is not a working Python"
[[ -f $patch ]] || die "the patch $patch is missing"

installed=$("$python" -c 'import llama_cpp, sys; sys.stdout.write(llama_cpp.__version__)' 2>/dev/null || true)
if [[ $installed == "$version+$label" ]]; then
    echo "llama-cpp-python $installed (with the audio-stream patch) is installed"
    exit 0
fi

cpu=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m)
key=$( { sha256sum <"$patch"; echo "${CMAKE_ARGS:-}"; echo "$cpu"; uname -m; } | sha256sum | cut -c1-16)
entry=$cache/$version+$label-$key
wheel=
[[ -d $entry ]] && wheel=$(find "$entry" -maxdepth 1 -name '*.whl' | head -n 1)

if [[ -z $wheel ]]; then
    command -v patch >/dev/null || die "the patch program is missing (apt-get install patch)"
    echo "building llama-cpp-python $version with the audio-stream patch: about 20 minutes on 2 cores (cached afterwards)"
    work=$(mktemp -d "${TMPDIR:-/tmp}/llama-cpp-build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        --dest "$work" "llama-cpp-python==$version" || die "cannot download the llama-cpp-python $version sdist"
    tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work" || die "cannot unpack the sdist"
    patch --batch --forward --silent -p1 -d "$work/llama_cpp_python-$version" <"$patch" \
        || die "the patch does not apply to llama-cpp-python $version"
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
        "$python" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$work/wheel" \
        "$work/llama_cpp_python-$version" || die "building llama-cpp-python failed (see the output above)"
    mkdir -p "$cache"
    staging=$(mktemp -d "$cache/.build.XXXXXX")
    cp "$work"/wheel/*.whl "$staging/"
    rm -rf "$entry"
    mv "$staging" "$entry"
    wheel=$(find "$entry" -maxdepth 1 -name '*.whl' | head -n 1)
fi

"$python" -m pip install --quiet --disable-pip-version-check "$wheel" || die "installing $wheel failed"
echo "llama-cpp-python $version+$label installed from $wheel"
