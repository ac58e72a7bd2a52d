# shellcheck shell=bash
# Output and changes for the provisioning scripts (provision_pi.sh,
# provision_termux.sh): one line per step, "ok" when already right. Needs DRY_RUN
# (true/false), CHANGES (a count) and, for write_file_from_string, WORK_DIR from
# the script.

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

# Bytes as binary gigabytes, for messages.
gib() { awk -v b="$1" 'BEGIN {printf "%.1f GiB", b / 1073741824}'; }

# A file or folder of ours, removed (uninstall).
remove_path() {
    local path="$1" what="$2"
    if [[ -e "$path" ]]; then
        change "$what: remove $path"
        run rm -rf -- "$path"
    else
        ok "$what: no $path"
    fi
}

write_file_from_string() {
    local content="$1" path="$2" mode="$3"
    printf '%s\n' "$content" >"$WORK_DIR/string"
    run install -m "$mode" "$WORK_DIR/string" "$path"
}

# The nearest folder that exists on the way up to $1 (for df before it is made).
existing_parent() {
    local dir="$1"
    while [[ ! -d "$dir" ]]; do
        dir="$(dirname "$dir")"
    done
    echo "$dir"
}

# The closing count of a run: what changed, or would in a dry run.
report_changes() {
    echo
    local changes="$CHANGES changes"
    ((CHANGES != 1)) || changes="1 change"
    if ((CHANGES == 0)); then
        echo "nothing to change"
    elif $DRY_RUN; then
        echo "$changes would be made (dry run)"
    else
        echo "$changes made"
    fi
}
