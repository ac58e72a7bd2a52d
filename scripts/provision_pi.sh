#!/usr/bin/env bash
# Take a fresh Raspberry Pi OS (Bookworm, 64-bit) to a running, always-listening
# edge-assistant: Debian packages, a system user, a virtual environment under
# /opt/edge-assistant, the models in /var/lib/edge-assistant/models, a configuration
# in /etc/edge-assistant and the systemd service. 64-bit Debian or Ubuntu on x86_64
# works too.
#
# Safe to run again: every step first checks whether it is already right and then
# does nothing, so a second run reports "nothing to change". After `git pull` a run
# reinstalls the package and restarts the service. A configuration you edited is
# never overwritten: the current template goes to config.toml.new beside it.
#
# The service is offline. If the config names a Home Assistant ([home_assistant]
# url) or satellites ([[satellite]] uri), a systemd drop-in opens its network to
# those addresses only, resolved at this run: run the script again when one changes.
#
# --satellite installs the thin satellite instead (README "Rooms"): for a room's
# Pi Zero 2 W or spare board, no model, no llama.cpp build, only the audio and
# Wyoming packages, as edge-assistant-satellite.service listening on TCP 10700
# to the LAN.
#
# Usage: sudo scripts/provision_pi.sh [OPTIONS]
#   --dry-run      print every action and command, change nothing
#   --no-models    skip the model download (about 3.7 GB)
#   --no-service   do not install, enable or start the systemd service
#   --satellite    install the thin Wyoming satellite (no model) instead of the assistant
#   --prefix DIR   install into DIR/opt, DIR/etc and DIR/var/lib as the current user,
#                  for tests and non-root installs. Touches nothing outside DIR: no
#                  Debian packages (only checked), no system user, no service.
#   --uninstall    stop and remove the service, the virtual environment and the user;
#                  keep the models and the configuration
#   --purge        with --uninstall: remove the models, configuration and cache too
#   -h, --help     this text
set -euo pipefail

SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICE=edge-assistant
SERVICE_USER=edge-assistant
AUDIO_GROUP=audio
# The Debian interpreter, never whatever `python3` is first on PATH: a venv built on
# a pyenv or conda Python under /root or /home would break under ProtectHome=.
SYSTEM_PYTHON=/usr/bin/python3
# Runtime: PortAudio (sounddevice) and the ALSA tools. Build: llama-cpp-python has no
# aarch64 wheel, llama.cpp is compiled for this CPU with patches/ applied.
PACKAGES=(python3 python3-venv python3-dev build-essential cmake patch libportaudio2 alsa-utils)
# The satellite builds nothing: wheels only.
SATELLITE_PACKAGES=(python3 python3-venv libportaudio2 alsa-utils)
# What `edge-assistant satellite` imports (the package itself goes in without its
# dependencies: llama-cpp-python would be compiled for nothing).
SATELLITE_PYTHON_PACKAGES=("numpy>=1.24" "sounddevice>=0.4.6" "soundfile>=0.12" "soxr>=0.3" "wyoming>=1.5,<2")
# 64-bit userland only: a 64-bit kernel under a 32-bit OS still says aarch64 in uname.
SUPPORTED_ARCHS=(arm64 amd64)
MIN_PYTHON=3.10
# A "4 GB" board reports less: the firmware and the GPU keep some.
MIN_RAM_KB=3500000
# The virtual environment (about 0.5 GB) plus pip's llama.cpp build tree.
VENV_NEEDS_BYTES=1500000000

DRY_RUN=false
WITH_MODELS=true
WITH_SERVICE=true
SATELLITE=false
UNINSTALL=false
PURGE=false
PREFIX=""
# shellcheck disable=SC2034  # counted by lib/steps.sh
CHANGES=0

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# --- output: one line per step, "ok" when already right -----------------------------

# shellcheck source=lib/steps.sh disable=SC1091
source "$SOURCE_DIR/scripts/lib/steps.sh"

# The service's own commands (model download) run as the service user, not as root.
run_as_service_user() {
    if [[ -n "$PREFIX" ]]; then
        run "$@"
    else
        run runuser -u "$SERVICE_USER" -- env HOME="$STATE_DIR" "$@"
    fi
}

# --- options and paths ---------------------------------------------------------------

parse_args() {
    while (($#)); do
        case "$1" in
            --dry-run) DRY_RUN=true ;;
            --no-models) WITH_MODELS=false ;;
            --no-service) WITH_SERVICE=false ;;
            --satellite) SATELLITE=true ;;
            --uninstall) UNINSTALL=true ;;
            --purge) PURGE=true ;;
            --prefix)
                (($# >= 2)) || usage_error "--prefix needs a directory"
                PREFIX="$2"
                shift
                ;;
            --prefix=*) PREFIX="${1#--prefix=}" ;;
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
    if [[ -n "$PREFIX" ]]; then
        PREFIX="$(realpath -m -- "$PREFIX")"
        [[ "$PREFIX" != / ]] || PREFIX=""
    fi
    if $SATELLITE; then
        SERVICE=edge-assistant-satellite
        WITH_MODELS=false
        PACKAGES=("${SATELLITE_PACKAGES[@]}")
    fi
}

usage_error() {
    printf 'error   %s (see --help)\n' "$1" >&2
    exit 2
}

set_paths() {
    OPT_DIR="$PREFIX/opt/edge-assistant"
    VENV="$OPT_DIR/venv"
    CLI="$VENV/bin/edge-assistant"
    # Which sources the venv was last built from: a re-run skips pip when equal.
    INSTALLED_STAMP="$OPT_DIR/installed-source.sha256"
    ETC_DIR="$PREFIX/etc/edge-assistant"
    CONFIG="$ETC_DIR/config.toml"
    STATE_DIR="$PREFIX/var/lib/edge-assistant"
    MODELS_DIR="$STATE_DIR/models"
    # shellcheck disable=SC2034  # read by lib/manifest.sh's install_models
    CLI_MODELS_DIR="$MODELS_DIR"
    CACHE_DIR="$PREFIX/var/cache/edge-assistant"
    UNIT_SOURCE="$SOURCE_DIR/systemd/$SERVICE.service"
    UNIT_FILE="/etc/systemd/system/$SERVICE.service"
    # Local changes made with `systemctl edit`: kept unless --purge.
    UNIT_DROP_INS="$UNIT_FILE.d"
    # Ours: opens the network to Home Assistant and the satellites when the config
    # names them. With --prefix it is written into the prefix, where no service reads it.
    NETWORK_DROP_IN="$PREFIX$UNIT_DROP_INS/network.conf"
    # Its name before satellites: removed when found.
    OLD_NETWORK_DROP_IN="$PREFIX$UNIT_DROP_INS/home-assistant.conf"
    # On PATH for everyone, so `edge-assistant --once` works without the venv path.
    COMMAND_LINK=/usr/local/bin/edge-assistant
}

show_plan() {
    local mode="install"
    $UNINSTALL && mode="uninstall"
    $PURGE && mode="uninstall and purge"
    $DRY_RUN && mode="$mode, dry run: nothing is changed"
    ! $SATELLITE || mode="$mode of the satellite"
    echo "edge-assistant provisioning: $mode"
    if [[ -n "$PREFIX" ]]; then
        note "user      $(id -un) (--prefix: no system user)"
    else
        note "user      $SERVICE_USER (group $AUDIO_GROUP)"
    fi
    note "source    $SOURCE_DIR"
    note "venv      $VENV"
    note "config    $CONFIG"
    $SATELLITE || note "models    $MODELS_DIR"
    if [[ -n "$PREFIX" ]]; then
        note "unit      none (--prefix)"
    else
        note "unit      $UNIT_FILE"
    fi
}

require_root() {
    if [[ -z "$PREFIX" ]] && ((EUID != 0)) && ! $DRY_RUN; then
        die "run as root (sudo $0), or install as yourself with --prefix DIR"
    fi
}

# --- checks -------------------------------------------------------------------------

check_platform() {
    [[ -r /etc/os-release ]] || die "platform: no /etc/os-release; this script needs Debian, Raspberry Pi OS or Ubuntu"
    local id id_like pretty_name arch board=""
    id="$(os_release ID)"
    id_like="$(os_release ID_LIKE)"
    pretty_name="$(os_release PRETTY_NAME)"
    if [[ " $id $id_like " != *" debian "* ]]; then
        die "platform: $pretty_name is not Debian-based; this script needs Debian, Raspberry Pi OS or Ubuntu"
    fi
    command -v dpkg >/dev/null || die "platform: dpkg not found on a Debian-based system"
    arch="$(dpkg --print-architecture)"
    if [[ " ${SUPPORTED_ARCHS[*]} " != *" $arch "* ]]; then
        die "platform: $arch userland is not supported: install the 64-bit Raspberry Pi OS (arm64)"
    fi
    if [[ -r /proc/device-tree/model ]]; then
        board="$(tr -d '\0' </proc/device-tree/model)"
    fi
    $SATELLITE && board="${board:+$board, }satellite"
    case "$board" in
        *satellite) ;;
        "Raspberry Pi 4"*) warn "platform: a Pi 4 answers a 5 s question after about 35 s; a Pi 5 takes about 5 s" ;;
        "Raspberry Pi 5"*) ;;
        "Raspberry Pi"*) warn "platform: $board is slower than a Pi 4: expect very long answers" ;;
    esac
    ok "platform: ${board:+$board, }$pretty_name, $arch"
}

check_memory() {
    local mem_kb swap_kb
    mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    swap_kb="$(awk '/^SwapTotal:/ {print $2}' /proc/meminfo)"
    if ((mem_kb < MIN_RAM_KB)); then
        # About 1.2 GiB must stay resident (projector, buffers, voice, Python); the
        # 2.6 GB model file is paged in from storage. Swap can hold only the former.
        warn "memory: $(gib "$((mem_kb * 1024))") RAM and $(gib "$((swap_kb * 1024))") swap, under a 4 GB board: add 2 GB of compressed swap (sudo apt-get install zram-tools; ALGO=zstd and SIZE=2048 in /etc/default/zramswap) and expect slow answers"
    else
        ok "memory: $(gib "$((mem_kb * 1024))") RAM, $(gib "$((swap_kb * 1024))") swap"
    fi
}

# Free disk against what this run still has to write: the missing models, the
# audio-only projector copy, and the virtual environment if it does not exist yet.
check_disk() {
    local models_bytes=0 venv_bytes=0
    if $WITH_MODELS; then
        models_bytes="$(missing_model_bytes)"
    fi
    [[ -x "$VENV/bin/python" ]] || venv_bytes=$VENV_NEEDS_BYTES
    if ! $WITH_MODELS; then
        need_space "$OPT_DIR" "$venv_bytes" "virtual environment"
    elif [[ "$(filesystem_of "$STATE_DIR")" == "$(filesystem_of "$OPT_DIR")" ]]; then
        need_space "$STATE_DIR" "$((models_bytes + venv_bytes))" "models and virtual environment"
    else
        need_space "$STATE_DIR" "$models_bytes" "models"
        need_space "$OPT_DIR" "$venv_bytes" "virtual environment"
    fi
}

need_space() {
    local dir="$1" bytes="$2" what="$3" free
    free="$(($(df -Pk -- "$(existing_parent "$dir")" | awk 'NR == 2 {print $4}') * 1024))"
    if ((free < bytes)); then
        die "disk: $what need $(gb "$bytes") more, but $(existing_parent "$dir") has $(gb "$free") free"
    fi
    ok "disk: $(gb "$free") free for $what (this run needs $(gb "$bytes"))"
}

check_audio_input() {
    if ! command -v arecord >/dev/null; then
        warn "audio: cannot look for a microphone: arecord not found (Debian package alsa-utils)"
        return
    fi
    local cards
    cards="$(arecord -l 2>/dev/null | grep '^card ' || true)"
    if [[ -z "$cards" ]]; then
        warn "audio: no audio input device (arecord -l lists none): plug in a USB microphone or a microphone HAT; the service cannot listen without one"
    else
        ok "audio: input $(head -n 1 <<<"$cards") ($(wc -l <<<"$cards") in all)"
    fi
    # The service opens the card through ALSA directly; a desktop session's PipeWire
    # (Raspberry Pi OS with desktop) may hold it.
    if package_installed pipewire; then
        warn "audio: PipeWire is installed (a desktop image): a logged-in desktop can keep the sound card busy; Raspberry Pi OS Lite avoids that"
    fi
}

check_python() {
    if [[ ! -x "$SYSTEM_PYTHON" ]]; then
        $DRY_RUN || die "python: $SYSTEM_PYTHON not found after installing python3"
        return
    fi
    local version
    version="$("$SYSTEM_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [[ "$(printf '%s\n' "$MIN_PYTHON" "$version" | sort -V | head -n 1)" != "$MIN_PYTHON" ]]; then
        die "python: $SYSTEM_PYTHON is $version; edge-assistant needs $MIN_PYTHON or newer"
    fi
    ok "python: $SYSTEM_PYTHON $version"
}

# --- install steps ------------------------------------------------------------------

install_packages() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        if ! package_installed "$package"; then
            missing+=("$package")
        fi
    done
    if ((${#missing[@]} == 0)); then
        ok "packages: ${PACKAGES[*]}"
    elif [[ -n "$PREFIX" ]]; then
        warn "packages: missing ${missing[*]} (--prefix installs none; as root: apt-get install ${missing[*]})"
    else
        change "packages: install ${missing[*]}"
        run apt-get update
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

create_user() {
    [[ -z "$PREFIX" ]] || return 0
    if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        change "user: create system user $SERVICE_USER in group $AUDIO_GROUP"
        run useradd --system --user-group --groups "$AUDIO_GROUP" --home-dir "$STATE_DIR" \
            --no-create-home --shell /usr/sbin/nologin --comment "edge-assistant voice assistant" "$SERVICE_USER"
    elif ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx "$AUDIO_GROUP"; then
        change "user: add $SERVICE_USER to group $AUDIO_GROUP"
        run usermod --append --groups "$AUDIO_GROUP" "$SERVICE_USER"
    else
        ok "user: $SERVICE_USER, in group $AUDIO_GROUP"
    fi
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
    if venv_works && [[ -f "$INSTALLED_STAMP" && "$(cat "$INSTALLED_STAMP")" == "$fingerprint" ]]; then
        ok "venv: $VENV, $("$CLI" --version) up to date with $SOURCE_DIR"
        return
    fi
    if ! venv_works; then
        change "venv: create $VENV"
        run mkdir -p "$OPT_DIR"
        run rm -rf "$VENV"
        run "$SYSTEM_PYTHON" -m venv "$VENV"
    fi
    change "venv: install edge-assistant from $SOURCE_DIR"
    if $SATELLITE; then
        install_satellite_package
        write_file_from_string "$fingerprint" "$INSTALLED_STAMP" 0644
        return
    fi
    if ! "$VENV/bin/python" -c 'import llama_cpp' 2>/dev/null; then
        note "llama-cpp-python is compiled for this CPU the first time: this can take 30 minutes"
        note "or more on a Pi. pip keeps the built wheel, so later runs take seconds."
    fi
    # llama.cpp with edge-assistant's stateful audio encoder (patches/), wheel cached.
    run env CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$SOURCE_DIR/scripts/install_llama_cpp.sh" "$VENV/bin/python"
    # pip builds from a copy, so the checkout gets no root-owned build/ or egg-info.
    local staging="$WORK_DIR/source"
    run mkdir -p "$staging"
    run cp -R "$SOURCE_DIR/pyproject.toml" "$SOURCE_DIR/README.md" "$SOURCE_DIR/edge_assistant" "$staging/"
    run env CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$VENV/bin/pip" install --disable-pip-version-check \
        --no-input --upgrade "$staging"
    run "$VENV/bin/python" -c 'import llama_cpp, edge_assistant.cli'
    write_file_from_string "$fingerprint" "$INSTALLED_STAMP" 0644
}

# The satellite: the package without its dependencies, then only what it imports.
install_satellite_package() {
    local staging="$WORK_DIR/source"
    run mkdir -p "$staging"
    run cp -R "$SOURCE_DIR/pyproject.toml" "$SOURCE_DIR/README.md" "$SOURCE_DIR/edge_assistant" "$staging/"
    run "$VENV/bin/pip" install --disable-pip-version-check --no-input --upgrade "${SATELLITE_PYTHON_PACKAGES[@]}"
    run "$VENV/bin/pip" install --disable-pip-version-check --no-input --upgrade --no-deps "$staging"
    run "$VENV/bin/python" -c 'import edge_assistant.rooms.satellite'
}

venv_works() {
    [[ -x "$CLI" ]] && "$CLI" --version >/dev/null 2>&1
}

link_command() {
    [[ -z "$PREFIX" ]] || return 0
    if [[ "$(readlink "$COMMAND_LINK" 2>/dev/null)" == "$CLI" ]]; then
        ok "command: $COMMAND_LINK -> $CLI"
    elif [[ -e "$COMMAND_LINK" && ! -L "$COMMAND_LINK" ]]; then
        warn "command: $COMMAND_LINK exists and is not ours; left alone (use $CLI)"
    else
        change "command: link $COMMAND_LINK -> $CLI"
        run ln -sfn "$CLI" "$COMMAND_LINK"
    fi
}

# /var/lib/edge-assistant is the service's StateDirectory=: owned by the service
# user, as systemd would make it. The models are downloaded into it as that user.
create_state_dir() {
    local owner dir
    owner="$(id -un):$(id -gn)"
    [[ -n "$PREFIX" ]] || owner="$SERVICE_USER:$SERVICE_USER"
    for dir in "$STATE_DIR" "$MODELS_DIR"; do
        if [[ -d "$dir" && "$(stat -c %U:%G "$dir" 2>/dev/null)" == "$owner" ]]; then
            ok "directory: $dir ($owner)"
        else
            change "directory: $dir ($owner)"
            run install -d -m 0755 -o "${owner%%:*}" -g "${owner##*:}" "$dir"
        fi
    done
}

config_template() {
    cat <<EOF
# edge-assistant configuration, written by scripts/provision_pi.sh.
#
# Only what differs from the defaults belongs here, so upgrades bring new defaults.
# Every setting with its current value:
#   edge-assistant --config $CONFIG config show
# After an edit: sudo systemctl restart edge-assistant

[models]
# Downloaded by scripts/provision_pi.sh; the service only reads them.
dir = "$MODELS_DIR"

# Audio devices, when the defaults are not the right ones (arecord -l, aplay -l):
# [input]
# device = ""          # microphone: a sounddevice name (or part of it) or index
# [tts]
# output_device = ""   # speaker
EOF
}

# Write the template if there is no config; never replace one that differs from it.
write_config() {
    local template="$WORK_DIR/config.toml"
    config_template >"$template"
    if [[ ! -e "$CONFIG" ]]; then
        change "config: write $CONFIG"
        run install -d -m 0755 "$ETC_DIR"
        run install -m 0644 "$template" "$CONFIG"
    elif cmp -s "$template" "$CONFIG"; then
        ok "config: $CONFIG"
    elif [[ -e "$CONFIG.new" ]] && cmp -s "$template" "$CONFIG.new"; then
        ok "config: kept your edited $CONFIG; this version's template is in $CONFIG.new"
    else
        change "config: kept your edited $CONFIG; wrote this version's template to $CONFIG.new (compare: diff $CONFIG $CONFIG.new)"
        run install -m 0644 "$template" "$CONFIG.new"
    fi
    check_config
}

# A config the installed version rejects would stop the service: say so now.
check_config() {
    if ! venv_works || [[ ! -e "$CONFIG" ]]; then
        return
    fi
    local problem
    if ! problem="$("$CLI" --config "$CONFIG" config show 2>&1 >/dev/null)"; then
        die "config: $CONFIG is not valid for this version: ${problem#edge-assistant: }"
    fi
}

# --- network: offline, or open to Home Assistant and the satellites only ------------

# The unit keeps the service offline (PrivateNetwork=, IPAddressDeny=any). When the
# config has a [home_assistant] url or [[satellite]] rooms, a drop-in lets it reach
# those addresses, resolved now, and nothing else.
configure_network() {
    if $SATELLITE; then
        note "network: the satellite's unit opens it to the LAN only (systemd/$SERVICE.service)"
        return
    fi
    if [[ -z "$PREFIX" ]] && ! $WITH_SERVICE; then
        note "network: skipped (--no-service)"
        return
    fi
    if ! venv_works || [[ ! -e "$CONFIG" ]]; then
        note "network: decided once the venv and the config are installed (reads [home_assistant] url, [[satellite]] uri)"
        return
    fi
    if [[ -e "$OLD_NETWORK_DROP_IN" ]]; then
        change "network: remove $OLD_NETWORK_DROP_IN (now $NETWORK_DROP_IN)"
        run rm -f "$OLD_NETWORK_DROP_IN"
        reload_units
    fi
    local urls
    urls="$("$CLI" --config "$CONFIG" config show | awk '
        /^\[/ { section = $0 }
        section == "[home_assistant]" && /^url = "/ { sub(/^url = "/, ""); sub(/"$/, ""); print }
        section == "[[satellite]]" && /^uri = "/ { sub(/^uri = "/, ""); sub(/"$/, ""); print }')"
    if [[ -z "$urls" ]]; then
        if [[ -e "$NETWORK_DROP_IN" ]]; then
            change "network: Home Assistant and satellites no longer configured: remove $NETWORK_DROP_IN, offline again"
            run rm -f "$NETWORK_DROP_IN"
            reload_units
        else
            ok "network: offline (no Home Assistant or satellites in $CONFIG)"
        fi
        return
    fi
    local url host found addresses="" families content names=()
    while read -r url; do
        host="$("$VENV/bin/python" -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).hostname)' "$url")"
        found="$(
            getent ahostsv4 "$host" 2>/dev/null | awk '{print $1}'
            getent ahostsv6 "$host" 2>/dev/null | awk '$1 !~ /^::ffff:/ {print $1}'
        )"
        [[ -n "$found" ]] || die "network: cannot resolve $host from $url in $CONFIG: put its IP address into it"
        if [[ ! "$host" =~ ^[0-9.]+$ && "$host" != *:* ]] && ! in_etc_hosts "$host"; then
            warn "network: the service resolves $host itself but may send no DNS queries: /etc/hosts or a local resolver must know it, else put its address into $url"
        fi
        addresses="$addresses $found"
        names+=("$url")
    done <<<"$urls"
    addresses="$(tr ' ' '\n' <<<"$addresses" | sed '/^$/d' | sort -u | tr '\n' ' ')"
    addresses="${addresses% }"
    families="AF_UNIX"
    [[ "$addresses" != *.* ]] || families="$families AF_INET"
    [[ "$addresses" != *:* ]] || families="$families AF_INET6"
    content="$(network_drop_in "$addresses" "$families" "${names[@]}")"
    if [[ -f "$NETWORK_DROP_IN" && "$(cat "$NETWORK_DROP_IN")" == "$content" ]]; then
        ok "network: open to Home Assistant and the satellites only ($addresses, $NETWORK_DROP_IN)"
        return
    fi
    change "network: open to Home Assistant and the satellites only: $addresses ($NETWORK_DROP_IN)"
    run install -d -m 0755 "$(dirname "$NETWORK_DROP_IN")"
    write_file_from_string "$content" "$NETWORK_DROP_IN" 0644
    reload_units
}

network_drop_in() {
    local addresses="$1" families="$2"
    shift 2
    cat <<EOF
# Written by scripts/provision_pi.sh for these addresses in $CONFIG:
$(printf '#   %s\n' "$@")
# The service stays offline except for them, as resolved when this was written.
# A new address for one of them needs another run of the script.
# systemd filters by address, not by port: every port of these addresses is open
# to the service, not just the one named.
[Service]
PrivateNetwork=no
IPAddressAllow=$addresses
RestrictAddressFamilies=
RestrictAddressFamilies=$families
EOF
}

in_etc_hosts() {
    awk -v name="$1" '$1 !~ /^#/ { for (i = 2; i <= NF; i++) if ($i == name) found = 1 } END { exit !found }' /etc/hosts
}

reload_units() {
    if [[ -z "$PREFIX" && -d /run/systemd/system ]]; then
        run systemctl daemon-reload
    fi
}

# shellcheck source=lib/manifest.sh disable=SC1091
source "$SOURCE_DIR/scripts/lib/manifest.sh"

# edge-assistant as the service runs it, for install_models.
models_cli() {
    run_as_service_user "$CLI" --config "$CONFIG" "$@"
}

models_present() {
    local slim
    read -r _ slim < <(projector_names)
    [[ -z "$(missing_models)" && -f "$MODELS_DIR/$slim" ]]
}

install_service() {
    if [[ -n "$PREFIX" ]]; then
        note "service: not installed with --prefix (its paths are the system ones)"
        return
    fi
    if ! $WITH_SERVICE; then
        note "service: skipped (--no-service)"
        return
    fi
    if [[ ! -d /run/systemd/system ]]; then
        $DRY_RUN || die "service: systemd is not running here (a container?): use --no-service"
        warn "service: systemd is not running here; a real run would stop at this step"
    fi
    if cmp -s "$UNIT_SOURCE" "$UNIT_FILE"; then
        ok "service: $UNIT_FILE"
    else
        change "service: install $UNIT_FILE"
        run install -m 0644 "$UNIT_SOURCE" "$UNIT_FILE"
        run systemctl daemon-reload
    fi
    if systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; then
        ok "service: enabled at boot"
    else
        change "service: enable at boot"
        run systemctl enable "$SERVICE"
    fi
    start_service
}

# Start it, or restart it when this run changed the unit, the package, the models or
# the config. systemctl waits for READY=1, i.e. until the models are loaded.
start_service() {
    # (A dry run that would download them counts them as there.)
    if ! $SATELLITE && ! models_present && ! { $DRY_RUN && $WITH_MODELS; }; then
        warn "service: not started: the models are missing (run this script without --no-models)"
        return
    fi
    local action=start
    if systemctl is-active --quiet "$SERVICE" 2>/dev/null; then
        if ((CHANGES == 0)); then
            ok "service: running"
            return
        fi
        action=restart
        change "service: restart to pick up the changes"
    else
        change "service: start"
    fi
    note "waits until the models are loaded (up to 5 minutes)"
    show_command systemctl "$action" "$SERVICE"
    $DRY_RUN || systemctl "$action" "$SERVICE" || service_failed
}

service_failed() {
    journalctl -u "$SERVICE" -n 20 --no-pager >&2 || true
    die "service: did not start; the log above, more with: journalctl -u $SERVICE"
}

# --- uninstall ----------------------------------------------------------------------

uninstall() {
    if [[ -z "$PREFIX" ]]; then
        remove_service
        remove_command_link
    fi
    remove_path "$OPT_DIR" "venv"
    # Generated from the config, not a local change: it goes with the service.
    remove_path "$NETWORK_DROP_IN" "network drop-in"
    [[ ! -e "$OLD_NETWORK_DROP_IN" ]] || remove_path "$OLD_NETWORK_DROP_IN" "network drop-in"
    if [[ -z "$PREFIX" ]]; then
        remove_user
    fi
    if $PURGE; then
        remove_path "$STATE_DIR" "models"
        remove_path "$CACHE_DIR" "cache"
        remove_path "$ETC_DIR" "config"
        [[ -n "$PREFIX" ]] || remove_path "$UNIT_DROP_INS" "service drop-ins"
    else
        note "kept: models in $MODELS_DIR, config in $ETC_DIR (remove them with --uninstall --purge)"
    fi
    [[ -n "$PREFIX" ]] || note "kept: the Debian packages (${PACKAGES[*]})"
}

remove_service() {
    if [[ -e "$UNIT_FILE" ]]; then
        change "service: stop, disable and remove $UNIT_FILE"
        if [[ -d /run/systemd/system ]]; then
            run systemctl disable --now "$SERVICE"
        fi
        run rm -f "$UNIT_FILE"
        if [[ -d /run/systemd/system ]]; then
            run systemctl daemon-reload
        fi
    else
        ok "service: not installed"
    fi
}

remove_command_link() {
    if [[ "$(readlink "$COMMAND_LINK" 2>/dev/null)" == "$CLI" ]]; then
        change "command: remove $COMMAND_LINK"
        run rm -f "$COMMAND_LINK"
    else
        ok "command: no $COMMAND_LINK of ours"
    fi
}

remove_user() {
    if id -u "$SERVICE_USER" >/dev/null 2>&1; then
        change "user: remove $SERVICE_USER (files it owns keep its number; a reinstall's service takes them back)"
        run userdel "$SERVICE_USER"
    else
        ok "user: no $SERVICE_USER"
    fi
}


# --- helpers ------------------------------------------------------------------------


package_installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

# One field of /etc/os-release, without sourcing it into this shell.
os_release() {
    sed -n "s/^$1=//p" /etc/os-release | tr -d '"'
}


filesystem_of() {
    df -P -- "$(existing_parent "$1")" | awk 'NR == 2 {print $1}'
}


summary() {
    report_changes
    $UNINSTALL && return
    echo
    if $SATELLITE; then
        echo "The satellite listens on TCP 10700; name this machine's address in the brain's config:"
        echo "  [[satellite]]"
        echo "  name = \"kitchen\""
        echo "  uri = \"tcp://$(hostname -I 2>/dev/null | awk '{print $1}'):10700\""
        [[ -n "$PREFIX" ]] || echo "Check it: systemctl status $SERVICE; journalctl -u $SERVICE -f"
        return
    fi
    if [[ -n "$PREFIX" ]]; then
        echo "Try it:"
        echo "  $CLI --config $CONFIG config show"
        echo "  $CLI --config $CONFIG --once question.wav --no-speak"
        return
    fi
    cat <<EOF
Check that it runs and listens:
  systemctl status $SERVICE
  journalctl -u $SERVICE -f
Answer one recorded question without the service (it needs the microphone and RAM):
  sudo systemctl stop $SERVICE
  arecord -f S16_LE -r 16000 -c 1 -d 5 question.wav     # ask something
  edge-assistant --once question.wav
  sudo systemctl start $SERVICE
Config: $CONFIG   Models: $MODELS_DIR   Uninstall: sudo $0 --uninstall
EOF
}

main() {
    parse_args "$@"
    set_paths
    require_root
    WORK_DIR="$(mktemp -d)"
    trap 'rm -rf "$WORK_DIR"' EXIT
    show_plan
    echo
    if $UNINSTALL; then
        uninstall
    else
        check_platform
        $SATELLITE || check_memory
        check_disk
        install_packages
        check_python
        check_audio_input
        create_user
        install_venv
        link_command
        create_state_dir
        write_config
        configure_network
        $SATELLITE || install_models
        install_service
    fi
    summary
}

main "$@"
