"""Wyoming's audio chunks (16-bit PCM at any rate and channel count) to and from
the pipeline's float32 samples."""

from __future__ import annotations

import numpy as np
import soxr
from wyoming.audio import AudioChunk

from ..audio.format import MODEL_SAMPLE_RATE

SAMPLE_WIDTH = 2  # bytes: 16-bit PCM, what every Wyoming satellite sends and plays
CHUNK_SAMPLES = 1024  # what wyoming-satellite sends per chunk


def to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def chunk_of(samples: np.ndarray, rate: int, timestamp: int | None = None) -> AudioChunk:
    return AudioChunk(rate=rate, width=SAMPLE_WIDTH, channels=1, audio=to_pcm16(samples), timestamp=timestamp)


def pcm16_samples(chunk: AudioChunk) -> np.ndarray:
    """A chunk's first channel as float32, at its own rate."""
    if chunk.width != SAMPLE_WIDTH:
        raise ValueError(f"{chunk.width * 8}-bit audio (only 16-bit PCM is read)")
    return np.frombuffer(chunk.audio, dtype="<i2")[:: max(1, chunk.channels)].astype(np.float32) / 32768.0


class ChunkReader:
    """A satellite's microphone chunks as 16 kHz mono float32: the first
    channel, resampled (one stream, so chunk edges do not click) when the
    satellite sends another rate."""

    def __init__(self) -> None:
        self._rate = MODEL_SAMPLE_RATE
        self._resampler: soxr.ResampleStream | None = None

    def samples(self, chunk: AudioChunk) -> np.ndarray:
        samples = pcm16_samples(chunk)
        if chunk.rate != self._rate:
            self._rate = chunk.rate
            self._resampler = None if chunk.rate == MODEL_SAMPLE_RATE else soxr.ResampleStream(chunk.rate, MODEL_SAMPLE_RATE, 1, dtype="float32")
        return self._resampler.resample_chunk(samples) if self._resampler is not None else samples
