"""The reply's language, sentence by sentence, and the Piper voice that speaks it.

Each sentence of a reply is identified from its text (py3langid, a Naive Bayes
model over byte n-grams that ships inside its PyPI package, restricted to the
languages we have phrase tables and manifest voices for) just before Piper
speaks it:

- a sentence in a configured language (``tts.language`` or a key of
  ``[tts.voices]``) goes to that language's voice;
- one in another language goes to the default voice;
- a short or ambiguous sentence ("OK.", a name, "Danke.") keeps the language
  of the sentence before it, so a reply does not hop between voices.

Voices load on first use and stay loaded (each costs about what the default
voice costs: README "Languages"). The language of the last sentence spoken is
the conversation's (:func:`current`): the assistant's own phrases use it
(:mod:`edge_assistant.phrases`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .phrases import ENGLISH, LANGUAGES

log = logging.getLogger(__name__)

# Below this many words a sentence changes the language only when the identifier
# is nearly sure ("Danke schön." is German at 0.93, "OK." anything at 0.11).
SHORT_WORDS = 3
SHORT_CONFIDENCE = 0.9
# A longer sentence whose best language has less probability than this is ambiguous.
MIN_CONFIDENCE = 0.5

_current = ENGLISH
_current_lock = threading.Lock()


def current() -> str:
    """The conversation's language: that of the last sentence spoken."""
    with _current_lock:
        return _current


def set_current(language: str) -> None:
    global _current
    with _current_lock:
        _current = language


class LanguageIdentifier:
    """py3langid's model, restricted to ``languages``; :meth:`identify` gives the
    most probable one and its probability (normalised over those languages)."""

    def __init__(self, languages: tuple[str, ...] = LANGUAGES) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier as Model

        self.languages = languages
        self._model = Model.from_model_file(MODEL_FILE, norm_probs=True)
        self._model.set_languages(list(languages))
        self._model._full_model = None  # the other 88 languages' columns: 40 MB we never use
        self._lock = threading.Lock()

    def identify(self, text: str) -> tuple[str, float]:
        with self._lock:
            language, probability = self._model.classify(text)
        return str(language), float(probability)


@dataclass
class SentenceLanguage:
    """The rule that picks one sentence's language (module docstring)."""

    identifier: LanguageIdentifier
    configured: frozenset[str]
    default: str

    def choose(self, sentence: str, previous: str) -> str:
        words = sum(1 for word in sentence.split() if any(char.isalpha() for char in word))
        if not words:
            return previous
        language, probability = self.identifier.identify(sentence)
        if probability < (SHORT_CONFIDENCE if words < SHORT_WORDS else MIN_CONFIDENCE):
            return previous
        return language if language in self.configured else self.default


@dataclass(frozen=True)
class RoutedSentence:
    language: str
    voice: Path
    text: str


class VoiceRouter:
    """Piper speech that picks a voice per sentence; it stands in for a
    :class:`~edge_assistant.tts.PiperSpeech` (``sample_rate``, ``synthesize``),
    so the streaming speaker, the daemon and the announcements use it unchanged.
    Every voice's audio comes out at the default voice's rate (soxr)."""

    def __init__(
        self,
        default_voice: object,
        default_path: Path,
        default_language: str,
        voices: dict[str, Path],
        load: Callable[[Path], object],
        identifier: LanguageIdentifier | None = None,
    ) -> None:
        """``default_voice``: the loaded default PiperSpeech; ``voices``: the other
        languages' voice files (loaded by ``load`` on first use)."""
        self.default_language = default_language
        self.sample_rate: int = default_voice.sample_rate  # type: ignore[attr-defined]
        self.paths = {default_language: default_path, **voices}
        self._loaded: dict[str, object] = {default_language: default_voice}
        self._load = load
        self._loading = threading.Lock()
        self.routed: list[RoutedSentence] = []  # what went where, for logs and tests
        self.chooser = None
        if voices:
            configured = frozenset(self.paths)
            self.chooser = SentenceLanguage(identifier or LanguageIdentifier(), configured, default_language)
        set_current(default_language)

    @property
    def languages(self) -> list[str]:
        return list(self.paths)

    def synthesize(self, text: str) -> np.ndarray:
        language = self.chooser.choose(text, current()) if self.chooser else self.default_language
        set_current(language)
        voice = self.voice(language)
        self.routed.append(RoutedSentence(language, self.paths[language], text))
        samples = voice.synthesize(text)  # type: ignore[attr-defined]
        rate = voice.sample_rate  # type: ignore[attr-defined]
        if rate != self.sample_rate and len(samples):
            import soxr

            samples = soxr.resample(samples, rate, self.sample_rate).astype(np.float32)
        return samples

    def voice(self, language: str) -> object:
        """The language's voice, loaded now if this is its first sentence."""
        with self._loading:
            if language not in self._loaded:
                started = time.perf_counter()
                self._loaded[language] = self._load(self.paths[language])
                log.info(
                    "voice for %s loaded on first use: %s (%.0f ms)",
                    language, self.paths[language].name, (time.perf_counter() - started) * 1000,
                )
            return self._loaded[language]


def voice_paths(voices: dict[str, str], models_dir: Path | None) -> tuple[dict[str, Path], list[str]]:
    """``[tts.voices]`` as files: a manifest voice by name, else a path. Returns
    the voices found and one line for each missing one, naming the command that
    fetches it (that language is then spoken with the default voice)."""
    from .models.manifest import default_models_dir, human_size, load_manifest, voice_entries

    directory = models_dir or default_models_dir()
    manifest = load_manifest()
    found: dict[str, Path] = {}
    missing: list[str] = []
    for language, value in voices.items():
        path = Path(value).expanduser()
        entries = [] if path.suffix == ".onnx" or len(path.parts) > 1 else voice_entries(manifest, value)
        if entries:
            path = entries[0].path(directory)
        absent = [item for item in (path, Path(f"{path}.json")) if not item.is_file()]
        if not absent:
            found[language] = path
            continue
        if entries:
            command = f"edge-assistant models download --voice {Path(entries[0].filename).stem}"
            if models_dir is not None and models_dir != default_models_dir():
                command += f" --dir {models_dir}"
            size = human_size(sum(entry.size for entry in entries))
            missing.append(
                f"voice for {language} missing: {absent[0]}; fetch it with `{command}` ({size}); "
                f"until then {language} is spoken with the default voice"
            )
        else:
            missing.append(
                f"voice for {language} missing: {absent[0]} (tts.voices.{language} = {value!r}, with its .onnx.json beside it); "
                f"until then {language} is spoken with the default voice"
            )
    return found, missing


def load_voices(config: object, default_path: Path, models_dir: Path | None = None) -> VoiceRouter:
    """The default voice and the configured languages' voices (lazily), as one
    router; a configured voice that is missing is one warning line each."""
    from .tts import PiperSpeech

    tts = config.tts  # type: ignore[attr-defined]
    voices, missing = voice_paths(tts.voices, models_dir)
    for line in missing:
        log.warning("%s", line)
    default_path = voices.pop(tts.language, default_path)  # e.g. en = "en_GB-alba-medium" replaces joe
    default = PiperSpeech(default_path, tts.speaker, tts.length_scale, tts.threads)

    def load(path: Path) -> object:
        return PiperSpeech(path, -1, tts.length_scale, tts.threads)

    return VoiceRouter(default, default_path, tts.language, voices, load)


def describe(config: object, models_dir: Path | None = None) -> str:
    """The languages and voices in effect, one line each (``tools list``)."""
    tts = config.tts  # type: ignore[attr-defined]
    voices, missing = voice_paths(tts.voices, models_dir)
    default = voices.pop(tts.language, None) or config.models.voice or "the manifest's default voice"  # type: ignore[attr-defined]
    lines = [f"languages: {', '.join([tts.language, *voices])} (replies in others are spoken by the {tts.language} voice)"]
    lines.append(f"  {tts.language}: {default} (default)")
    lines += [f"  {language}: {path}" for language, path in voices.items()]
    lines += [f"  {line}" for line in missing]
    return "\n".join(lines)


__all__ = [
    "LanguageIdentifier", "SentenceLanguage", "VoiceRouter", "current", "describe",
    "load_voices", "set_current", "voice_paths",
]
