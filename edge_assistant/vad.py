"""Voice activity: where the speech is in a clip, so the model only evaluates the
words (every audio token costs about 35 ms on a Pi 5 after the user stops).

webrtcvad judges 30 ms frames of 16 kHz int16 audio. Single frames flicker in
noise, so a frame counts as speech only when most of the surrounding 300 ms is
voiced; that keeps clicks and fan noise from becoming "speech".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import webrtcvad

from .audio_io import MODEL_SAMPLE_RATE, Audio
from .errors import NoSpeechError

FRAME_MS = 30
FRAME_SAMPLES = MODEL_SAMPLE_RATE * FRAME_MS // 1000
SMOOTHING_FRAMES = 10  # 300 ms
VOICED_RATIO = 0.6
# Less voiced audio than this is a cough or a click, not a question.
MIN_SPEECH_MS = 240


@dataclass(frozen=True)
class SpeechSpan:
    """Sample offsets of the speech within the clip (end exclusive)."""

    start: int
    end: int


def to_pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1] to the little-endian int16 bytes webrtcvad reads."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def voiced_frames(samples: np.ndarray, aggressiveness: int) -> np.ndarray:
    """One bool per whole 30 ms frame: did webrtcvad hear a voice."""
    vad = webrtcvad.Vad(aggressiveness)
    pcm = to_pcm16(samples)
    frame_bytes = FRAME_SAMPLES * 2
    count = len(pcm) // frame_bytes
    return np.fromiter(
        (vad.is_speech(pcm[i * frame_bytes : (i + 1) * frame_bytes], MODEL_SAMPLE_RATE) for i in range(count)),
        dtype=bool,
        count=count,
    )


def find_speech(audio: Audio, aggressiveness: int = 2, padding_ms: int = 200) -> SpeechSpan:
    """The span from the first to the last stretch of speech, widened by
    ``padding_ms`` on each side. Raises :class:`NoSpeechError` if there is none."""
    if audio.sample_rate != MODEL_SAMPLE_RATE:
        raise ValueError(f"find_speech needs {MODEL_SAMPLE_RATE} Hz audio, got {audio.sample_rate}")
    voiced = voiced_frames(audio.samples, aggressiveness)
    if voiced.sum() * FRAME_MS < MIN_SPEECH_MS:
        raise NoSpeechError(f"no speech found in the audio ({audio.seconds:.1f} s); nothing was sent to the model")
    window = np.ones(SMOOTHING_FRAMES) / SMOOTHING_FRAMES
    ratio = np.convolve(voiced.astype(float), window, mode="same")
    in_speech = (ratio >= VOICED_RATIO) & voiced
    if not in_speech.any():
        raise NoSpeechError(f"no speech found in the audio ({audio.seconds:.1f} s); nothing was sent to the model")
    frames = np.flatnonzero(in_speech)
    padding = padding_ms * MODEL_SAMPLE_RATE // 1000
    start = max(0, int(frames[0]) * FRAME_SAMPLES - padding)
    end = min(len(audio.samples), (int(frames[-1]) + 1) * FRAME_SAMPLES + padding)
    return SpeechSpan(start, end)


def trim_to_speech(audio: Audio, aggressiveness: int = 2, padding_ms: int = 200) -> Audio:
    span = find_speech(audio, aggressiveness, padding_ms)
    return Audio(audio.samples[span.start : span.end], audio.sample_rate)
