"""The one audio format every stage shares: 16 kHz mono float32, what Gemma's
audio encoder, webrtcvad and openWakeWord's feature models all take."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODEL_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] at ``sample_rate``."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Frame:
    """``frame_ms`` of 16 kHz mono float32; ``end_sample`` is the input time (in
    samples since the stream began) just after its last sample."""

    samples: np.ndarray
    end_sample: int

    @property
    def seconds(self) -> float:
        return self.end_sample / MODEL_SAMPLE_RATE

