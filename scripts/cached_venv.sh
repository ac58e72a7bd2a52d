# Sourced by the scripts that keep a test venv in ~/.cache (ha_mcp_venv.sh,
# wyoming_satellite_venv.sh): a marker written last marks a finished install,
# one install runs at a time, and an interrupted one is redone.

# venv_ready MARKER VENV: print the venv's python and exit when its install finished.
venv_ready() {
    if [[ -f $1 ]]; then
        echo "$2/bin/python"
        exit 0
    fi
}

# venv_start DIR MARKER VENV: hold DIR's lock, look again (another run may have
# finished it meanwhile), and clear what an interrupted install left.
venv_start() {
    mkdir -p "$1"
    exec 9>"$1/.lock"
    flock 9
    venv_ready "$2" "$3"
    rm -rf "$3"
}

# venv_finished MARKER VENV: mark the install finished and print the venv's python.
venv_finished() {
    touch "$1"
    echo "$2/bin/python"
}
