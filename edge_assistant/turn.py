"""One spoken turn: prepared audio → engine → filtered text → streamed speech.

``edge-assistant --once`` runs exactly one of these; the daemon runs one per
utterance with the same engine and speaker, so there is one turn code path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from .audio_io import MODEL_SAMPLE_RATE, Audio
from .config import AudioConfig
from .engine import MAX_CLIP_SECONDS, TurnReply
from .errors import AudioInputError
from .reply_text import HiddenBlockFilter, SentenceSplitter
from .tts import StreamingSpeaker
from .vad import trim_to_speech

log = logging.getLogger(__name__)


def prepare_audio(audio: Audio, settings: AudioConfig) -> Audio:
    """Trim to the speech and apply the long-audio policy.

    Raises :class:`NoSpeechError` when there is no speech, so the model is never
    called for silence.
    """
    speech = trim_to_speech(audio, settings.vad_aggressiveness, settings.speech_padding_ms)
    if speech.seconds > MAX_CLIP_SECONDS and settings.long_audio == "keep_last":
        log.warning(
            "speech is %.1f s, Gemma 4 takes %d s per clip: keeping the last %d s (audio.long_audio = keep_last)",
            speech.seconds, MAX_CLIP_SECONDS, MAX_CLIP_SECONDS,
        )
        return Audio(speech.samples[-MAX_CLIP_SECONDS * MODEL_SAMPLE_RATE :], speech.sample_rate)
    if speech.seconds > settings.max_seconds:
        raise AudioInputError(
            f"speech is {speech.seconds:.1f} s long, more than audio.max_seconds = {settings.max_seconds:g}; "
            "shorten it or set audio.long_audio = \"keep_last\""
        )
    if speech.seconds > MAX_CLIP_SECONDS:
        log.info("speech is %.1f s: sent as consecutive %d s clips", speech.seconds, MAX_CLIP_SECONDS)
    return speech


class Responder(Protocol):
    """What a turn needs from the model stage (GemmaEngine, or a fake in tests)."""

    def respond(self, samples: np.ndarray, on_text: Callable[[str], None] | None = None) -> TurnReply: ...


@dataclass
class TurnResult:
    reply: str
    audio_seconds: float  # speech sent to the model, after trimming
    tokens: dict[str, int]
    timings_ms: dict[str, float]
    stopped_by: str
    spoken_seconds: float = 0.0
    sentences: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reply": self.reply,
            "audio_seconds": round(self.audio_seconds, 3),
            "tokens": self.tokens,
            "timings_ms": {name: round(value, 1) for name, value in self.timings_ms.items()},
            "stopped_by": self.stopped_by,
            "spoken_seconds": round(self.spoken_seconds, 3),
        }


def run_turn(engine: Responder, speech: Audio, speaker: StreamingSpeaker | None, started: float) -> TurnResult:
    """Send prepared speech to the engine and speak the reply as it streams.

    ``started`` is the ``perf_counter()`` at which this turn's clock began (the
    end of the user's speech); stage timings are measured from it.
    """
    hidden = HiddenBlockFilter()
    splitter = SentenceSplitter()
    sentences: list[str] = []

    def hand_over(sentence_list: list[str]) -> None:
        for sentence in sentence_list:
            sentences.append(sentence)
            if speaker is not None:
                speaker.say(sentence)

    engine_started = time.perf_counter()
    reply = engine.respond(speech.samples, on_text=lambda piece: hand_over(splitter.feed(hidden.feed(piece))))
    hand_over(splitter.feed(hidden.flush()) + splitter.flush())
    engine_done = time.perf_counter()
    speech_stats = speaker.finish() if speaker is not None else None
    finished = time.perf_counter()

    stats = reply.stats
    offset_ms = (engine_started - started) * 1000
    timings = {
        "audio_prep": offset_ms,
        "encode": stats.encode_ms,
        "prefill": stats.prefill_ms,
        "first_token": offset_ms + stats.first_token_ms,
        "decode": stats.decode_ms,
        "generate_total": (engine_done - started) * 1000,
    }
    if speech_stats is not None and speech_stats.first_audio_at is not None:
        timings["tts_first_audio"] = (speech_stats.first_audio_at - started) * 1000
    timings["turn_total"] = (finished - started) * 1000
    log.info(
        "turn: %.1f s audio, %d audio + %d prompt tokens, %d generated, %d evaluated; "
        "encode %.0f ms, prefill %.0f ms, first token %.0f ms, first audio %s ms",
        speech.seconds, stats.audio_tokens, stats.prompt_tokens, stats.generated_tokens,
        stats.evaluated_this_turn, stats.encode_ms, stats.prefill_ms, timings["first_token"],
        f"{timings['tts_first_audio']:.0f}" if "tts_first_audio" in timings else "-",
    )
    return TurnResult(
        reply=" ".join(sentences),
        audio_seconds=speech.seconds,
        tokens={
            "prompt": stats.prompt_tokens,
            "audio": stats.audio_tokens,
            "generated": stats.generated_tokens,
            "evaluated_this_turn": stats.evaluated_this_turn,
            "after_speech_end": stats.after_speech_end,
            "context": stats.context_tokens,
        },
        timings_ms=timings,
        stopped_by=stats.stopped_by,
        spoken_seconds=speech_stats.audio_seconds if speech_stats else 0.0,
        sentences=sentences,
    )
