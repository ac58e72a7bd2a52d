"""Short tones that tell the user what the assistant is doing, generated in code
(no audio assets to download)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .audio.playback import Playback
    from .config import EarconConfig

# kind -> (frequency in Hz, seconds) per note
TONES = {
    "listening": ((660.0, 0.07), (990.0, 0.09)),  # rising: I am listening
    "done": ((880.0, 0.07), (660.0, 0.09)),  # falling: finished
    "error": ((220.0, 0.12), (196.0, 0.18)),  # low: something went wrong
    "alarm": ((880.0, 0.12), (1320.0, 0.12), (880.0, 0.12), (1320.0, 0.2)),  # bright, repeated: a timer or alarm
}


def earcon(kind: str, sample_rate: int, volume: float) -> np.ndarray:
    """A soft-edged tone of a few notes at ``sample_rate``."""
    notes = []
    for frequency, seconds in TONES[kind]:
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        ramp = min(len(t) // 4, int(0.01 * sample_rate))
        envelope = np.ones(len(t))
        envelope[:ramp] = np.linspace(0, 1, ramp)
        envelope[-ramp:] = np.linspace(1, 0, ramp)
        notes.append(np.sin(2 * np.pi * frequency * t) * envelope)
    return (np.concatenate(notes) * volume).astype(np.float32)


def play_earcon(kind: str, playback: Playback, settings: EarconConfig) -> np.ndarray:
    """Queue an earcon if it is switched on; returns what was queued."""
    if not getattr(settings, kind):
        return np.zeros(0, dtype=np.float32)
    tone = earcon(kind, playback.sample_rate, settings.volume)
    playback.write(tone, playback.sample_rate)
    return tone
