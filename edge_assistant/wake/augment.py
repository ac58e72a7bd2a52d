"""The rooms a wake phrase is heard in: noise, hum, music-like tones, babble and
the user's recordings as backgrounds, reverberation, level and speed changes,
and the clips and long streams made from them."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import soxr

from ..audio.format import MODEL_SAMPLE_RATE
from .detector import FIRST_EMBEDDING_END, FRAMES, STEP_SAMPLES


CLIPS_PER_TAKE = 3  # augmented copies of each phrase take
SNRS_DB = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0)


def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f**exponent: 0 white (hiss), 1 pink (rain), 2 brown (rumble)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.maximum(np.arange(len(spectrum)), 1) ** (exponent / 2)
    return normalize(np.fft.irfft(spectrum, n))


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum and its harmonics, as from a fridge or a cheap power supply."""
    t = np.arange(n) / MODEL_SAMPLE_RATE
    base = rng.choice([50.0, 60.0])
    return normalize(sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6)) / k for k in range(1, 6)))


def music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Music-like: notes and chords with harmonics and decays, at a random tempo."""
    out = np.zeros(n)
    note = int(MODEL_SAMPLE_RATE * rng.uniform(0.15, 0.6))
    t = np.arange(note) / MODEL_SAMPLE_RATE
    for start in range(0, n, note):
        tone = np.zeros(note)
        for _ in range(rng.integers(1, 4)):
            f = 110 * 2 ** (rng.integers(0, 36) / 12)
            tone += sum(np.sin(2 * np.pi * f * k * t) * rng.uniform(0.2, 1) / k for k in range(1, 5))
        out[start : start + note] += (tone * np.exp(-t * rng.uniform(1, 8)))[: n - start]
    return normalize(out)


def band(n: int, rng: np.random.Generator) -> np.ndarray:
    """A band: a chord per bar (three notes with harmonics, a bass note) over
    kick, snare and hi-hat at 70 to 150 beats per minute, in 4/4."""
    beat = int(MODEL_SAMPLE_RATE * 60 / rng.uniform(70, 150))
    bar = 4 * beat
    t = np.arange(bar) / MODEL_SAMPLE_RATE
    out = np.zeros(n + bar)
    hit = np.arange(beat) / MODEL_SAMPLE_RATE
    kick = 2.0 * np.sin(2 * np.pi * (50 + 80 * np.exp(-hit * 30)) * hit) * np.exp(-hit * 12)  # a falling sine
    snare_tone, snare_decay = np.sin(2 * np.pi * 190 * hit), np.exp(-hit * 20)
    hat_decay = 0.3 * np.exp(-np.arange(beat // 2) / MODEL_SAMPLE_RATE * 60)
    root = 0
    for start in range(0, n, bar):
        root = (root + rng.choice([0, 5, 7, 9])) % 12  # I, IV, V, vi steps
        chord = [110 * 2 ** ((root + step) / 12) for step in (12, 16 if rng.random() < 0.6 else 15, 19)]
        tone = sum(np.sin(2 * np.pi * f * k * t) / k**1.5 for f in chord for k in range(1, 5))
        tone += 1.5 * np.sin(2 * np.pi * 55 * 2 ** (root / 12) * t)
        out[start : start + bar] += 0.25 * tone * np.exp(-t * rng.uniform(0.3, 2.0))
        for k in range(4):
            at = start + k * beat
            if k % 2 == 0:
                out[at : at + beat] += kick
            else:  # snare: noise and a tone
                out[at : at + beat] += (rng.standard_normal(beat) * 0.8 + snare_tone) * snare_decay
            for half in (0, beat // 2):  # hi-hat: high, short noise
                out[at + half : at + half + beat // 2] += np.diff(rng.standard_normal(beat // 2 + 1)) * hat_decay
    return normalize(out[:n])


def normalize(audio: np.ndarray) -> np.ndarray:
    """Unit RMS, float32."""
    return (audio / max(float(np.sqrt(np.mean(audio**2))), 1e-9)).astype(np.float32)


def reverberate(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room: direct sound, then exponentially decaying
    noise (RT60 0.15 to 0.8 s). Same length and RMS as the input."""
    rt60 = rng.uniform(0.15, 0.8)
    length = int(rt60 * MODEL_SAMPLE_RATE)
    t = np.arange(length) / MODEL_SAMPLE_RATE
    impulse = rng.standard_normal(length) * np.exp(-6.9 * t / rt60) * rng.uniform(0.05, 0.3)
    impulse[0] = 1.0
    size = 1 << int(np.ceil(np.log2(len(audio) + length)))
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(impulse, size), size)[: len(audio)]
    return (wet * math.sqrt(np.mean(audio**2) / max(np.mean(wet**2), 1e-12))).astype(np.float32)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Faster and higher (factor > 1) or slower and lower, by resampling."""
    return soxr.resample(audio, MODEL_SAMPLE_RATE * factor, MODEL_SAMPLE_RATE).astype(np.float32)


class Backgrounds:
    """Random background sounds: synthetic noises, babble from negative speech and,
    most realistic of all, the user's own recordings."""

    def __init__(self, speech: Sequence[np.ndarray], recordings: Sequence[np.ndarray]) -> None:
        self.speech = [s for s in speech if len(s)]
        self.recordings = [r for r in recordings if len(r) > MODEL_SAMPLE_RATE]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        kinds: list[Callable[[], np.ndarray]] = [
            lambda: colored_noise(n, rng, rng.choice([0.0, 1.0, 2.0])),
            lambda: hum(n, rng) + 0.3 * colored_noise(n, rng, 1.0),
            lambda: music(n, rng),
        ]
        if self.speech:
            kinds.append(lambda: self._babble(n, rng))
        if self.recordings:
            kinds += [lambda: self._recording(n, rng)] * 2
        return kinds[rng.integers(len(kinds))]()

    def _babble(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        for _ in range(rng.integers(1, 5)):
            out += loop_to(self.speech[rng.integers(len(self.speech))], n, rng)
        return normalize(out)

    def _recording(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return normalize(loop_to(self.recordings[rng.integers(len(self.recordings))], n, rng))


def loop_to(audio: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of ``audio`` from a random point, repeated as needed."""
    start = rng.integers(len(audio))
    return np.resize(np.roll(audio, -start), n).astype(np.float32)


def mix(foreground: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """Background scaled so the foreground's active parts are ``snr_db`` louder."""
    active = foreground[np.abs(foreground) > 0.02 * np.abs(foreground).max()] if np.any(foreground) else foreground
    level = math.sqrt(float(np.mean(active**2))) if len(active) else 1e-3
    return foreground + background * level / 10 ** (snr_db / 20)


def set_level(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Peak between -30 and -1 dBFS: far and near talkers, quiet and loud rooms."""
    peak = max(float(np.abs(audio).max()), 1e-9)
    return (audio * 10 ** (rng.uniform(-30, -1) / 20) / peak).astype(np.float32)


def voice_variant(take: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A take a little faster or slower (and so higher or lower), in a room half the time."""
    speech = change_speed(take, rng.uniform(0.92, 1.08))
    return reverberate(speech, rng) if rng.random() < 0.5 else speech


def in_scene(audio: np.ndarray, backgrounds: Backgrounds, rng: np.random.Generator) -> np.ndarray:
    """``audio`` over a random background at a random SNR, at a random level. Every
    piece of every class gets its own scene: if one class heard some noise more
    often, the classifier would learn the noise instead of the words."""
    return set_level(mix(audio, backgrounds.sample(len(audio), rng), rng.choice(SNRS_DB)), rng)


def utterance_clip(take: np.ndarray, tail: float, backgrounds: Backgrounds, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A take after enough background that the first window ending with it has a
    full lead-in, and before ``tail`` s more; returns the clip and when the take
    ends in it."""
    speech = voice_variant(take, rng)
    lead = max(0, FIRST_EMBEDDING_END + (FRAMES - 1) * STEP_SAMPLES - len(speech)) + int(rng.uniform(0.1, 0.5) * MODEL_SAMPLE_RATE)
    clip = np.zeros(lead + len(speech) + int(tail * MODEL_SAMPLE_RATE), dtype=np.float32)
    clip[lead : lead + len(speech)] = speech
    return in_scene(clip, backgrounds, rng), (lead + len(speech)) / MODEL_SAMPLE_RATE


def speech_stream(takes: Sequence[np.ndarray], seconds: float, backgrounds: Backgrounds, rng: np.random.Generator) -> np.ndarray:
    """About ``seconds`` of ordinary speech, a scene per sentence, with pauses."""
    pieces, total = [], 0
    while total < seconds * MODEL_SAMPLE_RATE:
        speech = voice_variant(takes[rng.integers(len(takes))], rng)
        pause = np.zeros(int(rng.uniform(0.1, 2.5) * MODEL_SAMPLE_RATE), dtype=np.float32)
        pieces.append(in_scene(np.concatenate([speech, pause]), backgrounds, rng))
        total += len(pieces[-1])
    return np.concatenate(pieces)


def noise_stream(seconds: float, backgrounds: Backgrounds, rng: np.random.Generator) -> np.ndarray:
    """About ``seconds`` of backgrounds alone (noise, music, babble, the user's
    rooms) and digital silence, changing every few seconds."""
    pieces, total = [], 0
    while total < seconds * MODEL_SAMPLE_RATE:
        n = int(rng.uniform(2.0, 6.0) * MODEL_SAMPLE_RATE)
        pieces.append(np.zeros(n, dtype=np.float32) if rng.random() < 0.1 else set_level(backgrounds.sample(n, rng), rng))
        total += n
    return np.concatenate(pieces)
