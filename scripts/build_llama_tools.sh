#!/usr/bin/env bash
# Build llama.cpp's own llama-mtmd-cli and llama-bench from the llama.cpp source
# vendored in the pinned llama-cpp-python sdist: the yardsticks of
# scripts/bench_real_size.py --yardsticks. Same source as our bindings, CPU only,
# -march=native like pip's build of them, AMX off (ggml's AMX matmul crashes on
# K-quants, llama.cpp #20824; the engine keeps weights out of it at run time).
#
#   scripts/build_llama_tools.sh            # prints the bin directory
#
# Cached: ~/.cache/edge-assistant/llama-tools/<version>/bin/ (EDGE_ASSISTANT_LLAMA_TOOLS
# overrides the root); a second run only prints the path. Builds niced: about 10
# minutes on 2 cores.
set -euo pipefail

version=0.3.36  # pyproject.toml's pin of llama-cpp-python
root=${EDGE_ASSISTANT_LLAMA_TOOLS:-$HOME/.cache/edge-assistant/llama-tools}
out=$root/$version
targets=(llama-mtmd-cli llama-bench)

die() { echo "build_llama_tools: error: $*" >&2; exit 1; }

if [[ -x $out/bin/llama-mtmd-cli && -x $out/bin/llama-bench ]]; then
    echo "$out/bin"
    exit 0
fi
command -v cmake >/dev/null || die "cmake is missing (apt-get install cmake)"
python=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/llama-tools.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The sdist from PyPI through pip (its cache makes a second fetch free).
"$python" -m pip download --quiet --no-deps --no-binary :all: --dest "$work" "llama-cpp-python==$version" \
    || die "cannot download the llama-cpp-python $version sdist from PyPI"
tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work" || die "cannot unpack the sdist"
source_dir=$work/llama_cpp_python-$version/vendor/llama.cpp
[[ -f $source_dir/CMakeLists.txt ]] || die "no vendored llama.cpp in the sdist"

flags=()
if [[ $(uname -m) == x86_64 ]]; then
    # Explicit -mno-* win over -march=native whatever their order (GCC and Clang).
    flags=(-DCMAKE_C_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
           -DCMAKE_CXX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
fi
nice -n 19 cmake -S "$source_dir" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF "${flags[@]}" >"$work/configure.log" 2>&1 \
    || { tail -20 "$work/configure.log" >&2; die "cmake configure failed"; }
nice -n 19 cmake --build "$work/build" --target "${targets[@]}" -j "$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log" >&2; die "build failed"; }

mkdir -p "$root"
staging=$(mktemp -d "$root/.$version.XXXXXX")
mkdir -p "$staging/bin"
for target in "${targets[@]}"; do
    cp "$work/build/bin/$target" "$staging/bin/"
done
rm -rf "$out"
mv "$staging" "$out"
echo "$out/bin"
