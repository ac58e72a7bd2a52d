"""Training a wake phrase on the device, in minutes, from synthetic speech only.

Piper speaks the phrase with every voice and speaker available, at varied speed and
expressiveness; the takes are pitch/speed shifted, reverberated and mixed into
noise. Negatives are what must not wake the assistant: near misses of the phrase
(parts of it, a word or a consonant changed), ordinary speech, noise, music-like
tones, silence and the user's own recordings. openWakeWord's frozen feature models
turn all of it into embeddings (:class:`.detector.AudioFeatures`, the
runtime's own code), where a one-hidden-layer network trained with numpy is enough.
Part of every source is held out; the threshold is chosen from the held-out recall
and false accepts per hour and stored in the ONNX model's metadata.

What decides the quality is the variety of negative speech: with too little, the
classifier learns "a short utterance after a pause" instead of the words. Every
piece of audio therefore gets its own background, and synthesis and feature
extraction run on all cores, one single-threaded onnxruntime session per task
(faster than multi-threaded sessions on a busy Pi, where spinning threads starve).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..audio.files import check_output_path
from ..errors import UsageError
from ..progress import Progress
from .dataset import Side, SideFeatures, read_negatives, split, split_recordings
from .detector import META_PATIENCE, META_PHRASE, META_THRESHOLD, AudioFeatures, load_wake_model
from .evaluate import Evaluation
from .network import Network, export_onnx, fit
from .phrases import PHRASE_TAKES, check_phrase, plan_lines, tidy_phrase
from .synthesis import load_speakers, synthesize

log = logging.getLogger(__name__)


# Effort per --minutes unit (the takes: wake.phrases): augmented speech and noise
# streams made from the takes, to train on and to count false accepts in.
STREAM_SECONDS = 720
HELD_OUT_STREAM_SECONDS = 600
MAX_WORKERS = 4  # each synthesis can take a few hundred MB
# A score must hold at the threshold for this many 80 ms steps to fire (stored in
# the model; the threshold is chosen for it). Against an hour of a television
# (scripts/bench_wake_room.py) single-step peaks made the false accepts; see the README.
PATIENCE_STEPS = 2


@dataclass(frozen=True)
class TrainOptions:
    phrase: str
    out: Path
    voices: tuple[Path, ...]
    negatives_dir: Path | None = None
    minutes: float = 1.0
    seed: int = 0
    workers: int = 0  # 0: one per CPU core, at most MAX_WORKERS


@dataclass(frozen=True)
class TrainResult:
    """What was written and how it did on the held-out audio."""

    path: Path
    phrase: str
    threshold: float
    recall: float  # of held-out phrase takes, at the threshold
    positives_held_out: int
    near_miss_accepts: float  # share of held-out near misses that fire
    false_accepts: int  # in the held-out speech, noise and recordings
    negative_hours: float
    seconds: float
    model_bytes: int

    @property
    def false_accepts_per_hour(self) -> float:
        return self.false_accepts / self.negative_hours

    def metadata(self, voices: str) -> dict[str, str]:
        """ONNX metadata_props: the runtime reads the threshold; the rest documents
        the model for whoever finds the file later."""
        return {
            META_PHRASE: self.phrase,
            META_THRESHOLD: f"{self.threshold:.2f}",
            META_PATIENCE: str(PATIENCE_STEPS),
            "edge_assistant.recall": f"{self.recall:.3f}",
            "edge_assistant.near_miss_accepts": f"{self.near_miss_accepts:.3f}",
            "edge_assistant.false_accepts_per_hour": f"{self.false_accepts_per_hour:.2f}",
            "edge_assistant.held_out_negative_hours": f"{self.negative_hours:.3f}",
            "edge_assistant.voices": voices,
        }


def train(options: TrainOptions) -> TrainResult:
    """Synthesize, augment, train, evaluate on held-out audio, write ``options.out``
    atomically. Every input is checked before the long work starts."""
    started = time.perf_counter()
    phrase = tidy_phrase(options.phrase)
    if not options.minutes > 0:
        raise UsageError(f"--minutes must be more than 0, got {options.minutes}")
    out = check_output_path(options.out)
    if not options.voices:
        raise UsageError("no Piper voice to speak the phrase: give --voice VOICE.onnx")
    rng = np.random.default_rng(options.seed)
    recordings = read_negatives(options.negatives_dir)
    limit = max(1, round(PHRASE_TAKES * options.minutes))
    speakers = load_speakers(options.voices, limit, options.seed)
    check_phrase(phrase, speakers)
    workers = options.workers or min(MAX_WORKERS, os.cpu_count() or 1)
    per_worker = [speakers] + [load_speakers(options.voices, limit, options.seed + k) for k in range(1, workers)]

    with ThreadPoolExecutor(workers) as pool:
        lines = plan_lines(phrase, speakers, options.minutes, rng)
        with Progress("wakeword: synthesizing speech", sum(map(len, lines))) as progress:
            takes = [synthesize(kind, per_worker, pool, progress) for kind in lines]
        log.info("synthesized %s takes at %.1f s", "/".join(str(len(kind)) for kind in takes), time.perf_counter() - started)
        sources = [split(kind, rng) for kind in takes] + [split_recordings(recordings)]
        training, held_out = (Side(*(pair[side] for pair in sources)) for side in (0, 1))
        features = AudioFeatures()
        seconds = STREAM_SECONDS * options.minutes, HELD_OUT_STREAM_SECONDS * options.minutes
        work = training.work(seconds[0]) + held_out.work(seconds[1])
        with Progress("wakeword: computing features", work, amount=lambda seconds: f"{seconds:,.0f} s of audio") as progress:
            windows = training.embed(features, seconds[0], (options.seed, 0), pool, progress).training_set()
            held_features = held_out.embed(features, seconds[1], (options.seed, 1), pool, progress)
    log.info(
        "features at %.1f s: training on %d positive and %d negative windows",
        time.perf_counter() - started, windows.labels.sum(), (windows.labels == 0).sum(),
    )
    net = fit(windows, rng)
    log.info("trained at %.1f s", time.perf_counter() - started)
    voices = ", ".join(dict.fromkeys(Path(path).stem for path in options.voices))
    return write_model(out, net, phrase, held_features, voices, started)


def write_model(out: Path, net: Network, phrase: str, held_out: SideFeatures, voices: str, started: float) -> TrainResult:
    """Export, score the held-out audio with the exported model through the runtime's
    loader (what is measured is what ships), store the chosen threshold, rename."""
    with atomic_path(out) as temp:
        export_onnx(net, temp, {META_PHRASE: phrase, META_PATIENCE: str(PATIENCE_STEPS)})
        evaluation = Evaluation.of(load_wake_model(temp), held_out)
        threshold = evaluation.choose_threshold()
        result = TrainResult(
            path=out,
            phrase=phrase,
            threshold=threshold,
            recall=evaluation.recall(threshold),
            positives_held_out=len(evaluation.positive_peaks),
            near_miss_accepts=evaluation.near_miss_accepts(threshold),
            false_accepts=evaluation.false_accepts(threshold),
            negative_hours=evaluation.negative_hours,
            seconds=0.0,
            model_bytes=0,
        )
        export_onnx(net, temp, result.metadata(voices))
    return replace(result, model_bytes=out.stat().st_size, seconds=time.perf_counter() - started)
