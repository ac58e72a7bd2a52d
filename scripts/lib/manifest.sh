# shellcheck shell=bash
# The model manifest as the provisioning scripts read it (provision_pi.sh,
# provision_termux.sh): plain awk, since Python 3.10 on Ubuntu 22.04 has no tomllib.
# Needs SOURCE_DIR (the repository) and MODELS_DIR (where the files go); for
# install_models also WITH_MODELS, CLI_MODELS_DIR (MODELS_DIR as the installed
# edge-assistant sees it) and a function models_cli that runs that edge-assistant
# with its configuration, as the service would (lib/steps.sh for the output).

# "filename size role" per [[file]] of the manifest that ships in the package,
# except the per-language voices (entries with a language), which are fetched
# only on request (`edge-assistant models download --voice NAME`).
manifest_files() {
    awk -F' = ' '
        function flush() { if (name != "" && lang == "") print name, size, role; name = size = role = lang = "" }
        /^\[\[file\]\]/ { flush() }
        $1 == "filename" { name = $2; gsub(/"/, "", name) }
        $1 == "size" { size = $2 }
        $1 == "language" { lang = $2 }
        $1 == "role" { role = $2; gsub(/"/, "", role) }
        END { flush() }
    ' "$SOURCE_DIR/edge_assistant/manifest.toml"
}

# The source projector and the audio-only copy `models slim` writes, which resolve()
# prefers (edge_assistant.models.manifest.audio_projector_path), as file names:
# mmproj-F16.gguf -> mmproj-F16.audio.gguf.
projector_names() {
    local name
    name="$(manifest_files | awk '$3 == "mmproj" {print $1; exit}')"
    printf '%s %s\n' "$name" "${name%.gguf}.audio.gguf"
}

# Files of the manifest that are absent or of the wrong size, as "filename size".
missing_models() {
    local name size path
    while read -r name size _; do
        path="$MODELS_DIR/$name"
        if [[ ! -f "$path" || "$(stat -c %s "$path")" != "$size" ]]; then
            printf '%s %s\n' "$name" "$size"
        fi
    done < <(manifest_files)
}

# Bytes still to download; the slim copy is smaller than its source, so a missing
# one counts as the source's size.
missing_model_bytes() {
    local total slim
    total="$(missing_models | awk '{sum += $2} END {printf "%.0f\n", sum}')"
    read -r _ slim < <(projector_names)
    if [[ ! -f "$MODELS_DIR/$slim" ]]; then
        total=$((total + $(manifest_files | awk '$3 == "mmproj" {print $2; exit}')))
    fi
    echo "$total"
}

# Download what is missing and write the audio-only projector, through the installed
# edge-assistant (resumable, sha256-verified).
install_models() {
    if ! $WITH_MODELS; then
        note "models: skipped (--no-models); edge-assistant needs them: run this script"
        note "without --no-models, or: edge-assistant models download --dir $CLI_MODELS_DIR"
        return
    fi
    local missing source slim
    missing="$(missing_models)"
    read -r source slim < <(projector_names)
    if [[ -z "$missing" && -f "$MODELS_DIR/$slim" ]]; then
        ok "models: all files in $MODELS_DIR (check hashes: edge-assistant models verify --dir $CLI_MODELS_DIR)"
        return
    fi
    if [[ -n "$missing" ]]; then
        change "models: download $(wc -l <<<"$missing") files, $(gb "$(awk '{s += $2} END {print s}' <<<"$missing")"), into $MODELS_DIR"
        note "resumable and sha256-verified; if it stops, run this script again"
        models_cli models download --dir "$CLI_MODELS_DIR"
    fi
    if [[ ! -f "$MODELS_DIR/$slim" ]]; then
        change "models: audio-only projector $MODELS_DIR/$slim (less RAM than the vision+audio file)"
        models_cli models slim "$CLI_MODELS_DIR/$source" "$CLI_MODELS_DIR/$slim"
    fi
}
