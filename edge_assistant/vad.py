"""Voice activity: where the speech is in a clip, so the model only evaluates the
words (every audio token costs about 35 ms on a Pi 5 after the user stops).

webrtcvad judges 30 ms frames of 16 kHz int16 audio. Single frames flicker in
noise, so a frame counts as speech only when most of the surrounding 300 ms is
voiced; that keeps clicks and fan noise from becoming "speech".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from .audio_io import MODEL_SAMPLE_RATE, Audio
from .config import EndpointConfig
from .errors import NoSpeechError

FRAME_MS = 30
FRAME_SAMPLES = MODEL_SAMPLE_RATE * FRAME_MS // 1000
SMOOTHING_FRAMES = 10  # 300 ms
VOICED_RATIO = 0.6
# Less voiced audio than this is a cough or a click, not a question.
MIN_SPEECH_MS = 240
# Kept after the last voiced frame of a streamed utterance: word endings are soft.
PADDING_AFTER_SPEECH = MODEL_SAMPLE_RATE * 200 // 1000


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


@dataclass(frozen=True)
class SpeechStarted:
    at_sample: int  # input time base: where the voiced run began


@dataclass(frozen=True)
class UtteranceEnded:
    samples: np.ndarray  # 16 kHz float32, pre-roll included, trailing silence trimmed to padding
    start_sample: int  # input time base of samples[0]
    speech_end_sample: int  # where the last voiced frame ended
    forced: bool  # cut at max_speech_seconds rather than by silence


@dataclass(frozen=True)
class UtteranceDiscarded:
    voiced_ms: int  # too little speech: a cough, a click, a door


EndpointEvent = SpeechStarted | UtteranceEnded | UtteranceDiscarded


class Endpointer:
    """Streaming endpointing for the daemon: frames in, speech start and utterance
    end out.

    Speech starts when ``start_ms`` of the last 300 ms is voiced; it ends after
    ``end_silence_ms`` without voice or at ``max_speech_seconds``. The
    ``pre_roll_ms`` before the start is kept, because webrtcvad notices a word
    only after its onset.
    """

    def __init__(self, config: EndpointConfig, aggressiveness: int, frame_ms: int) -> None:
        self.config = config
        self.frame_samples = MODEL_SAMPLE_RATE * frame_ms // 1000
        self.frame_ms = frame_ms
        self._vad = webrtcvad.Vad(aggressiveness)
        self._recent: deque[bool] = deque(maxlen=max(1, SMOOTHING_FRAMES * FRAME_MS // frame_ms))
        # The frames that triggered the start plus pre_roll_ms before them.
        self._pre_roll: deque[np.ndarray] = deque(maxlen=self._recent.maxlen + config.pre_roll_ms // frame_ms)
        self._frames: list[np.ndarray] = []
        self._in_speech = False
        self._start_sample = 0
        self._voiced_frames = 0
        self._silent_run = 0
        self._last_voiced_end = 0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def reset(self) -> None:
        self._pre_roll.clear()
        self._recent.clear()
        self._frames = []
        self._in_speech = False

    def push(self, frame: np.ndarray, end_sample: int) -> EndpointEvent | None:
        """One frame of ``frame_ms`` (16 kHz float32); ``end_sample`` is the input
        time of its last sample + 1."""
        voiced = self._vad.is_speech(to_pcm16(frame), MODEL_SAMPLE_RATE)
        self._recent.append(voiced)
        if not self._in_speech:
            self._pre_roll.append(frame)
            if voiced and sum(self._recent) * self.frame_ms >= self.config.start_ms:
                return self._start(end_sample)
            return None
        self._frames.append(frame)
        if voiced:
            self._voiced_frames += 1
            self._silent_run = 0
            self._last_voiced_end = end_sample
        else:
            self._silent_run += 1
        length_ms = len(self._frames) * self.frame_ms
        if self._silent_run * self.frame_ms >= self.config.end_silence_ms:
            return self._end(forced=False)
        if length_ms >= self.config.max_speech_seconds * 1000:
            return self._end(forced=True)
        return None

    def _start(self, end_sample: int) -> SpeechStarted:
        recent = list(self._recent)
        first_voiced = recent.index(True)
        speech_frames = len(recent) - first_voiced
        keep = min(len(self._pre_roll), speech_frames + self.config.pre_roll_ms // self.frame_ms)
        self._in_speech = True
        self._frames = list(self._pre_roll)[-keep:]
        self._pre_roll.clear()
        self._start_sample = end_sample - keep * self.frame_samples
        self._voiced_frames = sum(recent)
        self._silent_run = 0
        self._last_voiced_end = end_sample
        return SpeechStarted(at_sample=end_sample - speech_frames * self.frame_samples)

    def finish(self) -> UtteranceEnded | UtteranceDiscarded | None:
        """The input ended: an utterance still open ends here, as if silence had
        followed (a recording that stops mid-question is still a question)."""
        return self._end(forced=False) if self._in_speech else None

    def _end(self, forced: bool) -> UtteranceEnded | UtteranceDiscarded:
        frames, self._frames = self._frames, []
        self._in_speech = False
        self._recent.clear()
        voiced_ms = self._voiced_frames * self.frame_ms
        if voiced_ms < self.config.min_speech_ms:
            return UtteranceDiscarded(voiced_ms)
        samples = np.concatenate(frames)
        keep = self._last_voiced_end - self._start_sample + PADDING_AFTER_SPEECH
        return UtteranceEnded(samples[:keep], self._start_sample, self._last_voiced_end, forced)
