"""``edge-assistant wakeword train|test``: make a wake word on the device and try it.

``train`` writes an openWakeWord-compatible ONNX model; ``test`` prints every
detection with its score, from a recording or the microphone, so a user can see
how close their own voice gets to the threshold.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from ..audio.format import MODEL_SAMPLE_RATE
from ..config import Config
from ..errors import UsageError
from .detector import STEP_SAMPLES, WakeDetection, WakeWordDetector

log = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction, common_parser: argparse.ArgumentParser) -> None:
    """``wakeword train`` and ``wakeword test`` under the caller's subcommands."""
    wakeword = subparsers.add_parser("wakeword", help="train a custom wake word on this device, or test one")
    actions = wakeword.add_subparsers(dest="wakeword_command", metavar="ACTION", required=True, parser_class=type(wakeword))
    train = actions.add_parser(
        "train",
        parents=[common_parser],
        help="train a wake phrase from Piper speech (a minute or two on a 2-core PC)",
        description="Synthesize the phrase with Piper, augment it, train a small classifier on "
        "openWakeWord features and write an ONNX model with its threshold.",
    )
    train.add_argument("phrase", metavar="PHRASE", help='the wake phrase, e.g. "hey tessa"')
    train.add_argument("--out", metavar="FILE", required=True, help="model file to write (.onnx)")
    train.add_argument(
        "--voice", metavar="ONNX", action="append", type=Path,
        help="Piper voice to speak the phrase (repeatable; default: the configured voice). More voices, better model",
    )
    train.add_argument("--negatives", metavar="DIR", type=Path, help="recordings that must not wake it: your TV, your kitchen")
    train.add_argument(
        "--minutes", metavar="N", type=float, default=1.0,
        help="effort: the synthetic data scales with N (default 1: a minute or two on a 2-core PC)",
    )
    test = actions.add_parser(
        "test", parents=[common_parser], help="print detections and scores for a recording or the microphone"
    )
    test.add_argument("model", metavar="MODEL", help="wake word model: a .onnx file, or a name as in wake.model (hey_jarvis)")
    test.add_argument("--input-file", metavar="WAV", help="audio file to scan instead of the microphone")
    test.add_argument("--threshold", metavar="X", type=float, help="detection threshold (default: the model's own)")
    for action in (train, test):
        action.add_argument(
            "--models-dir", metavar="DIR", default=argparse.SUPPRESS,
            help="models directory, for the default voice and for wake model names",
        )


def run(args: argparse.Namespace, config: Config) -> int:
    if args.wakeword_command == "train":
        return run_train(args, config)
    return run_test(args, config)


def run_train(args: argparse.Namespace, config: Config) -> int:
    from .train import TrainOptions, tidy_phrase, train

    phrase = tidy_phrase(args.phrase)  # before a missing default voice is blamed
    voices = tuple(args.voice) if args.voice else (configured_voice(config),)
    result = train(TrainOptions(phrase, Path(args.out), voices, args.negatives, args.minutes))
    print(f"wrote {result.path} ({result.model_bytes / 1000:.0f} kB) in {result.seconds:.0f} s")
    print(
        f"held out: recall {result.recall:.0%} of {result.positives_held_out} takes of {result.phrase!r} "
        f"at threshold {result.threshold:.2f}; {result.false_accepts} false accepts in "
        f"{result.negative_hours * 60:.1f} min of speech and noise ({result.false_accepts_per_hour:.1f} per hour); "
        f"{result.near_miss_accepts:.0%} of near misses accepted"
    )
    print(f'use it: set model = "{result.path.resolve()}" in the [wake] section of the config')
    return 0


def configured_voice(config: Config) -> Path:
    """The voice the assistant speaks with: config, else the manifest's."""
    from ..models.manifest import resolve

    if config.models.voice:
        return Path(config.models.voice).expanduser()
    return resolve("voice", config.models.directory)


def run_test(args: argparse.Namespace, config: Config) -> int:
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold}")
    from ..models.manifest import resolve_wake

    detector = WakeWordDetector([resolve_wake(args.model, config.models.directory)], args.threshold, config.wake.refractory_seconds)
    model = detector.models[0]
    origin = "given" if args.threshold is not None else "the model's" if model.threshold is not None else "default"
    phrase = f" ({model.phrase!r})" if model.phrase else ""
    print(f"{model.name}{phrase}: threshold {detector.thresholds[0]:.2f} ({origin})")
    if args.input_file:
        from ..audio.files import read_audio

        chunks = chunked(read_audio(args.input_file).samples)
    else:
        chunks = microphone(config)
    count, heard = 0, 0
    try:
        for chunk in chunks:
            heard += len(chunk)
            for detection in detector.process(chunk):
                count += 1
                print(f"{seconds(detection):8.2f} s  {detection.name}  {detection.score:.3f}", flush=True)
    except KeyboardInterrupt:  # the way to stop listening
        pass
    summary = f"{count} detection{'s' * (count != 1)} in {heard / MODEL_SAMPLE_RATE:.1f} s of audio"
    if detector.highest is not None:
        summary += f"; highest score {detector.highest.score:.3f} at {seconds(detector.highest):.2f} s"
    print(summary)
    return 0


def seconds(detection: WakeDetection) -> float:
    return detection.end_sample / MODEL_SAMPLE_RATE


def chunked(samples: np.ndarray) -> Iterator[np.ndarray]:
    """A recording in 80 ms pieces, as a microphone would deliver it."""
    for start in range(0, len(samples), STEP_SAMPLES):
        yield samples[start : start + STEP_SAMPLES]


def microphone(config: Config) -> Iterator[np.ndarray]:
    """80 ms pieces from the configured input device (and channel) until Ctrl-C,
    captured as the daemon captures them."""
    from ..audio.devices import parse_device
    from ..audio.sources import MicrophoneSource

    source = MicrophoneSource(
        parse_device(config.input.device), STEP_SAMPLES * 1000 // MODEL_SAMPLE_RATE,
        channel=config.input.channel, wait_for_device=False,
    )
    print("listening; say the wake phrase, Ctrl-C to stop", flush=True)
    return (frame.samples for frame in source.frames())
