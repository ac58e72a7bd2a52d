"""What plays in a living room, for the benchmarks (bench_endpoint.py,
bench_wake_room.py): a television talking (Piper reading varied text at several
speeds and levels, with short gaps, from across the room) and music (chords and
drums). Made here, never downloaded.

The television's text is English prose that every Python installation carries:
the language reference (``pydoc_data.topics``) and the standard library's
docstrings, cut into sentences (wake word training reads none of it). Speech
is synthesized once and cached in ``$EDGE_ASSISTANT_ROOM_CACHE`` (default
``~/.cache/edge-assistant/room/``) as int16 at 16 kHz, keyed by the text, the
voice and the settings, so the second run costs no synthesis. Piper speaks
with its random noise, so a fresh cache is another take of the same text.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import sysconfig
from pathlib import Path

import numpy as np

from edge_assistant.atomic import atomic_path
from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.wake.augment import band, normalize, reverberate

SPEEDS = (0.8, 1.0, 1.25)  # Piper length_scale: a fast, a plain and a slow reader
TV_LEVELS_DB = (-45.0, -25.0)  # per sentence, uniform: near and far televisions, loud and soft voices
GAP_SECONDS = (0.08, 0.7)  # a news reader's pauses between sentences
SENTENCE = re.compile(r"[A-Z][A-Za-z ,;'-]+[.?!]")
MIN_WORDS, MAX_WORDS = 5, 30


def cache_dir() -> Path:
    env = os.environ.get("EDGE_ASSISTANT_ROOM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edge-assistant" / "room"


def prose_sentences() -> list[str]:
    """Every plain-English sentence of 5 to 30 words in Python's own
    documentation: the language reference, then the standard library's module,
    class and function docstrings (read with ast, nothing imported)."""
    import pydoc_data.topics

    texts = list(pydoc_data.topics.topics.values())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parent.name or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                texts.append(ast.get_docstring(node) or "")
    seen, sentences = set(), []
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
            if SENTENCE.fullmatch(sentence) and MIN_WORDS <= len(sentence.split()) <= MAX_WORDS and sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
    return sentences


def television(voice_path: Path, seconds: float, seed: int = 0) -> np.ndarray:
    """At least ``seconds`` of a television talking, 16 kHz float32: sentences in
    a shuffled order, each at one of SPEEDS and its own level within TV_LEVELS_DB,
    reverberated as a voice from across a room, with short gaps. Cached."""
    rng = np.random.default_rng(seed)
    sentences = prose_sentences()
    order = rng.permutation(len(sentences))
    key = hashlib.sha256(
        f"{seconds}|{seed}|{voice_path.name}|{voice_path.stat().st_size}|{SPEEDS}|{TV_LEVELS_DB}|{GAP_SECONDS}".encode()
    )
    key.update("\n".join(sentences).encode())
    path = cache_dir() / f"tv-{key.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path).astype(np.float32) / 32767.0
    from edge_assistant.tts import PiperSpeech

    voices = [PiperSpeech(voice_path, length_scale=speed, threads=1) for speed in SPEEDS]
    parts, total, target = [], 0, int(seconds * MODEL_SAMPLE_RATE)
    for number, index in enumerate(order):
        if total >= target:
            break
        spoken = voices[number % len(voices)].synthesize_16k(sentences[index]).samples
        if not len(spoken):
            continue
        level = 10 ** (rng.uniform(*TV_LEVELS_DB) / 20)
        spoken = reverberate(normalize(spoken), rng) * level
        gap = np.zeros(int(rng.uniform(*GAP_SECONDS) * MODEL_SAMPLE_RATE), np.float32)
        parts += [spoken, gap]
        total += len(spoken) + len(gap)
        if number % 100 == 0:
            print(f"room_audio: television {total / MODEL_SAMPLE_RATE / 60:.1f} of {seconds / 60:.1f} min", flush=True)
    if total < target:
        raise SystemExit(f"room_audio: only {total / MODEL_SAMPLE_RATE:.0f} s of text for {seconds:.0f} s of television")
    audio = np.concatenate(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        with open(temp, "wb") as file:
            np.save(file, (np.clip(audio, -1, 1) * 32767).astype(np.int16))
    return audio.astype(np.float32)


def questions(voice_path: Path, texts: tuple[str, ...]) -> list[np.ndarray]:
    """Each text at each of SPEEDS (text-major), Piper without its random noise so
    every run hears the same questions, 16 kHz float32. Cached."""
    key = hashlib.sha256(f"{texts}|{SPEEDS}|{voice_path.name}|{voice_path.stat().st_size}".encode())
    path = cache_dir() / f"questions-{key.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return [stored[f"q{k}"] for k in range(len(texts) * len(SPEEDS))]
    from edge_assistant.tts import PiperSpeech

    voices = [PiperSpeech(voice_path, length_scale=speed, threads=1, noise=False) for speed in SPEEDS]
    spoken = [voice.synthesize_16k(text).samples for text in texts for voice in voices]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        with open(temp, "wb") as file:
            np.savez(file, **{f"q{k}": samples for k, samples in enumerate(spoken)})
    return spoken


def music(seconds: float, seed: int = 0) -> np.ndarray:
    """``seconds`` of music-like audio (:func:`edge_assistant.wake.augment.band`:
    chords and drums), a new piece every 20 to 60 s at its own level (TV_LEVELS_DB)."""
    rng = np.random.default_rng(seed)
    parts, total, target = [], 0, int(seconds * MODEL_SAMPLE_RATE)
    while total < target:
        n = min(int(rng.uniform(20, 60) * MODEL_SAMPLE_RATE), target - total)
        parts.append(band(n, rng) * 10 ** (rng.uniform(*TV_LEVELS_DB) / 20))
        total += n
    return np.concatenate(parts).astype(np.float32)

