# shellcheck shell=bash
# Output and changes for the provisioning scripts (provision_pi.sh,
# provision_termux.sh): one line per step, "ok" when already right. Needs DRY_RUN
# (true/false) and CHANGES (a count) set by the script.

ok() { printf 'ok      %s\n' "$*"; }
note() { printf '        %s\n' "$*"; }
warn() { printf 'warn    %s\n' "$*"; }
die() {
    printf 'error   %s\n' "$*" >&2
    exit 1
}

# A step that changes something (or would, in a dry run).
change() {
    CHANGES=$((CHANGES + 1))
    if $DRY_RUN; then
        printf 'would   %s\n' "$*"
    else
        printf 'change  %s\n' "$*"
    fi
}

# Every command that changes the system goes through run: shown, then executed
# unless this is a dry run. A failure stops the script with one line naming it.
run() {
    show_command "$@"
    $DRY_RUN && return
    "$@" || die "command failed with exit code $?: $*"
}

show_command() {
    local quoted
    printf -v quoted '%q ' "$@"
    printf '        $ %s\n' "${quoted% }"
}

# Bytes as gigabytes, for messages.
gb() { awk -v b="$1" 'BEGIN {printf "%.1f GB", b / 1e9}'; }
