"""Piper speaking for wake word training: every speaker of every voice, planned
lines said at 16 kHz with their own prosody, on worker threads."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soxr

from ..audio.format import MODEL_SAMPLE_RATE
from ..progress import Progress


@dataclass(frozen=True)
class Prosody:
    length_scale: float
    noise_scale: float
    noise_w_scale: float
    speed: float  # pitch and tempo factor applied by resampling


PLAIN = Prosody(1.0, 0.667, 0.8, 1.0)  # Piper's defaults


class Speaker:
    """One speaker of one Piper voice, speaking phonemes at 16 kHz."""

    def __init__(self, voice, speaker_id: int | None, name: str) -> None:
        self.voice = voice
        self.speaker_id = speaker_id
        self.name = name

    def phonemes(self, text: str) -> list[str]:
        """The voice's phonemes for ``text``, sentences joined into one utterance."""
        return [phoneme for sentence in self.voice.phonemize(text) for phoneme in [*sentence, " "]][:-1]

    def say(self, phonemes: Sequence[str], prosody: Prosody) -> np.ndarray:
        """Normalized float32 speech at 16 kHz, silence trimmed."""
        from piper import SynthesisConfig

        config = SynthesisConfig(
            speaker_id=self.speaker_id,
            length_scale=prosody.length_scale,
            noise_scale=prosody.noise_scale,
            noise_w_scale=prosody.noise_w_scale,
        )
        audio = np.asarray(self.voice.phoneme_ids_to_audio(self.voice.phonemes_to_ids(list(phonemes)), config)).reshape(-1)
        audio = soxr.resample(audio.astype(np.float32), self.voice.config.sample_rate * prosody.speed, MODEL_SAMPLE_RATE)
        return trim_silence(audio / max(float(np.abs(audio).max()), 1e-6))


@dataclass(frozen=True)
class Line:
    """Something to say, planned up front: speaker (an index into the speakers),
    phonemes and prosody."""

    speaker: int
    phonemes: list[str]
    prosody: Prosody


def load_speakers(voice_paths: Sequence[Path], limit: int, seed: int) -> list[Speaker]:
    """Every speaker of every voice, or the same random ``limit`` of them for the
    same seed. Each voice gets a single-threaded session of its own (the workers
    provide the parallelism) whose random generator, which Piper's noise comes
    from, onnxruntime seeds from ``seed`` when the session is created."""
    import onnxruntime

    from ..tts import PiperSpeech

    speakers = []
    for path in map(Path, voice_paths):
        onnxruntime.set_seed(seed)
        voice = PiperSpeech(path, threads=1).voice
        count = voice.config.num_speakers
        ids = [None] if count <= 1 else list(range(count))
        speakers += [Speaker(voice, sid, path.stem if sid is None else f"{path.stem}#{sid}") for sid in ids]
    if len(speakers) > limit:
        chosen = np.random.default_rng(seed).choice(len(speakers), limit, replace=False)
        speakers = [speakers[i] for i in sorted(chosen)]
    return speakers


def synthesize(lines: Sequence[Line], speakers: Sequence[Sequence[Speaker]], pool: Executor, progress: Progress) -> list[np.ndarray]:
    """Worker k says lines k, k + n, k + 2n... with its own copy of the speakers:
    with a fixed share per session generator, the same seed gives the same takes
    however the threads are scheduled."""
    workers = len(speakers)

    def share(k: int) -> list[np.ndarray]:
        takes = []
        for line in lines[k::workers]:
            takes.append(speakers[k][line.speaker].say(line.phonemes, line.prosody))
            progress.advance()
        return takes

    shares = list(pool.map(share, range(workers)))
    return [shares[i % workers][i // workers] for i in range(len(lines))]


def trim_silence(audio: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing 10 ms frames quieter than ``floor_db`` below the peak
    frame, so "end of the phrase" means the end of its sound."""
    frames = len(audio) // 160
    if frames == 0:
        return audio
    energy = (audio[: frames * 160].reshape(frames, 160) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (floor_db / 10))
    return audio[loud[0] * 160 : (loud[-1] + 1) * 160]


def random_prosody(rng: np.random.Generator) -> Prosody:
    return Prosody(
        length_scale=rng.uniform(0.8, 1.3),
        noise_scale=rng.uniform(0.3, 1.0),
        noise_w_scale=rng.uniform(0.4, 1.2),
        speed=rng.uniform(0.9, 1.1),
    )
