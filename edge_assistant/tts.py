"""Piper speech, sentence by sentence, on a worker thread.

The model writes the reply a token at a time; :class:`StreamingSpeaker` takes each
finished sentence and synthesizes and plays it while the model keeps writing, so
the first words are heard long before the reply is complete.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio.files import to_model_rate
from .audio.format import Audio
from .audio.playback import Playback
from .errors import ModelFileError
from .onnx_session import open_session

log = logging.getLogger(__name__)

# Piper phonemizes with espeak-ng, whose state is global to the process: one
# synthesis at a time, whichever voice, room or announcement asks (with rooms,
# one room's reply and another's timer can be spoken at once).
_SYNTHESIZING = threading.Lock()


class PiperSpeech:
    """A loaded Piper voice. ``noise`` off removes the generator's randomness, so
    the same text is the same audio every time (tests that score speech)."""

    def __init__(
        self, voice_path: Path, speaker: int = -1, length_scale: float = 1.0, threads: int = 1, noise: bool = True
    ) -> None:
        from piper import SynthesisConfig

        config_path = Path(f"{voice_path}.json")
        if not voice_path.is_file():
            raise ModelFileError(f"Piper voice not found: {voice_path}; fetch it with: edge-assistant models download")
        if not config_path.is_file():
            raise ModelFileError(f"Piper voice config not found: {config_path} (it must sit next to the .onnx file)")
        try:
            self.voice = _load_voice(voice_path, config_path, threads)
        except (json.JSONDecodeError, KeyError) as error:
            raise ModelFileError(f"invalid Piper voice config {config_path}: {error}") from None
        speakers = self.voice.config.num_speakers
        if speaker >= speakers:
            raise ModelFileError(f"voice {voice_path.name} has {speakers} speaker(s); tts.speaker = {speaker} is out of range")
        self.sample_rate = self.voice.config.sample_rate
        self._synthesis = SynthesisConfig(
            speaker_id=speaker if speaker >= 0 else None, length_scale=length_scale,
            noise_scale=None if noise else 0.0, noise_w_scale=None if noise else 0.0,
        )

    def synthesize(self, text: str) -> np.ndarray:
        """float32 samples at :attr:`sample_rate`."""
        with _SYNTHESIZING:
            chunks = [chunk.audio_float_array for chunk in self.voice.synthesize(text, syn_config=self._synthesis)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    def synthesize_16k(self, text: str) -> Audio:
        """``text`` spoken as 16 kHz mono, the input's format: the questions that
        tests and benchmarks put to the assistant."""
        return to_model_rate(Audio(self.synthesize(text), self.sample_rate))


def _load_voice(voice_path: Path, config_path: Path, threads: int):  # noqa: ANN202 - piper.PiperVoice
    """PiperVoice.load with our own onnxruntime session (onnx_session): synthesis
    runs while the reply is still being generated, beside llama.cpp."""
    from piper import PiperVoice
    from piper.config import PiperConfig

    config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    session = open_session(voice_path, "Piper voice", threads, memory_arena=False)
    return PiperVoice(config=config, session=session)


@dataclass
class SpeechStats:
    sentences: int = 0
    audio_seconds: float = 0.0
    first_audio_at: float | None = None  # perf_counter() when the first samples reached the playback
    synth_ms: float = 0.0


@dataclass(frozen=True)
class SpokenSentence:
    """Where one sentence went: its samples in the sink, and its span of the raw
    reply text: where its visible text began and how much had been generated
    when it was handed over (hidden text, such as a tool call, lies before it)."""

    reply_chars: int
    start: int
    end: int
    reply_start: int = 0


class StreamingSpeaker:
    """Sentences in (:meth:`say`), audio out to a playback, on one worker thread."""

    _DONE = object()

    def __init__(self, speech: PiperSpeech, playback: Playback) -> None:
        self.speech = speech
        self.playback = playback
        self.stats = SpeechStats()
        self.spoken: list[SpokenSentence] = []
        self._queue: queue.Queue[object] = queue.Queue()
        self._error: BaseException | None = None
        self._cancelled = threading.Event()
        self._writing = threading.Lock()  # cancel() waits out a write in progress, never a synthesis
        self._thread = threading.Thread(target=self._run, name="tts", daemon=True)
        self._thread.start()

    def say(self, sentence: str, reply_chars: int = 0, reply_start: int = 0) -> None:
        """Queue a sentence; ``reply_chars``: the raw reply's length when it was
        complete, ``reply_start``: where in the raw reply its visible text began
        (see :meth:`heard_reply_chars`)."""
        self._queue.put((sentence, reply_chars, reply_start))

    def heard_reply_chars(self, playhead: int) -> int:
        """How much of the raw reply text the sink had played at ``playhead``:
        every sentence played to its end, and the played share of the one cut
        short, spread over its visible text only (never over a hidden call
        before it). After a barge-in, this much of the reply stays in the history."""
        with self._writing:
            heard = 0
            for sentence in self.spoken:
                if playhead >= sentence.end:
                    heard = sentence.reply_chars
                    continue
                if playhead > sentence.start:
                    share = (playhead - sentence.start) / (sentence.end - sentence.start)
                    begin = min(max(heard, sentence.reply_start), sentence.reply_chars)
                    heard = begin + int((sentence.reply_chars - begin) * share)
                break
            return heard

    def cancel(self) -> None:
        """Drop the sentences not yet spoken (barge-in). Once it returns nothing
        more reaches the playback, so a playback stopped after it stays silent."""
        with self._writing:
            self._cancelled.set()

    def finish(self) -> SpeechStats:
        """Wait until everything queued has been spoken; re-raise a worker error."""
        self._queue.put(self._DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.stats

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if self._error is not None or self._cancelled.is_set():
                continue  # drain: an error is reported by finish()
            try:
                self._speak(*item)  # type: ignore[misc]
            except BaseException as error:  # handed to the caller's thread
                self._error = error

    def _speak(self, sentence: str, reply_chars: int, reply_start: int) -> None:
        started = time.perf_counter()
        samples = self.speech.synthesize(sentence)
        self.stats.synth_ms += (time.perf_counter() - started) * 1000
        with self._writing:
            if not len(samples) or self._cancelled.is_set():
                return
            if self.stats.first_audio_at is None:
                self.stats.first_audio_at = time.perf_counter()
            log.debug("speaking %.2f s: %s", len(samples) / self.speech.sample_rate, sentence)
            self.stats.sentences += 1
            self.stats.audio_seconds += len(samples) / self.speech.sample_rate
            start = self.playback.written
            self.playback.write(samples, self.speech.sample_rate)
            self.spoken.append(SpokenSentence(reply_chars, start, self.playback.written, reply_start))
