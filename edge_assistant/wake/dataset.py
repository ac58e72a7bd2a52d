"""From audio to what the classifier learns from: openWakeWord embeddings of the
augmented clips and streams (computed on worker threads), the labelled windows
of FRAMES embeddings, and the split into training and held-out audio."""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

from ..audio.files import read_audio
from ..audio.format import MODEL_SAMPLE_RATE
from ..errors import UsageError
from ..progress import Progress
from .augment import CLIPS_PER_TAKE, Backgrounds, noise_stream, speech_stream, utterance_clip
from .detector import EMBEDDING_DIM, FIRST_EMBEDDING_END, FRAMES, STEP_SAMPLES, AudioFeatures

log = logging.getLogger(__name__)


SPEECH_SHARE = 0.7  # of the augmented streams; the rest is noise, music and silence
STREAM_PIECE_SECONDS = 30
HELD_OUT = 0.25  # share of every source kept out of training
MAX_USER_NEGATIVE_SECONDS = 2 * 3600


# Window end relative to the end of the phrase: fire from 0 to 320 ms after it,
# stay quiet while it is still being spoken; in between is left unlabelled.
FIRE_AFTER = (0.0, 0.32)
QUIET_BEFORE = -0.16


# Clips run on after the utterance: positives as far as the evaluation looks for
# the detection, near misses until they have nearly left the window, or the
# classifier never sees "a word, then a second of silence" and fires on it.
POSITIVE_TAIL = 0.6
NEAR_MISS_TAIL = 1.6
Result = TypeVar("Result")


def run_jobs(pool: Executor, jobs: Sequence[Callable[[], Result]], progress: Progress, weight: Callable[[Result], float]) -> list[Result]:
    """Run jobs on the worker threads; results in order, progress as they come."""
    results = []
    for result in pool.map(lambda job: job(), jobs):
        results.append(result)
        progress.advance(weight(result))
    return results


def windows_of(embeddings: np.ndarray) -> np.ndarray:
    """(n - 15, 16, 96): every classifier input a stream of embeddings produces."""
    if len(embeddings) < FRAMES:
        return np.zeros((0, FRAMES, EMBEDDING_DIM), dtype=np.float32)
    return np.lib.stride_tricks.sliding_window_view(embeddings, FRAMES, axis=0).transpose(0, 2, 1)


def window_offsets(embeddings: np.ndarray, end: float) -> np.ndarray:
    """For each of ``windows_of``'s windows: where it ends, in seconds after ``end``."""
    last = np.arange(FRAMES - 1, len(embeddings))
    return (last * STEP_SAMPLES + FIRST_EMBEDDING_END) / MODEL_SAMPLE_RATE - end


def audio_seconds(embeddings: np.ndarray) -> float:
    """Length of the audio that gave ``embeddings``."""
    return ((len(embeddings) - 1) * STEP_SAMPLES + FIRST_EMBEDDING_END) / MODEL_SAMPLE_RATE


@dataclass(frozen=True)
class Utterance:
    """Embeddings of a clip holding one utterance that ends ``end`` s into it."""

    embeddings: np.ndarray
    end: float


@dataclass(frozen=True)
class WindowSet:
    """Classifier inputs as views into one array of embeddings: input i is
    ``pool[starts[i] : starts[i] + 16]``, 16 times less memory than copies."""

    pool: np.ndarray
    starts: np.ndarray
    labels: np.ndarray

    def inputs(self, index: np.ndarray) -> np.ndarray:
        return self.pool[self.starts[index, None] + np.arange(FRAMES)].reshape(len(index), FRAMES * EMBEDDING_DIM)


@dataclass(frozen=True)
class SideFeatures:
    positives: list[Utterance]
    misses: list[Utterance]
    streams: list[np.ndarray]  # embeddings of continuous negative audio

    @property
    def stream_seconds(self) -> float:
        return sum(audio_seconds(embeddings) for embeddings in self.streams)

    def training_set(self) -> WindowSet:
        """Just after the phrase: 1. Having heard only part of it, near misses,
        speech, noise: 0. The moment in between is left out."""
        pool, starts, labels = [], [], []
        offset = 0

        def add(embeddings: np.ndarray, window_labels: np.ndarray) -> None:
            nonlocal offset
            keep = np.flatnonzero(window_labels >= 0)
            pool.append(embeddings)
            starts.append(offset + keep)
            labels.append(window_labels[keep])
            offset += len(embeddings)

        for utterance in self.positives:
            offsets = window_offsets(utterance.embeddings, utterance.end)
            fire = (offsets >= FIRE_AFTER[0]) & (offsets <= FIRE_AFTER[1])
            add(utterance.embeddings, np.where(fire, 1.0, np.where(offsets < QUIET_BEFORE, 0.0, -1.0)))
        for embeddings in [utterance.embeddings for utterance in self.misses] + self.streams:
            add(embeddings, np.zeros(max(0, len(embeddings) - FRAMES + 1)))
        return WindowSet(np.concatenate(pool), np.concatenate(starts), np.concatenate(labels).astype(np.float32))


@dataclass
class Side:
    """One side of the split (training or held-out): audio before augmentation."""

    takes: list[np.ndarray]
    misses: list[np.ndarray]
    speech: list[np.ndarray]
    recordings: list[np.ndarray]

    def work(self, stream_seconds: float) -> float:
        """Seconds of audio :meth:`embed` will make, for the progress bar."""
        lead = (FIRST_EMBEDDING_END + (FRAMES - 1) * STEP_SAMPLES) / MODEL_SAMPLE_RATE + 0.3
        utterances = len(self.takes) * CLIPS_PER_TAKE * (lead + POSITIVE_TAIL) + len(self.misses) * (lead + NEAR_MISS_TAIL)
        return utterances + stream_seconds + sum(len(r) for r in self.recordings) / MODEL_SAMPLE_RATE

    def embed(
        self, features: AudioFeatures, stream_seconds: float, seed: Sequence[int], pool: Executor, progress: Progress
    ) -> SideFeatures:
        """Augment every source into clips and streams and compute their embeddings:
        CLIPS_PER_TAKE clips per phrase take, one per near miss, ``stream_seconds``
        of speech and noise streams, and the recordings as they are. Each job has
        its own random generator, so the result does not depend on thread timing."""
        backgrounds = Backgrounds(self.speech, self.recordings)

        def utterance(number: int, take: np.ndarray, tail: float) -> Utterance:
            clip, end = utterance_clip(take, tail, backgrounds, np.random.default_rng([*seed, number]))
            return Utterance(features.clip_embeddings(clip), end)

        def stream(number: int, speech: bool) -> np.ndarray:
            rng = np.random.default_rng([*seed, number])
            if speech:
                return features.clip_embeddings(speech_stream(self.speech, STREAM_PIECE_SECONDS, backgrounds, rng))
            return features.clip_embeddings(noise_stream(STREAM_PIECE_SECONDS, backgrounds, rng))

        clips = [(take, POSITIVE_TAIL) for take in self.takes for _ in range(CLIPS_PER_TAKE)]
        clips += [(take, NEAR_MISS_TAIL) for take in self.misses]
        pieces = max(1, round(stream_seconds / STREAM_PIECE_SECONDS))
        chunk = STREAM_PIECE_SECONDS * MODEL_SAMPLE_RATE
        chunks = [r[i : i + chunk] for r in self.recordings for i in range(0, len(r), chunk) if len(r) - i >= FIRST_EMBEDDING_END * 2]
        utterances = run_jobs(
            pool,
            [lambda n=n, take=take, tail=tail: utterance(n, take, tail) for n, (take, tail) in enumerate(clips)],
            progress,
            lambda u: audio_seconds(u.embeddings),
        )
        streams = run_jobs(
            pool,
            [lambda n=n: stream(len(clips) + n, n < pieces * SPEECH_SHARE) for n in range(pieces)]
            + [lambda c=c: features.clip_embeddings(c) for c in chunks],
            progress,
            audio_seconds,
        )
        positives = len(self.takes) * CLIPS_PER_TAKE
        return SideFeatures(utterances[:positives], utterances[positives:], streams)


def split(items: Sequence[np.ndarray], rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A random HELD_OUT share of the items is kept out of training."""
    order = rng.permutation(len(items))
    cut = max(1, round(len(items) * HELD_OUT))
    return [items[i] for i in order[cut:]], [items[i] for i in order[:cut]]


def split_recordings(recordings: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first part of each recording for training, its end held out."""
    cuts = [int(len(audio) * (1 - HELD_OUT)) for audio in recordings]
    return [a[:c] for a, c in zip(recordings, cuts)], [a[c:] for a, c in zip(recordings, cuts)]


def read_negatives(directory: Path | None) -> list[np.ndarray]:
    """The user's recordings (WAV, FLAC, OGG), all read before any work starts so a
    bad file fails fast, naming itself."""
    if directory is None:
        return []
    if not directory.is_dir():
        raise UsageError(f"--negatives is not a directory: {directory}")
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg"))
    if not paths:
        raise UsageError(f"--negatives directory has no .wav, .flac or .ogg files: {directory}")
    recordings, total = [], 0
    for path in paths:
        samples = read_audio(path).samples
        if total + len(samples) > MAX_USER_NEGATIVE_SECONDS * MODEL_SAMPLE_RATE:
            log.warning("using the first %d h of --negatives audio", MAX_USER_NEGATIVE_SECONDS // 3600)
            break
        recordings.append(samples)
        total += len(samples)
    return recordings
