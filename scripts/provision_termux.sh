#!/usr/bin/env bash
# Take an Android phone with Termux to a running, always-listening edge-assistant.
# Run it inside the Termux app, from a clone of this repository:
#   bash scripts/provision_termux.sh
#
# Termux side: the packages pulseaudio, proot-distro and termux-api; the models in
# ~/.local/share/edge-assistant/models; the commands edge-assistant-start,
# edge-assistant-stop and edge-assistant in $PREFIX/bin; a Termux:Boot entry in
# ~/.termux/boot. Debian side (a proot-distro userland, glibc, where the ordinary
# aarch64 wheels install and llama-cpp-python compiles for this CPU): build tools,
# PortAudio with ALSA's PulseAudio plugin, a venv in /opt/edge-assistant and
# /etc/edge-assistant/config.toml, whose microphone and speaker are "pulse":
# Termux's PulseAudio, reached over 127.0.0.1.
#
# It first checks, one line each: memory, free storage, the Termux:API app and the
# microphone permission, and stops with a non-zero exit when one fails.
#
# Safe to run again: every step first checks whether it is already right and then
# does nothing, so a second run reports "nothing to change". After `git pull` a run
# reinstalls the package. A configuration you edited is never overwritten: the
# current template goes to config.toml.new beside it.
#
# Usage: bash scripts/provision_termux.sh [OPTIONS]
#   --dry-run      print every action and command, change nothing
#   --no-models    skip the model download (about 3.7 GB)
#   --distro NAME  the proot-distro userland to use or create (default debian)
#   --force        continue when the phone has less memory than the 6 GB floor
#   --uninstall    stop it and remove what this script made (its commands, the boot
#                  entry, the userland if this script created it, else only
#                  /opt/edge-assistant and /etc/edge-assistant in it); keep the models
#   --purge        with --uninstall: remove the models too
#   -h, --help     this text
#
# $PREFIX and $HOME are Termux's; set them (and put stand-ins for pkg, proot-distro
# and termux-* first on PATH) to run this on a fake Termux. EDGE_ASSISTANT_MEMINFO
# replaces /proc/meminfo, EDGE_ASSISTANT_API_TIMEOUT the seconds allowed for a
# Termux:API answer (default 15).
set -euo pipefail

SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# What pkg installs, and the command that shows each one is there.
TERMUX_PACKAGES=(pulseaudio proot-distro termux-api)
declare -A TERMUX_COMMAND=([pulseaudio]=pulseaudio [proot-distro]=proot-distro [termux-api]=termux-microphone-record)
# Debian side. Runtime: PortAudio (sounddevice) and ALSA's PulseAudio plugin, whose
# pcm "pulse" is the configured device. Build: llama-cpp-python has no aarch64
# wheel, pip compiles llama.cpp for this CPU.
DEBIAN_PACKAGES=(python3 python3-venv python3-dev build-essential cmake patch libportaudio2 libasound2-plugins)
# 32-bit ARM has no onnxruntime wheel.
SUPPORTED_ARCHS=(aarch64 x86_64)
# MemTotal of a "6 GB" phone is 5.3-5.8 GiB (the kernel and the modem keep the
# rest); a "4 GB" phone reports about 3.7 GiB. Under MIN: fail; under WARN: warn.
MIN_RAM_KB=5000000
WARN_RAM_KB=7000000
MEMINFO="${EDGE_ASSISTANT_MEMINFO:-/proc/meminfo}"
API_TIMEOUT="${EDGE_ASSISTANT_API_TIMEOUT:-15}"
# The Debian userland with build tools, the venv and pip's llama.cpp build tree.
USERLAND_NEEDS_BYTES=1500000000
# The first line of every file this script writes outside the userland (after the
# shebang): uninstall removes only files that carry it.
MARK="# Written by scripts/provision_termux.sh"

# Inside the userland.
GUEST_OPT=/opt/edge-assistant
GUEST_VENV=$GUEST_OPT/venv
GUEST_CLI=$GUEST_VENV/bin/edge-assistant
GUEST_SOURCE=$GUEST_OPT/source
GUEST_STAMP=$GUEST_OPT/installed-source.sha256
GUEST_CHECK=$GUEST_OPT/check_install.py
GUEST_ETC=/etc/edge-assistant
GUEST_CONFIG=$GUEST_ETC/config.toml
GUEST_MODELS=/var/lib/edge-assistant/models

DRY_RUN=false
WITH_MODELS=true
FORCE=false
UNINSTALL=false
PURGE=false
DISTRO=debian
# shellcheck disable=SC2034  # counted by lib/steps.sh
CHANGES=0

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# --- output: one line per step, "ok" when already right -----------------------------

# shellcheck source=lib/steps.sh disable=SC1091
source "$SOURCE_DIR/scripts/lib/steps.sh"

# A command inside the userland, with the models directory bound where the
# configuration expects it. Arguments must not contain spaces: older proot-distro
# versions join them into one shell command line.
in_distro() {
    run proot-distro login "$DISTRO" --bind "$MODELS_DIR:$GUEST_MODELS" -- "$@"
}

# --- options and paths ---------------------------------------------------------------

parse_args() {
    while (($#)); do
        case "$1" in
            --dry-run) DRY_RUN=true ;;
            --no-models) WITH_MODELS=false ;;
            --force) FORCE=true ;;
            --uninstall) UNINSTALL=true ;;
            --purge) PURGE=true ;;
            --distro)
                (($# >= 2)) || usage_error "--distro needs a name"
                DISTRO="$2"
                shift
                ;;
            --distro=*) DISTRO="${1#--distro=}" ;;
            -h | --help)
                usage
                exit 0
                ;;
            *) usage_error "unknown option $1" ;;
        esac
        shift
    done
    if $PURGE && ! $UNINSTALL; then
        usage_error "--purge only goes with --uninstall"
    fi
    [[ "$DISTRO" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || usage_error "--distro $DISTRO is not a proot-distro name"
}

usage_error() {
    printf 'error   %s (see --help)\n' "$1" >&2
    exit 2
}

set_paths() {
    if [[ -z "${PREFIX:-}" || ! -d "$PREFIX" ]]; then
        die "platform: \$PREFIX is not set to a directory: run this inside the Termux app (F-Droid or GitHub build)"
    fi
    TERMUX_PREFIX="$PREFIX"
    [[ -n "${HOME:-}" && -d "$HOME" ]] || die "platform: \$HOME is not a directory"
    BIN_DIR="$TERMUX_PREFIX/bin"
    START="$BIN_DIR/edge-assistant-start"
    STOP="$BIN_DIR/edge-assistant-stop"
    WRAPPER="$BIN_DIR/edge-assistant"
    BOOT_ENTRY="$HOME/.termux/boot/edge-assistant"
    STATE_DIR="$HOME/.local/share/edge-assistant"
    MODELS_DIR="$STATE_DIR/models"
    # Which userland this script created (uninstall removes only that one).
    CREATED_MARK="$STATE_DIR/created-distro-$DISTRO"
    LOG_DIR="$HOME/.local/state/edge-assistant"
    LOG="$LOG_DIR/edge-assistant.log"
    PD_DIR="$TERMUX_PREFIX/var/lib/proot-distro"
    find_rootfs
}

# proot-distro 5 keeps a userland in containers/NAME/rootfs, version 4 in
# installed-rootfs/NAME (5 moves it on first login). Empty when not installed.
find_rootfs() {
    ROOTFS=""
    local dir
    for dir in "$PD_DIR/containers/$DISTRO/rootfs" "$PD_DIR/installed-rootfs/$DISTRO"; do
        if [[ -d "$dir/etc" ]]; then
            ROOTFS="$dir"
            return
        fi
    done
}

show_plan() {
    local mode="install"
    $UNINSTALL && mode="uninstall"
    $PURGE && mode="uninstall and purge"
    $DRY_RUN && mode="$mode, dry run: nothing is changed"
    echo "edge-assistant on Termux: $mode"
    note "source    $SOURCE_DIR"
    note "userland  $DISTRO (${ROOTFS:-not installed yet})"
    note "venv      $GUEST_VENV (in $DISTRO)"
    note "config    $GUEST_CONFIG (in $DISTRO)"
    note "models    $MODELS_DIR (in $DISTRO: $GUEST_MODELS)"
    note "start     $START"
    note "boot      $BOOT_ENTRY"
}

# --- checks -------------------------------------------------------------------------

check_platform() {
    local arch
    arch="$(uname -m)"
    if [[ " ${SUPPORTED_ARCHS[*]} " != *" $arch "* ]]; then
        die "platform: $arch is not supported: onnxruntime and Piper have wheels for 64-bit ARM (aarch64) only; a 64-bit phone with a 64-bit Android is needed"
    fi
    command -v pkg >/dev/null || die "platform: pkg not found: run this inside the Termux app"
    if ((EUID == 0)); then
        warn "platform: running as root: proot-distro may refuse, and Termux's files would end up owned by root; run it as Termux's own user"
    fi
    ok "platform: Termux ($TERMUX_PREFIX), $arch"
}

check_memory() {
    [[ -r "$MEMINFO" ]] || die "memory: cannot read $MEMINFO"
    local mem_kb
    mem_kb="$(awk '/^MemTotal:/ {print $2}' "$MEMINFO")"
    [[ "$mem_kb" =~ ^[0-9]+$ ]] || die "memory: no MemTotal in $MEMINFO"
    local have reason
    have="$(gib "$((mem_kb * 1024))") RAM"
    reason="model and projector are 3.6 GB of files and Android's low-memory killer stops an app that holds much more than half of RAM"
    if ((mem_kb < MIN_RAM_KB)); then
        if $FORCE; then
            warn "memory: $have, under the 6 GB floor ($reason); continuing (--force): expect it to be killed"
        else
            die "memory: $have, under the 6 GB floor: $reason; a 6-8 GB phone is the minimum (--force to try anyway)"
        fi
    elif ((mem_kb < WARN_RAM_KB)); then
        warn "memory: $have, a 6 GB phone: it fits with other apps closed; Android's low-memory killer may still stop it ($reason)"
    else
        ok "memory: $have"
    fi
}

# Free storage against what this run still has to write: the missing models, the
# audio-only projector copy, and the userland with its venv if not there yet.
check_storage() {
    local models_bytes=0 userland_bytes=0 need free dir
    if $WITH_MODELS; then
        models_bytes="$(missing_model_bytes)"
    fi
    if [[ -z "$ROOTFS" || ! -x "$ROOTFS$GUEST_CLI" ]]; then
        userland_bytes=$USERLAND_NEEDS_BYTES
    fi
    need=$((models_bytes + userland_bytes))
    # On a phone both live on the /data partition.
    dir="$(existing_parent "$HOME")"
    free="$(($(df -Pk -- "$dir" | awk 'NR == 2 {print $4}') * 1024))"
    if ((free < need)); then
        die "storage: this install needs $(gb "$need") more (models $(gb "$models_bytes"), Debian userland and venv $(gb "$userland_bytes")), but $dir has $(gb "$free") free"
    fi
    ok "storage: $(gb "$free") free (this run needs $(gb "$need"))"
}

# The termux-api package is the command; the Termux:API app answers it. Without the
# app (or with a Termux:API from another store than Termux) the command never returns.
check_termux_api() {
    if ! command -v termux-microphone-record >/dev/null; then
        if $DRY_RUN; then
            note "Termux:API: checked once pkg has installed termux-api"
            return
        fi
        die "Termux:API: termux-microphone-record not found: pkg install termux-api"
    fi
    if ! timeout "$API_TIMEOUT" termux-microphone-record -i >/dev/null 2>&1; then
        die "Termux:API: the Termux:API app does not answer: install the Termux:API app from the same place as Termux (F-Droid or GitHub, not mixed), open it once, then run this again"
    fi
    ok "Termux:API: the app answers"
}

# A one-second recording: Termux:API asks for the permission if it does not have it.
# Termux and its plugins share one Android user id, so the permission granted to
# Termux:API is what lets PulseAudio's OpenSL ES source record.
check_microphone() {
    if ! command -v termux-microphone-record >/dev/null; then
        $DRY_RUN && return
    fi
    local probe="$WORK_DIR/microphone-probe.m4a" answer
    answer="$(timeout "$API_TIMEOUT" termux-microphone-record -f "$probe" -l 1 2>&1)" || true
    if [[ "$answer" == *"Please grant"* || "$answer" == *RECORD_AUDIO* ]]; then
        die "microphone: no permission to record: allow it in the dialog Android shows now, or in Settings > Apps > Termux:API > Permissions > Microphone > Allow, then run this again"
    elif [[ "$answer" == *"already in progress"* ]]; then
        die "microphone: another termux-microphone-record is running: stop it with termux-microphone-record -q, then run this again"
    elif [[ "$answer" != *"started"* ]]; then
        die "microphone: the probe recording failed: $(head -n 1 <<<"${answer:-no answer in $API_TIMEOUT s}")"
    fi
    # "started" is the answer that matters; stop the probe rather than wait for it.
    timeout "$API_TIMEOUT" termux-microphone-record -q >/dev/null 2>&1 || true
    rm -f -- "$probe"
    ok "microphone: permission granted (a 1 s probe recorded)"
}

# --- Termux side --------------------------------------------------------------------

install_termux_packages() {
    local missing=() package
    for package in "${TERMUX_PACKAGES[@]}"; do
        command -v "${TERMUX_COMMAND[$package]}" >/dev/null || missing+=("$package")
    done
    if ((${#missing[@]} == 0)); then
        ok "termux packages: ${TERMUX_PACKAGES[*]}"
    else
        change "termux packages: install ${missing[*]}"
        run pkg install -y "${missing[@]}"
    fi
}

create_dirs() {
    local dir
    for dir in "$MODELS_DIR" "$LOG_DIR"; do
        if [[ -d "$dir" ]]; then
            ok "directory: $dir"
        else
            change "directory: $dir"
            run mkdir -p -- "$dir"
        fi
    done
}

# --- Debian side --------------------------------------------------------------------

create_distro() {
    if [[ -n "$ROOTFS" ]]; then
        ok "userland: $DISTRO in $ROOTFS"
        return
    fi
    change "userland: install Debian as proot-distro's $DISTRO (downloads about 50 MB)"
    if [[ "$DISTRO" == debian ]]; then
        run proot-distro install debian
    else
        # --name in proot-distro 5, which still accepts version 4's --override-alias.
        run proot-distro install --override-alias "$DISTRO" debian
    fi
    if ! $DRY_RUN; then
        find_rootfs
        [[ -n "$ROOTFS" ]] || die "userland: proot-distro installed $DISTRO, but neither $PD_DIR/containers/$DISTRO/rootfs nor $PD_DIR/installed-rootfs/$DISTRO exists"
        write_file_from_string "$DISTRO" "$CREATED_MARK" 0644
    fi
}

debian_package_installed() {
    [[ -n "$ROOTFS" && -f "$ROOTFS/var/lib/dpkg/status" ]] || return 1
    awk -v want="$1" '
        /^Package: / { name = $2 }
        /^Status: / && name == want && / installed$/ && !/not-installed/ { found = 1 }
        END { exit !found }
    ' "$ROOTFS/var/lib/dpkg/status"
}

install_debian_packages() {
    local missing=() package
    for package in "${DEBIAN_PACKAGES[@]}"; do
        debian_package_installed "$package" || missing+=("$package")
    done
    if ((${#missing[@]} == 0)); then
        ok "debian packages: ${DEBIAN_PACKAGES[*]}"
        return
    fi
    change "debian packages: install ${missing[*]}"
    in_distro apt-get update
    in_distro env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# The files pip builds from; README.md is copied (the package metadata needs it) but
# left out of the fingerprint, so a documentation edit does not trigger a reinstall.
source_fingerprint() {
    (
        cd "$SOURCE_DIR"
        find pyproject.toml edge_assistant patches scripts/install_llama_cpp.sh -type f ! -path '*/__pycache__/*' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d ' ' -f 1
    )
}

install_venv() {
    local fingerprint
    fingerprint="$(source_fingerprint)"
    if [[ -n "$ROOTFS" && -x "$ROOTFS$GUEST_CLI" && -f "$ROOTFS$GUEST_STAMP" &&
        "$(cat "$ROOTFS$GUEST_STAMP")" == "$fingerprint" ]]; then
        ok "venv: $GUEST_VENV up to date with $SOURCE_DIR"
        return
    fi
    if [[ -z "$ROOTFS" || ! -x "$ROOTFS$GUEST_VENV/bin/python" ]]; then
        change "venv: create $GUEST_VENV in $DISTRO"
        in_distro python3 -m venv "$GUEST_VENV"
    fi
    change "venv: install edge-assistant from $SOURCE_DIR"
    if [[ -z "$ROOTFS" || ! -x "$ROOTFS$GUEST_CLI" ]]; then
        note "llama-cpp-python is compiled for this phone's CPU the first time, which takes"
        note "a while; keep Termux in the foreground. pip keeps the built wheel."
    fi
    # pip builds from a copy inside the userland; the guest sees it at $GUEST_SOURCE.
    local staging="$ROOTFS$GUEST_SOURCE"
    [[ -n "$ROOTFS" ]] || staging="<userland>$GUEST_SOURCE"
    run rm -rf -- "$staging"
    run mkdir -p -- "$staging"
    run cp -R "$SOURCE_DIR/pyproject.toml" "$SOURCE_DIR/README.md" "$SOURCE_DIR/edge_assistant" "$SOURCE_DIR/patches" "$staging/"
    run mkdir -p -- "$staging/scripts"
    run cp "$SOURCE_DIR/scripts/install_llama_cpp.sh" "$staging/scripts/"
    write_file_from_string "import llama_cpp, edge_assistant.cli" "${ROOTFS:-<userland>}$GUEST_CHECK" 0644
    # GGML_NATIVE: llama.cpp for exactly this CPU (dotprod, i8mm where the cores have them),
    # with edge-assistant's stateful audio encoder (patches/), its wheel cached.
    in_distro env CMAKE_ARGS=-DGGML_NATIVE=ON "CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)" \
        bash "$GUEST_SOURCE/scripts/install_llama_cpp.sh" "$GUEST_VENV/bin/python"
    in_distro env CMAKE_ARGS=-DGGML_NATIVE=ON "CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)" \
        "$GUEST_VENV/bin/pip" install --disable-pip-version-check --no-input --upgrade "$GUEST_SOURCE"
    in_distro "$GUEST_VENV/bin/python" "$GUEST_CHECK"
    write_file_from_string "$fingerprint" "${ROOTFS:-<userland>}$GUEST_STAMP" 0644
}

config_template() {
    cat <<EOF
# edge-assistant configuration, written by scripts/provision_termux.sh.
# This file is inside the Debian userland ($DISTRO); from Termux it is
# ${ROOTFS:-\$PREFIX/var/lib/proot-distro/.../$DISTRO}$GUEST_CONFIG
#
# Only what differs from the defaults belongs here, so upgrades bring new defaults.
# Every setting with its current value: edge-assistant config show
# After an edit: edge-assistant-stop; edge-assistant-start --background

[models]
# Termux's $MODELS_DIR, bound here by edge-assistant-start.
dir = "$GUEST_MODELS"

# Termux's PulseAudio, through ALSA's pcm "pulse" (libasound2-plugins) over
# PULSE_SERVER=127.0.0.1: the microphone is its OpenSL ES source, the speaker its
# AAudio sink. List the devices: edge-assistant devices
[input]
device = "pulse"

[tts]
output_device = "pulse"

# Phones mix big and little cores; llama.cpp is usually fastest on the big ones only
# (for example 4 of 8). The default is every core the system reports.
# [engine]
# threads = 4
EOF
}

# Write the template if there is no config; never replace one that differs from it.
write_config() {
    local template="$WORK_DIR/config.toml" config
    config_template >"$template"
    if [[ -z "$ROOTFS" ]]; then
        change "config: write $GUEST_CONFIG in $DISTRO"
        return
    fi
    config="$ROOTFS$GUEST_CONFIG"
    if [[ ! -e "$config" ]]; then
        change "config: write $GUEST_CONFIG in $DISTRO"
        run install -d -m 0755 "$ROOTFS$GUEST_ETC"
        run install -m 0644 "$template" "$config"
    elif cmp -s "$template" "$config"; then
        ok "config: $GUEST_CONFIG"
    elif [[ -e "$config.new" ]] && cmp -s "$template" "$config.new"; then
        ok "config: kept your edited $GUEST_CONFIG; this version's template is in $GUEST_CONFIG.new"
    else
        change "config: kept your edited $GUEST_CONFIG; wrote this version's template to $GUEST_CONFIG.new"
        run install -m 0644 "$template" "$config.new"
    fi
    check_config
}

# A config the installed version rejects would stop the daemon: say so now.
check_config() {
    if $DRY_RUN || [[ ! -x "$ROOTFS$GUEST_CLI" || ! -e "$ROOTFS$GUEST_CONFIG" ]]; then
        return
    fi
    local problem
    if ! problem="$(proot-distro login "$DISTRO" --bind "$MODELS_DIR:$GUEST_MODELS" -- \
        "$GUEST_CLI" --config "$GUEST_CONFIG" config show 2>&1 >/dev/null)"; then
        die "config: $GUEST_CONFIG is not valid for this version: ${problem#edge-assistant: }"
    fi
}

# --- models: the manifest as scripts/lib/manifest.sh reads it ------------------------

# shellcheck source=lib/manifest.sh disable=SC1091
source "$SOURCE_DIR/scripts/lib/manifest.sh"

# edge-assistant inside the userland, for install_models.
# shellcheck disable=SC2034  # read by lib/manifest.sh's install_models
CLI_MODELS_DIR="$GUEST_MODELS"
models_cli() {
    in_distro "$GUEST_CLI" --config "$GUEST_CONFIG" "$@"
}


# --- the commands and the boot entry -------------------------------------------------

start_script() {
    cat <<EOF
#!$TERMUX_PREFIX/bin/bash
$MARK: runs edge-assistant in the
# proot-distro userland "$DISTRO", with Termux's PulseAudio as microphone and speaker.
#   edge-assistant-start               in this terminal; Ctrl-C stops it
#   edge-assistant-start --background  detached, restarted after a crash, log in
#                                      $LOG
#   edge-assistant-start --audio-only  only PulseAudio (edge-assistant devices does this)
# Stop it: edge-assistant-stop
set -euo pipefail

DISTRO=$(printf '%q' "$DISTRO")
MODELS_DIR=$(printf '%q' "$MODELS_DIR")
LOG=$(printf '%q' "$LOG")
DAEMON=($GUEST_CLI run --config $GUEST_CONFIG)

# PulseAudio in Termux: the microphone through OpenSL ES (module-sles-source), the
# speaker through AAudio (Termux's default.pa loads module-aaudio-sink), and TCP on
# 127.0.0.1 for the userland. It stays up when idle (--exit-idle-time=-1).
start_pulseaudio() {
    if ! pulseaudio --check 2>/dev/null; then
        pulseaudio --start --exit-idle-time=-1 \\
            --load="module-native-protocol-tcp auth-ip-acl=127.0.0.1 auth-anonymous=1" \\
            --load="module-sles-source"
    fi
    local modules
    modules="\$(pactl list short modules)"
    if ! grep -q module-native-protocol-tcp <<<"\$modules"; then
        pactl load-module module-native-protocol-tcp auth-ip-acl=127.0.0.1 auth-anonymous=1 >/dev/null
    fi
    if ! grep -q module-sles-source <<<"\$modules"; then
        pactl load-module module-sles-source >/dev/null
    fi
    if ! grep -q -e module-aaudio-sink -e module-sles-sink <<<"\$modules"; then
        pactl load-module module-aaudio-sink >/dev/null 2>&1 || pactl load-module module-sles-sink >/dev/null
    fi
    # Not the speaker's monitor: the microphone.
    if ! pactl set-default-source OpenSL_ES_source; then
        echo "edge-assistant-start: no OpenSL_ES_source in PulseAudio (pactl list short sources): the microphone may be silent" >&2
    fi
}

run_daemon() {
    proot-distro login "\$DISTRO" --bind "\$MODELS_DIR:$GUEST_MODELS" -- \\
        env PULSE_SERVER=127.0.0.1 "\${DAEMON[@]}"
}

# Processes whose command line contains \$1 (our own user's only: Android hides the rest).
pids_of() {
    local dir command
    for dir in /proc/[0-9]*; do
        command="\$(tr '\\0' ' ' <"\$dir/cmdline" 2>/dev/null)" || continue
        [[ "\$command" == *"\$1"* && "\${dir#/proc/}" != "\$\$" ]] && echo "\${dir#/proc/}"
    done
    return 0
}

case "\${1:-}" in
    --audio-only)
        start_pulseaudio
        ;;
    --background)
        if [[ -n "\$(pids_of "edge-assistant-start --supervise")" ]]; then
            echo "edge-assistant is already running (log: \$LOG)"
            exit 0
        fi
        mkdir -p "\$(dirname "\$LOG")"
        nohup "\$0" --supervise >>"\$LOG" 2>&1 </dev/null &
        echo "edge-assistant started in the background (log: \$LOG; stop: edge-assistant-stop)"
        ;;
    --supervise)
        # Like the Pi's systemd unit: restart after a crash, not after a configuration
        # (2) or model (3) error, which a restart cannot fix.
        termux-wake-lock
        start_pulseaudio
        while true; do
            echo "\$(date '+%F %T') starting edge-assistant"
            status=0
            run_daemon || status=\$?
            echo "\$(date '+%F %T') edge-assistant exited with \$status"
            case "\$status" in 0 | 2 | 3 | 130 | 143) break ;; esac
            sleep 10
        done
        ;;
    "")
        termux-wake-lock
        start_pulseaudio
        run_daemon
        ;;
    *)
        echo "usage: edge-assistant-start [--background | --audio-only]" >&2
        exit 2
        ;;
esac
EOF
}

stop_script() {
    cat <<EOF
#!$TERMUX_PREFIX/bin/bash
$MARK: stops edge-assistant
# (started by edge-assistant-start) and releases the wake lock. PulseAudio keeps
# running; stop it too with: pulseaudio --kill
set -euo pipefail

pids_of() {
    local dir command
    for dir in /proc/[0-9]*; do
        command="\$(tr '\\0' ' ' <"\$dir/cmdline" 2>/dev/null)" || continue
        [[ "\$command" == *"\$1"* && "\${dir#/proc/}" != "\$\$" ]] && echo "\${dir#/proc/}"
    done
    return 0
}

# The supervisor first, so that it does not start the daemon again.
mapfile -t supervisors < <(pids_of "edge-assistant-start --supervise")
mapfile -t daemons < <(pids_of "$GUEST_CLI run")
if ((\${#supervisors[@]} + \${#daemons[@]} == 0)); then
    echo "edge-assistant is not running"
else
    ((\${#supervisors[@]} == 0)) || kill -TERM "\${supervisors[@]}" 2>/dev/null || true
    ((\${#daemons[@]} == 0)) || kill -TERM "\${daemons[@]}" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [[ -z "\$(pids_of "$GUEST_CLI run")" ]] && break
        sleep 1
    done
    echo "edge-assistant stopped"
fi
termux-wake-unlock
EOF
}

wrapper_script() {
    cat <<EOF
#!$TERMUX_PREFIX/bin/bash
$MARK: any edge-assistant
# command, run in the userland "$DISTRO" with its configuration and Termux's PulseAudio:
#   edge-assistant devices        edge-assistant config show        edge-assistant models verify
# (Arguments with spaces are not passed intact by older proot-distro versions.)
set -euo pipefail
"$START" --audio-only
exec proot-distro login $(printf '%q' "$DISTRO") --bind $(printf '%q' "$MODELS_DIR:$GUEST_MODELS") -- \\
    env PULSE_SERVER=127.0.0.1 $GUEST_CLI --config $GUEST_CONFIG "\$@"
EOF
}

boot_script() {
    cat <<EOF
#!$TERMUX_PREFIX/bin/sh
$MARK: Termux:Boot runs this
# when the phone has started (install the Termux:Boot app and open it once).
termux-wake-lock
exec "$START" --background
EOF
}

write_generated() {
    local what="$1" path="$2" content="$3"
    if [[ -f "$path" ]] && [[ "$(cat "$path")" == "$content" ]] && [[ -x "$path" ]]; then
        ok "$what: $path"
        return
    fi
    if [[ -e "$path" ]] && ! grep -qF "$MARK" "$path"; then
        die "$what: $path exists and is not this script's; move it away, then run this again"
    fi
    change "$what: write $path"
    run mkdir -p -- "$(dirname "$path")"
    write_file_from_string "$content" "$path" 0755
}

write_commands() {
    write_generated "start command" "$START" "$(start_script)"
    write_generated "stop command" "$STOP" "$(stop_script)"
    write_generated "command" "$WRAPPER" "$(wrapper_script)"
    write_generated "boot entry" "$BOOT_ENTRY" "$(boot_script)"
}

# --- uninstall ----------------------------------------------------------------------

uninstall() {
    if [[ -x "$STOP" ]] && grep -qF "$MARK" "$STOP"; then
        note "daemon: stopped first, if it runs"
        show_command "$STOP"
        $DRY_RUN || "$STOP" | sed 's/^/        /'
    fi
    remove_ours "boot entry" "$BOOT_ENTRY"
    remove_ours "command" "$WRAPPER"
    remove_ours "stop command" "$STOP"
    remove_ours "start command" "$START"
    if [[ -f "$CREATED_MARK" ]]; then
        if [[ -n "$ROOTFS" ]]; then
            change "userland: remove $DISTRO (this script created it)"
            run proot-distro remove "$DISTRO"
        else
            ok "userland: no $DISTRO"
        fi
        remove_path "$CREATED_MARK" "userland mark"
    elif [[ -n "$ROOTFS" ]]; then
        note "userland: $DISTRO was there before; only edge-assistant's files leave it"
        remove_path "$ROOTFS$GUEST_OPT" "venv"
        remove_path "$ROOTFS$GUEST_ETC" "config"
    else
        ok "userland: no $DISTRO"
    fi
    remove_path "$LOG_DIR" "logs"
    if $PURGE; then
        remove_path "$STATE_DIR" "models"
    else
        note "kept: models in $MODELS_DIR (remove them with --uninstall --purge)"
    fi
    note "kept: the Termux packages (${TERMUX_PACKAGES[*]})"
}

remove_ours() {
    local what="$1" path="$2"
    if [[ -f "$path" ]] && grep -qF "$MARK" "$path"; then
        change "$what: remove $path"
        run rm -f -- "$path"
    elif [[ -e "$path" ]]; then
        warn "$what: $path is not this script's; left alone"
    else
        ok "$what: no $path"
    fi
}


# --- helpers ------------------------------------------------------------------------




summary() {
    report_changes
    $UNINSTALL && return
    cat <<EOF

Start it in this terminal (Ctrl-C stops it), or in the background:
  edge-assistant-start
  edge-assistant-start --background      # log: $LOG
  edge-assistant-stop
Check the devices ("pulse" is the microphone and the speaker) and the settings:
  edge-assistant devices
  edge-assistant config show
So that Android does not stop it: Settings > Apps > Termux > Battery > Unrestricted
(battery optimisation off); for autostart install the Termux:Boot app and open it once.
Update: git pull, then run this script again. Uninstall: bash $0 --uninstall
EOF
}

main() {
    parse_args "$@"
    set_paths
    WORK_DIR="$(mktemp -d "${TMPDIR:-$TERMUX_PREFIX/tmp}/edge-assistant.XXXXXX")"
    trap 'rm -rf "$WORK_DIR"' EXIT
    show_plan
    echo
    if $UNINSTALL; then
        uninstall
    else
        check_platform
        check_memory
        check_storage
        install_termux_packages
        check_termux_api
        check_microphone
        create_dirs
        create_distro
        install_debian_packages
        install_venv
        write_config
        install_models
        write_commands
    fi
    summary
}

main "$@"
