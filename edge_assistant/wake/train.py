"""Training a wake phrase on the device, in minutes, from synthetic speech only.

Piper speaks the phrase with every voice and speaker available, at varied speed and
expressiveness; the takes are pitch/speed shifted, reverberated and mixed into
noise. Negatives are what must not wake the assistant: near misses of the phrase
(parts of it, a word or a consonant changed), ordinary speech, noise, music-like
tones, silence and the user's own recordings. openWakeWord's frozen feature models
turn all of it into embeddings (:class:`edge_assistant.wakeword.AudioFeatures`, the
runtime's own code), where a one-hidden-layer network trained with numpy is enough.
Part of every source is held out; the threshold is chosen from the held-out recall
and false accepts per hour and stored in the ONNX model's metadata.

What decides the quality is the variety of negative speech: with too little, the
classifier learns "a short utterance after a pause" instead of the words. Every
piece of audio therefore gets its own background, and synthesis and feature
extraction run on all cores, one single-threaded onnxruntime session per task
(faster than multi-threaded sessions on a busy Pi, where spinning threads starve).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence, TextIO, TypeVar

import numpy as np
import soxr

from ..audio_io import check_output_path, read_audio
from ..errors import UsageError
from .detector import (
    EMBEDDING_DIM,
    FIRST_EMBEDDING_END,
    META_PHRASE,
    META_THRESHOLD,
    SAMPLE_RATE,
    STEP_SAMPLES,
    AudioFeatures,
    WakeModel,
    load_wake_model,
)

log = logging.getLogger(__name__)

FRAMES = 16  # embeddings per classifier input, as in openWakeWord
# Effort per --minutes unit, sized to take about a minute on a 2-core x86 PC.
PHRASE_TAKES = 120  # Piper syntheses of the phrase
CLIPS_PER_TAKE = 3  # augmented copies of each
NEAR_MISS_TAKES = 80
SPEECH_TAKES = 150  # ordinary speech, about 2.5 s each
STREAM_SECONDS = 720  # augmented speech and noise streams made from them, to train on
HELD_OUT_STREAM_SECONDS = 600  # and to count false accepts in
SPEECH_SHARE = 0.7  # of those streams; the rest is noise, music and silence
STREAM_PIECE_SECONDS = 30
HELD_OUT = 0.25  # share of every source kept out of training
MAX_USER_NEGATIVE_SECONDS = 2 * 3600
# A classifier window spans 1.96 s; slow takes must still fit with some lead-in.
MIN_PHRASE_SECONDS = 0.25
MAX_PHRASE_SECONDS = 1.4
# Window end relative to the end of the phrase: fire from 0 to 320 ms after it,
# stay quiet while it is still being spoken; in between is left unlabelled.
FIRE_AFTER = (0.0, 0.32)
QUIET_BEFORE = -0.16
# Clips run on after the utterance: positives as far as the evaluation looks for
# the detection, near misses until they have nearly left the window, or the
# classifier never sees "a word, then a second of silence" and fires on it.
POSITIVE_TAIL = 0.6
NEAR_MISS_TAIL = 1.6
SNRS_DB = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0)
REFRACTORY_SECONDS = 2.0
FALSE_ACCEPT_COST = 0.05  # one false accept per hour weighs as much as missing 5% of wake words
MAX_WORKERS = 4  # each synthesis can take a few hundred MB
HIDDEN_UNITS = 64
EPOCHS = 12
BATCH = 256

SENTENCES = (
    "The weather will be cloudy in the morning with some rain later in the day.",
    "Could you pass me the salt and the pepper, please?",
    "I think we should leave a bit earlier tomorrow to avoid the traffic.",
    "She bought three apples, a loaf of bread and some cheese at the market.",
    "The meeting has been moved to Thursday afternoon at half past two.",
    "Turn left at the next corner and then keep going straight for a mile.",
    "My brother is learning to play the guitar, and he practices every night.",
    "Dinner is almost ready, so wash your hands and set the table.",
    "The children were playing football in the park until it got dark.",
    "Scientists discovered a new species of frog in the rain forest.",
    "Have you seen my keys? I left them on the kitchen counter this morning.",
    "The train to the city departs from platform four in ten minutes.",
    "We watched a documentary about the history of ancient Rome last night.",
    "Remember to water the plants while I am away on holiday.",
    "The stock market closed slightly higher after a quiet day of trading.",
    "This recipe needs two cups of flour, one egg and a pinch of sugar.",
    "It is going to be a long week, but we will get through it together.",
    "The museum is open every day except Monday from nine until five.",
    "Please call me back when you get this message, it is about the party.",
    "The team scored in the final minute and the crowd went wild.",
    "I would like a cup of coffee with milk and no sugar, thank you.",
    "Our neighbors are painting their fence a bright shade of yellow.",
    "The library will be closed for renovations during the whole of August.",
    "Let me know if you need any help carrying the boxes upstairs.",
    "He told a funny story about his first day at work and everyone laughed.",
    "The doctor said I should drink more water and get some exercise.",
    "Traffic is heavy on the highway because of an accident near the bridge.",
    "Who wants to go for a walk by the river after lunch?",
    "The new phone has a bigger screen and a much better camera.",
    "Good evening and welcome to the news at six.",
    "Tell me what you think about the plan before we decide anything.",
    "Yesterday it snowed so much that the schools were closed.",
    "Hello there, how are you doing today?",
    "Okay, so that is settled then, see you next week.",
    "Yes, no, maybe, I am not sure what to say anymore.",
    "Thank you very much for coming, it was lovely to see you.",
)

# Never used in training: speech a model has not heard, for judging it
# (scripts/bench_wakeword.py, the tests).
UNSEEN_SENTENCES = (
    "I need to buy some new shoes before the wedding next month.",
    "Can you believe how expensive vegetables have become this year?",
    "The cat jumped onto the table and knocked over a glass of water.",
    "We should call the plumber about the leaking pipe in the bathroom.",
    "After the concert we went out for pizza with our friends.",
    "My grandmother makes the best apple pie in the whole town.",
    "Please remember to lock the door when you leave the house.",
    "The airplane landed safely despite the strong winds.",
    "Did you remember to feed the dog this morning?",
    "The professor explained the theory with a simple example.",
    "The library closes early on Sundays during the summer.",
    "Our train was delayed by almost an hour this morning.",
)

# Random strings of common words give the negative speech phonetic variety that a
# fixed list of sentences cannot (any voice reads them, in its own language's way).
WORDS = """
about across add again ago air almost along also among animal answer appear area around art at baby
bad ball base bear beauty before behind below better big bit blood board body book both box bread
bright brother build business but call can care case catch cell chair change check choose city clean
climb close cloud cold come company cool corn cost count course cow crowd cup cut dark dead dear
deep design detail die dinner do dog door down dream drink drop during early east eat effect eight
else enemy enjoy enter evening ever exact except expect eye fact fall famous farm father feel field
figure film find finger fire fish floor fly food for forest form four fresh from fruit fun garden
gather gentle gift give glass gold got grass green group guess gun half hand happy hat he hear heat
help here hill his hit hole hope hot house huge hundred hurry if in include inside iron it join jump
keep kid kind kitchen know lake language last laugh lay learn leave leg letter lie lift like list
little long lost loud low machine major man map market match may mean meat member middle mile
million minute modern money moon morning mother mouth much must nation near need never news nice
nine none north note notice number ocean off office oil once only order our over page pair park
party past people person picture place plant please pocket poor possible power prepare pretty print
produce pull put quick quite radio raise read real receive red repeat rest return ride ring river
rock room rope round rule safe salt sand say science sea seat see seem send serve seven shape sharp
sheep shine shoe short shoulder show sign simple sing sister six skin sleep small smile so soil some
song sound space special spell spring stand start station steel stick stone store straight street
student such sugar sun sure swim tail talk teach tell test thank the them there they thin think this
though thousand through tie tiny to together tomorrow too total toward track train tree trouble true
turn two until upon use valley very village voice walk want wash water way wear week well what when
which white whole wide wild win window wire with wonder word world wrong year yes you
""".split()
# Words that often come next to or instead of a wake word's words.
COMMON_WORDS = ("there", "you", "guys", "man", "yes", "okay", "hello", "stop", "see", "then", "the", "a", "listen", "wait")
# Near misses change one consonant to a clearly different one (place of
# articulation, not just voicing: "dessa" for "tessa" is too close to call).
SIMILAR_CONSONANTS = {
    "p": "tk", "b": "dɡ", "t": "kp", "d": "ɡb", "k": "tp", "ɡ": "db",
    "f": "sʃ", "v": "zð", "s": "fʃ", "z": "vð", "ʃ": "sf", "θ": "sf", "ð": "zv",
    "m": "nŋ", "n": "mŋ", "ŋ": "nm", "l": "ɹw", "ɹ": "lw", "w": "lɹ", "j": "lw",
}
# ... or one vowel to a clearly different one.
SIMILAR_VOWELS = {
    "ɛ": "ɪæʌ", "æ": "ɛɑʌ", "ɪ": "ɛiʊ", "i": "ɪeu", "ʌ": "ɑæɛ", "ɑ": "ʌæɔ", "ɔ": "ɑoʊ",
    "ʊ": "uɪɔ", "u": "ʊoi", "e": "aoi", "o": "eau", "a": "eoæ", "ɚ": "ɑɔ", "ɜ": "ɛʌ",
}


@dataclass(frozen=True)
class TrainOptions:
    phrase: str
    out: Path
    voices: tuple[Path, ...]
    negatives_dir: Path | None = None
    minutes: float = 1.0
    seed: int = 0
    workers: int = 0  # 0: one per CPU core, at most MAX_WORKERS


@dataclass(frozen=True)
class TrainResult:
    """What was written and how it did on the held-out audio."""

    path: Path
    phrase: str
    threshold: float
    recall: float  # of held-out phrase takes, at the threshold
    positives_held_out: int
    near_miss_accepts: float  # share of held-out near misses that fire
    false_accepts: int  # in the held-out speech, noise and recordings
    negative_hours: float
    seconds: float
    model_bytes: int

    @property
    def false_accepts_per_hour(self) -> float:
        return self.false_accepts / self.negative_hours

    def metadata(self, voices: str) -> dict[str, str]:
        """ONNX metadata_props: the runtime reads the threshold; the rest documents
        the model for whoever finds the file later."""
        return {
            META_PHRASE: self.phrase,
            META_THRESHOLD: f"{self.threshold:.2f}",
            "edge_assistant.recall": f"{self.recall:.3f}",
            "edge_assistant.near_miss_accepts": f"{self.near_miss_accepts:.3f}",
            "edge_assistant.false_accepts_per_hour": f"{self.false_accepts_per_hour:.2f}",
            "edge_assistant.held_out_negative_hours": f"{self.negative_hours:.3f}",
            "edge_assistant.voices": voices,
        }


# --- progress ------------------------------------------------------------------------


class Progress:
    """A bar on stderr when it is a terminal, one line per stage otherwise (logs)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self._stage = ""
        self._total = 1.0
        self._done = 0.0
        self._drawn_at = 0.0
        self._lock = threading.Lock()

    def stage(self, name: str, total: float) -> None:
        self._finish_line()
        self._stage, self._total, self._done = name, max(1.0, total), 0.0
        if not self.tty:
            print(f"wakeword: {name}…", file=self.stream, flush=True)
        self._draw()

    def advance(self, count: float = 1) -> None:
        with self._lock:  # synthesis workers report from their threads
            self._done = min(self._total, self._done + count)
            self._draw()

    def close(self) -> None:
        self._finish_line()

    def _draw(self) -> None:
        now = time.perf_counter()
        if not self.tty or (now - self._drawn_at < 0.1 and self._done < self._total):
            return
        self._drawn_at = now
        fraction = self._done / self._total
        bar = "#" * int(fraction * 24)
        elapsed = now - self.started
        self.stream.write(f"\r{self._stage:<22} [{bar:<24}] {fraction:4.0%} {elapsed:5.0f} s")
        self.stream.flush()

    def _finish_line(self) -> None:
        if self.tty and self._stage:
            self.stream.write("\n")
            self.stream.flush()


# --- Piper ---------------------------------------------------------------------------


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
        audio = soxr.resample(audio.astype(np.float32), self.voice.config.sample_rate * prosody.speed, SAMPLE_RATE)
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


def tidy_phrase(phrase: str) -> str:
    """Whitespace collapsed; an empty phrase is refused before anything is loaded."""
    phrase = " ".join(phrase.split())
    if not phrase:
        raise UsageError("the wake phrase is empty")
    return phrase


def check_phrase(phrase: str, speakers: Sequence[Speaker]) -> None:
    """A UsageError saying why, unless every voice can say the phrase in a
    wake-word-sized breath."""
    for speaker in speakers:
        phonemes = speaker.phonemes(phrase)
        if not "".join(phonemes).strip():
            raise UsageError(f"Piper cannot speak {phrase!r} with voice {speaker.name}: no pronounceable words")
        unknown = sorted({p for p in phonemes if p not in speaker.voice.config.phoneme_id_map})
        if unknown:
            raise UsageError(f"Piper cannot speak {phrase!r} with voice {speaker.name}: unknown phonemes {' '.join(unknown)}")
        seconds = len(speaker.say(phonemes, PLAIN)) / SAMPLE_RATE
        if seconds < MIN_PHRASE_SECONDS:
            raise UsageError(f"wake phrase {phrase!r} is too short ({seconds:.2f} s spoken): use two or more syllables")
        if seconds > MAX_PHRASE_SECONDS:
            raise UsageError(
                f"wake phrase {phrase!r} is too long ({seconds:.1f} s spoken by {speaker.name}); "
                f"it must fit in {MAX_PHRASE_SECONDS} s (2 to 5 syllables work best)"
            )


def random_prosody(rng: np.random.Generator) -> Prosody:
    return Prosody(
        length_scale=rng.uniform(0.8, 1.3),
        noise_scale=rng.uniform(0.3, 1.0),
        noise_w_scale=rng.uniform(0.4, 1.2),
        speed=rng.uniform(0.9, 1.1),
    )


def phrase_variants(phrase: str) -> list[str]:
    """Punctuation changes Piper's intonation: said plainly, as a call, as a question."""
    words = phrase.split()
    called = f"{words[0]}, {' '.join(words[1:])}" if len(words) > 1 else phrase
    return [phrase, f"{phrase}!", f"{called}.", f"{phrase}?"]


def near_misses(phrase: str, speaker: Speaker, rng: np.random.Generator, count: int) -> list[list[str]]:
    """Phoneme sequences close to the phrase that must not wake: its parts ("hey",
    "tessa"), a word swapped ("hey there"), its words in another order, and one or
    two sounds changed ("hey tesla", "hey tossa")."""
    words = phrase.split()
    phonemes = speaker.phonemes(phrase)
    if len(words) == 1:
        half = max(2, len(phonemes) // 2)
        parts = [phonemes[:half], phonemes[-half:]]
    else:
        texts = [" ".join(words[:i]) for i in range(1, len(words))] + [" ".join(words[i:]) for i in range(1, len(words))]
        texts += [" ".join([*words[:i], str(rng.choice(COMMON_WORDS)), *words[i + 1 :]]) for i in range(len(words)) for _ in range(3)]
        texts.append(" ".join(reversed(words)))
        parts = [speaker.phonemes(text) for text in texts]
    similar = {**SIMILAR_CONSONANTS, **SIMILAR_VOWELS}
    # A diphthong's second half ("ey" → "ei") changes too little to count as a miss.
    changeable = [i for i, p in enumerate(phonemes) if p in similar and not (i and phonemes[i - 1] in SIMILAR_VOWELS)]
    misses = []
    for _ in range(count):
        if not changeable or rng.random() < 0.4:
            misses.append(list(parts[rng.integers(len(parts))]))
            continue
        changed = list(phonemes)
        for index in rng.choice(changeable, size=min(len(changeable), 1 + int(rng.random() < 0.3)), replace=False):
            changed[index] = str(rng.choice(list(similar[changed[index]])))
        misses.append(changed)
    return misses


def ordinary_text(rng: np.random.Generator) -> str:
    """A sentence from the list or, more often, a string of 3 to 8 random words
    (short: Piper's memory grows with the length of what it says)."""
    if rng.random() < 0.3:
        return SENTENCES[rng.integers(len(SENTENCES))]
    return " ".join(rng.choice(WORDS, rng.integers(3, 9)))


def plan_lines(phrase: str, speakers: Sequence[Speaker], minutes: float, rng: np.random.Generator) -> list[list[Line]]:
    """Phrase takes, near misses and ordinary speech, speakers taking turns, each
    line with its own random prosody."""
    counts = [max(4, round(count * minutes)) for count in (PHRASE_TAKES, NEAR_MISS_TAKES, SPEECH_TAKES)]
    variants = [[speaker.phonemes(text) for text in phrase_variants(phrase)] for speaker in speakers]
    misses = [near_misses(phrase, speaker, rng, counts[1] // len(speakers) + 1) for speaker in speakers]
    texts: list[Callable[[int, int], list[str]]] = [
        lambda s, i: variants[s][i % len(variants[s])],
        lambda s, i: misses[s][i // len(speakers)],
        lambda s, i: speakers[s].phonemes(ordinary_text(rng)),
    ]
    return [
        [Line(i % len(speakers), text(i % len(speakers), i), random_prosody(rng)) for i in range(count)]
        for count, text in zip(counts, texts)
    ]


# --- sound ---------------------------------------------------------------------------


def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f**exponent: 0 white (hiss), 1 pink (rain), 2 brown (rumble)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.maximum(np.arange(len(spectrum)), 1) ** (exponent / 2)
    return normalize(np.fft.irfft(spectrum, n))


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum and its harmonics, as from a fridge or a cheap power supply."""
    t = np.arange(n) / SAMPLE_RATE
    base = rng.choice([50.0, 60.0])
    return normalize(sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6)) / k for k in range(1, 6)))


def music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Music-like: notes and chords with harmonics and decays, at a random tempo."""
    out = np.zeros(n)
    note = int(SAMPLE_RATE * rng.uniform(0.15, 0.6))
    t = np.arange(note) / SAMPLE_RATE
    for start in range(0, n, note):
        tone = np.zeros(note)
        for _ in range(rng.integers(1, 4)):
            f = 110 * 2 ** (rng.integers(0, 36) / 12)
            tone += sum(np.sin(2 * np.pi * f * k * t) * rng.uniform(0.2, 1) / k for k in range(1, 5))
        out[start : start + note] += (tone * np.exp(-t * rng.uniform(1, 8)))[: n - start]
    return normalize(out)


def normalize(audio: np.ndarray) -> np.ndarray:
    """Unit RMS, float32."""
    return (audio / max(float(np.sqrt(np.mean(audio**2))), 1e-9)).astype(np.float32)


def reverberate(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room: direct sound, then exponentially decaying
    noise (RT60 0.15 to 0.8 s). Same length and RMS as the input."""
    rt60 = rng.uniform(0.15, 0.8)
    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    impulse = rng.standard_normal(length) * np.exp(-6.9 * t / rt60) * rng.uniform(0.05, 0.3)
    impulse[0] = 1.0
    size = 1 << int(np.ceil(np.log2(len(audio) + length)))
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(impulse, size), size)[: len(audio)]
    return (wet * math.sqrt(np.mean(audio**2) / max(np.mean(wet**2), 1e-12))).astype(np.float32)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Faster and higher (factor > 1) or slower and lower, by resampling."""
    return soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


class Backgrounds:
    """Random background sounds: synthetic noises, babble from negative speech and,
    most realistic of all, the user's own recordings."""

    def __init__(self, speech: Sequence[np.ndarray], recordings: Sequence[np.ndarray]) -> None:
        self.speech = [s for s in speech if len(s)]
        self.recordings = [r for r in recordings if len(r) > SAMPLE_RATE]

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
    lead = max(0, FIRST_EMBEDDING_END + (FRAMES - 1) * STEP_SAMPLES - len(speech)) + int(rng.uniform(0.1, 0.5) * SAMPLE_RATE)
    clip = np.zeros(lead + len(speech) + int(tail * SAMPLE_RATE), dtype=np.float32)
    clip[lead : lead + len(speech)] = speech
    return in_scene(clip, backgrounds, rng), (lead + len(speech)) / SAMPLE_RATE


def speech_stream(takes: Sequence[np.ndarray], seconds: float, backgrounds: Backgrounds, rng: np.random.Generator) -> np.ndarray:
    """About ``seconds`` of ordinary speech, a scene per sentence, with pauses."""
    pieces, total = [], 0
    while total < seconds * SAMPLE_RATE:
        speech = voice_variant(takes[rng.integers(len(takes))], rng)
        pause = np.zeros(int(rng.uniform(0.1, 2.5) * SAMPLE_RATE), dtype=np.float32)
        pieces.append(in_scene(np.concatenate([speech, pause]), backgrounds, rng))
        total += len(pieces[-1])
    return np.concatenate(pieces)


def noise_stream(seconds: float, backgrounds: Backgrounds, rng: np.random.Generator) -> np.ndarray:
    """About ``seconds`` of backgrounds alone (noise, music, babble, the user's
    rooms) and digital silence, changing every few seconds."""
    pieces, total = [], 0
    while total < seconds * SAMPLE_RATE:
        n = int(rng.uniform(2.0, 6.0) * SAMPLE_RATE)
        pieces.append(np.zeros(n, dtype=np.float32) if rng.random() < 0.1 else set_level(backgrounds.sample(n, rng), rng))
        total += n
    return np.concatenate(pieces)


# --- examples ------------------------------------------------------------------------

Result = TypeVar("Result")


def run_jobs(pool: Executor, jobs: Sequence[Callable[[], Result]], progress: Progress, weight: Callable[[Result], float]) -> list[Result]:
    """Run jobs on the worker threads; results in order, progress as they come."""
    results = []
    for result in pool.map(lambda job: job(), jobs):
        results.append(result)
        progress.advance(weight(result))
    return results


def windows_of(embeddings: np.ndarray) -> np.ndarray:
    """(n - 15, 16, 96): every classifier input a stream of embeddings produces."""
    if len(embeddings) < FRAMES:
        return np.zeros((0, FRAMES, EMBEDDING_DIM), dtype=np.float32)
    return np.lib.stride_tricks.sliding_window_view(embeddings, FRAMES, axis=0).transpose(0, 2, 1)


def window_offsets(embeddings: np.ndarray, end: float) -> np.ndarray:
    """For each of ``windows_of``'s windows: where it ends, in seconds after ``end``."""
    last = np.arange(FRAMES - 1, len(embeddings))
    return (last * STEP_SAMPLES + FIRST_EMBEDDING_END) / SAMPLE_RATE - end


def audio_seconds(embeddings: np.ndarray) -> float:
    """Length of the audio that gave ``embeddings``."""
    return ((len(embeddings) - 1) * STEP_SAMPLES + FIRST_EMBEDDING_END) / SAMPLE_RATE


@dataclass(frozen=True)
class Utterance:
    """Embeddings of a clip holding one utterance that ends ``end`` s into it."""

    embeddings: np.ndarray
    end: float


@dataclass(frozen=True)
class WindowSet:
    """Classifier inputs as views into one array of embeddings: input i is
    ``pool[starts[i] : starts[i] + 16]``, 16 times less memory than copies."""

    pool: np.ndarray
    starts: np.ndarray
    labels: np.ndarray

    def inputs(self, index: np.ndarray) -> np.ndarray:
        return self.pool[self.starts[index, None] + np.arange(FRAMES)].reshape(len(index), FRAMES * EMBEDDING_DIM)


@dataclass(frozen=True)
class SideFeatures:
    positives: list[Utterance]
    misses: list[Utterance]
    streams: list[np.ndarray]  # embeddings of continuous negative audio

    @property
    def stream_seconds(self) -> float:
        return sum(audio_seconds(embeddings) for embeddings in self.streams)

    def training_set(self) -> WindowSet:
        """Just after the phrase: 1. Having heard only part of it, near misses,
        speech, noise: 0. The moment in between is left out."""
        pool, starts, labels = [], [], []
        offset = 0

        def add(embeddings: np.ndarray, window_labels: np.ndarray) -> None:
            nonlocal offset
            keep = np.flatnonzero(window_labels >= 0)
            pool.append(embeddings)
            starts.append(offset + keep)
            labels.append(window_labels[keep])
            offset += len(embeddings)

        for utterance in self.positives:
            offsets = window_offsets(utterance.embeddings, utterance.end)
            fire = (offsets >= FIRE_AFTER[0]) & (offsets <= FIRE_AFTER[1])
            add(utterance.embeddings, np.where(fire, 1.0, np.where(offsets < QUIET_BEFORE, 0.0, -1.0)))
        for embeddings in [utterance.embeddings for utterance in self.misses] + self.streams:
            add(embeddings, np.zeros(max(0, len(embeddings) - FRAMES + 1)))
        return WindowSet(np.concatenate(pool), np.concatenate(starts), np.concatenate(labels).astype(np.float32))


@dataclass
class Side:
    """One side of the split (training or held-out): audio before augmentation."""

    takes: list[np.ndarray]
    misses: list[np.ndarray]
    speech: list[np.ndarray]
    recordings: list[np.ndarray]

    def work(self, stream_seconds: float) -> float:
        """Seconds of audio :meth:`embed` will make, for the progress bar."""
        lead = (FIRST_EMBEDDING_END + (FRAMES - 1) * STEP_SAMPLES) / SAMPLE_RATE + 0.3
        utterances = len(self.takes) * CLIPS_PER_TAKE * (lead + POSITIVE_TAIL) + len(self.misses) * (lead + NEAR_MISS_TAIL)
        return utterances + stream_seconds + sum(len(r) for r in self.recordings) / SAMPLE_RATE

    def embed(
        self, features: AudioFeatures, stream_seconds: float, seed: Sequence[int], pool: Executor, progress: Progress
    ) -> SideFeatures:
        """Augment every source into clips and streams and compute their embeddings:
        CLIPS_PER_TAKE clips per phrase take, one per near miss, ``stream_seconds``
        of speech and noise streams, and the recordings as they are. Each job has
        its own random generator, so the result does not depend on thread timing."""
        backgrounds = Backgrounds(self.speech, self.recordings)

        def utterance(number: int, take: np.ndarray, tail: float) -> Utterance:
            clip, end = utterance_clip(take, tail, backgrounds, np.random.default_rng([*seed, number]))
            return Utterance(features.clip_embeddings(clip), end)

        def stream(number: int, speech: bool) -> np.ndarray:
            rng = np.random.default_rng([*seed, number])
            if speech:
                return features.clip_embeddings(speech_stream(self.speech, STREAM_PIECE_SECONDS, backgrounds, rng))
            return features.clip_embeddings(noise_stream(STREAM_PIECE_SECONDS, backgrounds, rng))

        clips = [(take, POSITIVE_TAIL) for take in self.takes for _ in range(CLIPS_PER_TAKE)]
        clips += [(take, NEAR_MISS_TAIL) for take in self.misses]
        pieces = max(1, round(stream_seconds / STREAM_PIECE_SECONDS))
        chunk = STREAM_PIECE_SECONDS * SAMPLE_RATE
        chunks = [r[i : i + chunk] for r in self.recordings for i in range(0, len(r), chunk) if len(r) - i >= FIRST_EMBEDDING_END * 2]
        utterances = run_jobs(
            pool,
            [lambda n=n, take=take, tail=tail: utterance(n, take, tail) for n, (take, tail) in enumerate(clips)],
            progress,
            lambda u: audio_seconds(u.embeddings),
        )
        streams = run_jobs(
            pool,
            [lambda n=n: stream(len(clips) + n, n < pieces * SPEECH_SHARE) for n in range(pieces)]
            + [lambda c=c: features.clip_embeddings(c) for c in chunks],
            progress,
            audio_seconds,
        )
        positives = len(self.takes) * CLIPS_PER_TAKE
        return SideFeatures(utterances[:positives], utterances[positives:], streams)


# --- the classifier --------------------------------------------------------------------


@dataclass
class Network:
    """Flatten(16x96) → standardize → dense(64) → ReLU → dense(1) → sigmoid."""

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @property
    def parameters(self) -> list[np.ndarray]:
        return [self.w1, self.b1, self.w2, self.b2]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Standardized input, hidden activations, output logits."""
        standardized = (x - self.mean) / self.scale
        hidden = np.maximum(standardized @ self.w1 + self.b1, 0.0)
        return standardized, hidden, (hidden @ self.w2 + self.b2).reshape(-1)

    def gradients(self, x: np.ndarray, target: np.ndarray, weight: np.ndarray) -> list[np.ndarray]:
        """Backpropagation of the weighted mean binary cross-entropy."""
        standardized, hidden, logits = self.forward(x)
        probability = 1 / (1 + np.exp(-np.clip(logits, -30, 30)))
        d_logit = ((probability - target) * weight / len(target)).astype(np.float32)[:, None]
        d_hidden = (d_logit @ self.w2.T) * (hidden > 0)
        return [standardized.T @ d_hidden, d_hidden.sum(axis=0), hidden.T @ d_logit, d_logit.sum(axis=0)]


def new_network(windows: WindowSet, rng: np.random.Generator) -> Network:
    """He-initialized, standardizing each embedding dimension by its spread."""
    inputs = FRAMES * EMBEDDING_DIM
    return Network(
        mean=np.tile(windows.pool.mean(axis=0), FRAMES).astype(np.float32),
        scale=np.tile(windows.pool.std(axis=0) + 1e-3, FRAMES).astype(np.float32),
        w1=(rng.standard_normal((inputs, HIDDEN_UNITS)) * math.sqrt(2 / inputs)).astype(np.float32),
        b1=np.zeros(HIDDEN_UNITS, dtype=np.float32),
        w2=(rng.standard_normal((HIDDEN_UNITS, 1)) * math.sqrt(1 / HIDDEN_UNITS)).astype(np.float32),
        b2=np.zeros(1, dtype=np.float32),
    )


def fit(windows: WindowSet, rng: np.random.Generator, progress: Progress) -> Network:
    """Weighted cross-entropy (both classes count the same), Adam with a cosine
    schedule and weight decay, and mixup on half of each batch: blends of a
    positive and a negative are half positive, which keeps the scores of inputs
    unlike any training example from jumping to 1."""
    net = new_network(windows, rng)
    labels = windows.labels
    weight = np.where(labels > 0.5, 0.5 / labels.mean(), 0.5 / (1 - labels.mean())).astype(np.float32)
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in net.parameters]
    batches = math.ceil(len(labels) / BATCH)
    progress.stage("training", EPOCHS * batches)
    step = 0
    for _ in range(EPOCHS):
        for index in np.array_split(rng.permutation(len(labels)), batches):
            step += 1
            x, target, w = mixup(windows.inputs(index), labels[index], weight[index], rng)
            rate = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / (EPOCHS * batches)))
            for param, grad, (m, v) in zip(net.parameters, net.gradients(x, target, w), moments):
                grad = grad + 1e-4 * param
                m += 0.1 * (grad - m)
                v += 0.001 * (grad**2 - v)
                param -= rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
            progress.advance()
    return net


def mixup(x: np.ndarray, target: np.ndarray, weight: np.ndarray, rng: np.random.Generator):
    """Half the batch blended with random partners, Beta(0.4, 0.4) proportions."""
    share = np.where(rng.random(len(x)) < 0.5, rng.beta(0.4, 0.4, len(x)), 1.0).astype(np.float32)
    partner = rng.permutation(len(x))

    def blend(a: np.ndarray) -> np.ndarray:
        s = share.reshape(-1, *([1] * (a.ndim - 1)))
        return s * a + (1 - s) * a[partner]

    return blend(x), blend(target), blend(weight)


def export_onnx(net: Network, path: Path, metadata: dict[str, str]) -> None:
    """openWakeWord's signature: float [batch, 16, 96] → float [batch, 1]. The input
    standardization is folded into the first layer, so the graph is two Gemms."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1 = (net.w1 / net.scale[:, None]).astype(np.float32)
    b1 = (net.b1 - (net.mean / net.scale) @ net.w1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["embeddings"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "w1", "b1"], ["dense"]),
            helper.make_node("Relu", ["dense"], ["hidden"]),
            helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["score"]),
        ],
        "wake_word",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", FRAMES, EMBEDDING_DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(net.w2.astype(np.float32), "w2"),
            numpy_helper.from_array(net.b2.astype(np.float32), "b2"),
        ],
    )
    # Opset 13 / IR 7: loadable by the onnxruntime versions openWakeWord users have.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edge-assistant")
    model.ir_version = 7
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


# --- held-out evaluation ---------------------------------------------------------------


def peak_scores(model: WakeModel, utterances: Sequence[Utterance], until: float) -> np.ndarray:
    """Each utterance's best score from its last moments to ``until`` s after its
    end: did it fire, as the runtime would have?"""
    peaks = []
    for utterance in utterances:
        offsets = window_offsets(utterance.embeddings, utterance.end)
        windows = windows_of(utterance.embeddings)[(offsets >= QUIET_BEFORE) & (offsets <= until)]
        peaks.append(float(model.score(windows).max()))
    return np.array(peaks)


def count_detections(scores: np.ndarray, threshold: float) -> int:
    """Detections as the runtime counts them: one per refractory period."""
    refractory = int(REFRACTORY_SECONDS * SAMPLE_RATE / STEP_SAMPLES)
    count, allowed = 0, 0
    for step in np.flatnonzero(scores >= threshold):
        if step >= allowed:
            count, allowed = count + 1, step + refractory
    return count


@dataclass(frozen=True)
class Evaluation:
    """Scores of the held-out audio, from the exported model."""

    positive_peaks: np.ndarray
    miss_peaks: np.ndarray
    stream_scores: list[np.ndarray]
    negative_hours: float

    @classmethod
    def of(cls, model: WakeModel, held_out: SideFeatures) -> "Evaluation":
        return cls(
            peak_scores(model, held_out.positives, POSITIVE_TAIL),
            peak_scores(model, held_out.misses, NEAR_MISS_TAIL),
            [model.score(windows_of(embeddings)) for embeddings in held_out.streams],
            held_out.stream_seconds / 3600,
        )

    def recall(self, threshold: float) -> float:
        return float(np.mean(self.positive_peaks >= threshold))

    def near_miss_accepts(self, threshold: float) -> float:
        return float(np.mean(self.miss_peaks >= threshold)) if len(self.miss_peaks) else 0.0

    def false_accepts(self, threshold: float) -> int:
        return sum(count_detections(scores, threshold) for scores in self.stream_scores)

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


# --- the whole job ---------------------------------------------------------------------


def split(items: Sequence[np.ndarray], rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A random HELD_OUT share of the items is kept out of training."""
    order = rng.permutation(len(items))
    cut = max(1, round(len(items) * HELD_OUT))
    return [items[i] for i in order[cut:]], [items[i] for i in order[:cut]]


def split_recordings(recordings: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first part of each recording for training, its end held out."""
    cuts = [int(len(audio) * (1 - HELD_OUT)) for audio in recordings]
    return [a[:c] for a, c in zip(recordings, cuts)], [a[c:] for a, c in zip(recordings, cuts)]


def read_negatives(directory: Path | None) -> list[np.ndarray]:
    """The user's recordings (WAV, FLAC, OGG), all read before any work starts so a
    bad file fails fast, naming itself."""
    if directory is None:
        return []
    if not directory.is_dir():
        raise UsageError(f"--negatives is not a directory: {directory}")
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg"))
    if not paths:
        raise UsageError(f"--negatives directory has no .wav, .flac or .ogg files: {directory}")
    recordings, total = [], 0
    for path in paths:
        samples = read_audio(path).samples
        if total + len(samples) > MAX_USER_NEGATIVE_SECONDS * SAMPLE_RATE:
            log.warning("using the first %d h of --negatives audio", MAX_USER_NEGATIVE_SECONDS // 3600)
            break
        recordings.append(samples)
        total += len(samples)
    return recordings


def train(options: TrainOptions, progress: Progress | None = None) -> TrainResult:
    """Synthesize, augment, train, evaluate on held-out audio, write ``options.out``
    atomically. Every input is checked before the long work starts."""
    started = time.perf_counter()
    progress = progress or Progress()
    phrase = tidy_phrase(options.phrase)
    if not options.minutes > 0:
        raise UsageError(f"--minutes must be more than 0, got {options.minutes}")
    out = check_output_path(options.out)
    if not options.voices:
        raise UsageError("no Piper voice to speak the phrase: give --voice VOICE.onnx")
    rng = np.random.default_rng(options.seed)
    recordings = read_negatives(options.negatives_dir)
    limit = max(1, round(PHRASE_TAKES * options.minutes))
    speakers = load_speakers(options.voices, limit, options.seed)
    check_phrase(phrase, speakers)
    workers = options.workers or min(MAX_WORKERS, os.cpu_count() or 1)
    per_worker = [speakers] + [load_speakers(options.voices, limit, options.seed + k) for k in range(1, workers)]

    with ThreadPoolExecutor(workers) as pool:
        lines = plan_lines(phrase, speakers, options.minutes, rng)
        progress.stage("synthesizing speech", sum(map(len, lines)))
        takes = [synthesize(kind, per_worker, pool, progress) for kind in lines]
        log.info("synthesized %s takes at %.1f s", "/".join(str(len(kind)) for kind in takes), time.perf_counter() - started)
        sources = [split(kind, rng) for kind in takes] + [split_recordings(recordings)]
        training, held_out = (Side(*(pair[side] for pair in sources)) for side in (0, 1))
        features = AudioFeatures()
        seconds = STREAM_SECONDS * options.minutes, HELD_OUT_STREAM_SECONDS * options.minutes
        progress.stage("computing features", training.work(seconds[0]) + held_out.work(seconds[1]))
        windows = training.embed(features, seconds[0], (options.seed, 0), pool, progress).training_set()
        held_features = held_out.embed(features, seconds[1], (options.seed, 1), pool, progress)
    log.info(
        "features at %.1f s: training on %d positive and %d negative windows",
        time.perf_counter() - started, windows.labels.sum(), (windows.labels == 0).sum(),
    )
    net = fit(windows, rng, progress)
    log.info("trained at %.1f s", time.perf_counter() - started)
    progress.close()
    voices = ", ".join(dict.fromkeys(Path(path).stem for path in options.voices))
    return write_model(out, net, phrase, held_features, voices, started)


def write_model(out: Path, net: Network, phrase: str, held_out: SideFeatures, voices: str, started: float) -> TrainResult:
    """Export, score the held-out audio with the exported model through the runtime's
    loader (what is measured is what ships), store the chosen threshold, rename."""
    handle, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(handle)
    temp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    temp.chmod(0o666 & ~umask)  # mkstemp's 0600 would hide the model from the daemon's user
    try:
        export_onnx(net, temp, {META_PHRASE: phrase})
        evaluation = Evaluation.of(load_wake_model(temp), held_out)
        threshold = evaluation.choose_threshold()
        result = TrainResult(
            path=out,
            phrase=phrase,
            threshold=threshold,
            recall=evaluation.recall(threshold),
            positives_held_out=len(evaluation.positive_peaks),
            near_miss_accepts=evaluation.near_miss_accepts(threshold),
            false_accepts=evaluation.false_accepts(threshold),
            negative_hours=evaluation.negative_hours,
            seconds=0.0,
            model_bytes=0,
        )
        export_onnx(net, temp, result.metadata(voices))
        os.replace(temp, out)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return replace(result, model_bytes=out.stat().st_size, seconds=time.perf_counter() - started)
