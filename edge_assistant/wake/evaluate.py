"""How a trained model does on held-out audio it never saw: recall on the
phrase, near misses accepted, false accepts per hour, and the threshold that
balances them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..audio.format import MODEL_SAMPLE_RATE
from .dataset import NEAR_MISS_TAIL, POSITIVE_TAIL, QUIET_BEFORE, SideFeatures, Utterance, window_offsets, windows_of
from .detector import STEP_SAMPLES, WakeModel, sustained


REFRACTORY_SECONDS = 2.0
FALSE_ACCEPT_COST = 0.05  # one false accept per hour weighs as much as missing 5% of wake words


def peak_scores(model: WakeModel, utterances: Sequence[Utterance], until: float) -> np.ndarray:
    """Each utterance's best score, held for the model's patience, from its last
    moments to ``until`` s after its end: did it fire, as the runtime would have?"""
    peaks = []
    for utterance in utterances:
        offsets = window_offsets(utterance.embeddings, utterance.end)
        held = sustained(model.score(windows_of(utterance.embeddings)), model.patience)
        peaks.append(float(held[(offsets >= QUIET_BEFORE) & (offsets <= until)].max()))
    return np.array(peaks)


def count_detections(scores: np.ndarray, threshold: float, patience: int) -> int:
    """Detections as the runtime counts them: a score held at the threshold for
    ``patience`` steps, one per refractory period."""
    refractory = int(REFRACTORY_SECONDS * MODEL_SAMPLE_RATE / STEP_SAMPLES)
    count, allowed = 0, 0
    for step in np.flatnonzero(sustained(scores, patience) >= threshold):
        if step >= allowed:
            count, allowed = count + 1, step + refractory
    return count


@dataclass(frozen=True)
class Evaluation:
    """Scores of the held-out audio, from the exported model."""

    positive_peaks: np.ndarray
    miss_peaks: np.ndarray
    held_stream_scores: list[np.ndarray]  # held for the model's patience once, tried at every threshold
    negative_hours: float

    @classmethod
    def of(cls, model: WakeModel, held_out: SideFeatures) -> "Evaluation":
        return cls(
            peak_scores(model, held_out.positives, POSITIVE_TAIL),
            peak_scores(model, held_out.misses, NEAR_MISS_TAIL),
            [sustained(model.score(windows_of(embeddings)), model.patience) for embeddings in held_out.streams],
            held_out.stream_seconds / 3600,
        )

    def recall(self, threshold: float) -> float:
        return float(np.mean(self.positive_peaks >= threshold))

    def near_miss_accepts(self, threshold: float) -> float:
        return float(np.mean(self.miss_peaks >= threshold)) if len(self.miss_peaks) else 0.0

    def false_accepts(self, threshold: float) -> int:
        return sum(count_detections(held, threshold, 1) for held in self.held_stream_scores)

    def choose_threshold(self) -> float:
        """The threshold with the lowest cost, counting a false accept per hour as
        FALSE_ACCEPT_COST of recall; of those within 0.02 of it, the middle one,
        for margin on both sides. A cost, not a hard false-accept limit: with
        minutes of held-out audio one unlucky window would otherwise push the
        threshold to 0.99 and recall to nothing."""
        grid = [round(t, 2) for t in np.arange(0.05, 0.995, 0.01)]
        costs = [1 - self.recall(t) + FALSE_ACCEPT_COST * self.false_accepts(t) / self.negative_hours for t in grid]
        good = [t for t, cost in zip(grid, costs) if cost <= min(costs) + 0.02]
        return good[len(good) // 2]
