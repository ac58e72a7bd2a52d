"""One spoken turn: prepared audio → engine → filtered text → streamed speech.

``edge-assistant --once`` runs exactly one of these; the daemon runs one per
utterance with the same engine and speaker, so there is one turn code path. The
daemon hands over a :class:`SpeechStream` as soon as speech starts, so the
question is evaluated while it is still being spoken.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from .audio.format import MODEL_SAMPLE_RATE, Audio
from .config import AudioConfig
from .errors import AudioInputError
from .llm.audio_turn import CLIP_SAMPLES, MAX_CLIP_SECONDS, Interruption, TurnCancelled, TurnReply, TurnStats
from .llm.clip_encoder import final_blocks, samples_for_blocks
from .llm.reply_text import HiddenBlockFilter, SentenceSplitter
from .llm.tool_loop import ToolUse, generate_with_tools
from .phrases import say
from .tools import ToolCallRecord
from .tts import StreamingSpeaker
from .vad import SILENT_DB, trim_to_speech

log = logging.getLogger(__name__)


def prepare_audio(audio: Audio, settings: AudioConfig, min_speech_ms: int, min_level_dbfs: float = SILENT_DB) -> Audio:
    """Trim to the speech (quieter than ``min_level_dbfs`` is none: the
    endpoint's gate) and apply the long-audio policy.

    Raises :class:`NoSpeechError` when there is no speech, so the model is never
    called for silence.
    """
    speech = trim_to_speech(audio, settings.vad_aggressiveness, min_speech_ms, settings.speech_padding_ms, min_level_dbfs)
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

    def respond(
        self,
        samples: np.ndarray,
        on_text: Callable[[str], None] | None = None,
        tools: ToolUse | None = None,
        interruption: Interruption | None = None,
    ) -> TurnReply: ...


# Spoken when a tool call was refused or failed and the model said nothing (in
# the conversation's language: phrases.TABLES).
TOOL_APOLOGY = "Sorry, I couldn't do that."

# A streamed question is fed to the engine a step each time two more encoder blocks
# (0.96 s) are final. Each token is encoded once whatever the step, but a step has
# a fixed cost: the encoder reads its 0.6 GB of F16 weights again and llama.cpp
# the model's (about 75 and 90 ms in the daemon on the full-size twin, 2-core
# AVX-512, against 5 and 22 ms per token), so smaller steps cost more work and
# larger ones leave more to do when the speaker stops. A worker that lags takes
# everything heard since its last step, so its steps grow with its lag; when the
# speaker pauses it takes all it has and ends the audio there in one pass.
STEP_BLOCKS = 2
FIRST_STEP_SAMPLES = samples_for_blocks(STEP_BLOCKS)


def next_step_end(taken: int, blocks: int = STEP_BLOCKS) -> int:
    """How much of the utterance the next step waits for, after ``taken`` samples:
    ``blocks`` more encoder blocks final in the 30 s clip being heard."""
    clip_start = taken // CLIP_SAMPLES * CLIP_SAMPLES
    return clip_start + samples_for_blocks(final_blocks(taken - clip_start) + blocks)


class SpeechStream:
    """One utterance's audio while it is heard: the audio loop appends and ends or
    discards it without ever waiting; the turn worker takes it in steps.

    While the speaker pauses, the audio loop says where the utterance would end
    (:meth:`pause`); the worker ends the audio there early and answers ahead
    until the pause is decided (:meth:`pause_outcome`), so that when the endpoint
    confirms it the reply has begun, and if the speaker goes on it reopens the
    audio and feeds on.
    """

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds  # the longest it can become (for the context check)
        self._condition = threading.Condition()
        self._parts: list[np.ndarray] = []
        self._pending = 0  # samples appended, not yet taken
        self._taken = 0
        self._keep: int | None = None  # set when the utterance ended: its length
        self._pause_keep: int | None = None  # while the speaker pauses: its length if the pause lasts
        self._discarded = False
        self._waiting = False  # the worker waits for more audio, or for the pause's outcome
        self._ahead = False  # the worker generates the reply in the pause, before the endpoint
        self._on_end: Callable[[], None] | None = None
        self._on_discard: Callable[[], None] | None = None
        self.ended_at: float | None = None  # perf_counter() when the speech ended
        self.samples = np.zeros(0, dtype=np.float32)  # all of it, once ended

    def append(self, samples: np.ndarray) -> None:
        with self._condition:
            if self._keep is None and not self._discarded:
                self._parts.append(np.asarray(samples, dtype=np.float32))
                self._pending += len(samples)
                self._condition.notify_all()

    def end(self, keep_samples: int) -> None:
        """The utterance is the first ``keep_samples`` appended (the endpointer trims
        the silence after the last word)."""
        with self._condition:
            self.ended_at = time.perf_counter()
            self._keep = keep_samples
            on_end = self._on_end
            self._condition.notify_all()
        if on_end is not None:
            on_end()

    def when_ended(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` the moment the utterance ends (now if it has), from the
        thread that ends it: how the turn counts what it evaluates afterwards."""
        with self._condition:
            ended = self._keep is not None
            if not ended:
                self._on_end = callback
        if ended:
            callback()

    def pause(self, keep_samples: int) -> None:
        """The speaker paused: if the silence lasts, the utterance is the first
        ``keep_samples`` appended. Feeding catches up now, then ends early."""
        with self._condition:
            if self._pause_keep != keep_samples:
                self._pause_keep = keep_samples
                self._condition.notify_all()

    def resume(self) -> None:
        """The speaker went on after a pause."""
        with self._condition:
            if self._pause_keep is not None:
                self._pause_keep = None
                self._condition.notify_all()

    def discard(self) -> None:
        """Not a question after all (a cough, a reset): the turn is dropped, and
        its cancel (:meth:`when_discarded`) stops the step in flight."""
        with self._condition:
            self._discarded = True
            on_discard = self._on_discard
            self._condition.notify_all()
        if on_discard is not None:
            on_discard()

    def when_discarded(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the stream is discarded (now if it was)."""
        with self._condition:
            discarded = self._discarded
            self._on_discard = callback
        if discarded:
            callback()

    @property
    def open(self) -> bool:
        with self._condition:
            return self._keep is None and not self._discarded

    def taken(self, timeout: float) -> bool:
        """For file input, where input time is not wall time: wait up to ``timeout``
        seconds for the worker to have fed every step the audio so far allows, or
        to wait on a pause's outcome or answer ahead in it (so runs are
        reproducible); True once it has."""
        with self._condition:
            return self._condition.wait_for(
                lambda: self._discarded or self._keep is not None or self.ahead
                or (self._waiting and self._pending < self._due()),
                timeout,
            )

    def _due(self) -> int:
        if self._pause_keep is not None:
            return 1 if self._pause_keep > self._taken else self._pending + 1  # all heard, or nothing more
        return next_step_end(self._taken) - self._taken

    def next_step(self) -> tuple[np.ndarray, bool]:
        """(audio to feed, whether the utterance has ended); blocks until a step is
        due. Raises :class:`TurnCancelled` when the stream was discarded."""
        with self._condition:
            while True:
                if self._discarded:
                    raise TurnCancelled()
                if self._keep is not None or self._pending >= self._due() or self.pause_end() is not None:
                    break
                self._wait()
            step = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.float32)
            self._parts, self._pending = [step], 0  # kept whole: ``samples`` is the utterance
            new = step[self._taken :]
            self._taken = len(step)
            ended = self._keep is not None
            if ended:
                self.samples = step[: self._keep]
            return new, ended

    def pause_end(self) -> int | None:
        """Where the utterance ends if the current pause lasts, once the worker has
        taken that much audio; None while the speaker speaks."""
        with self._condition:
            if self._keep is None and self._pause_keep is not None and self._pause_keep <= self._taken:
                return self._pause_keep
            return None

    def pause_outcome(self, keep_samples: int) -> bool | None:
        """After ending the audio early at ``keep_samples``: True when the
        utterance ended there; False when the speaker went on or the end moved
        (reopen the audio and feed on); None while the pause is undecided."""
        with self._condition:
            if self._discarded:
                raise TurnCancelled()
            if self._keep is not None:
                if self._keep != keep_samples:
                    return False
                self._parts, self._pending = [np.concatenate(self._parts)], 0
                self._taken = len(self._parts[0])
                self.samples = self._parts[0][: self._keep]
                return True
            return None if self._pause_keep == keep_samples else False

    def await_end(self, keep_samples: int) -> bool:
        """:meth:`pause_outcome`, waiting until the pause is decided."""
        with self._condition:
            while (outcome := self.pause_outcome(keep_samples)) is None:
                self._wait()
            return outcome

    @contextmanager
    def answering_ahead(self) -> Iterator[None]:
        """While the worker generates the reply ahead of the endpoint, in the
        pause: file input lets the pause last its real length then."""
        with self._condition:
            self._ahead = True
            self._condition.notify_all()
        try:
            yield
        finally:
            with self._condition:
                self._ahead = False

    @property
    def ahead(self) -> bool:
        """The worker answers ahead in a pause that is still undecided."""
        return self._ahead and self._pause_keep is not None and self._keep is None

    def _wait(self) -> None:
        self._waiting = True
        self._condition.notify_all()
        self._condition.wait()
        self._waiting = False

    @property
    def keep_samples(self) -> int | None:
        return self._keep


class SpeechResumed(Exception):
    """The speaker went on after the pause a reply was generated in."""


class ReplyAhead:
    """A reply generated in the end-of-speech pause, before the endpoint decides:
    its text is held back until the pause proves to be the end, and dropped if
    the speaker goes on. Tools never run before that (they act on the world)."""

    def __init__(
        self, stream: SpeechStream, keep_samples: int, stats: TurnStats, on_text: Callable[[str], None] | None
    ) -> None:
        self._stream = stream
        self._stats = stats
        self._keep = keep_samples
        self._on_text = on_text
        self._held: list[str] = []
        self.confirmed = False

    def on_text(self, piece: str) -> None:
        if self.confirmed:
            self._forward(piece)
        else:
            self._held.append(piece)

    def check(self) -> None:
        """Between tokens: release the held text once the endpoint confirmed the
        pause; raise :class:`SpeechResumed` when the speaker went on."""
        if not self.confirmed:
            self._decided(self._stream.pause_outcome(self._keep))

    def settle(self) -> None:
        """Before tools run or the turn closes: wait for the endpoint's decision."""
        if not self.confirmed:
            self._decided(self._stream.await_end(self._keep))

    def _decided(self, outcome: bool | None) -> None:
        if outcome is False:
            raise SpeechResumed()
        if outcome:
            self.confirmed = True
            self._stats.generated_ahead = self._stats.generated_tokens
            for piece in self._held:
                self._forward(piece)
            self._held = []

    def _forward(self, piece: str) -> None:
        if self._on_text is not None:
            self._on_text(piece)


def respond_streamed(
    engine: Any,
    stream: SpeechStream,
    on_text: Callable[[str], None] | None,
    tools: ToolUse | None = None,
    interruption: Interruption | None = None,
) -> TurnReply:
    """Evaluate a question while it is spoken, then answer it: the same
    :class:`~edge_assistant.llm.audio_turn.AudioTurn` as a whole recording, fed in steps.
    A pause ends the audio early and the reply is generated in it, held back
    until the endpoint confirms the end (:class:`ReplyAhead`); if the speaker
    goes on, the reply and the closing text are rolled back and feeding goes on.
    A discarded or cancelled stream rolls the turn back and reports "cancelled"."""
    try:
        turn = engine.begin_turn(stream.max_seconds, interruption=interruption)
    except TurnCancelled:  # stopped while the text before the audio was evaluated
        return TurnReply("", TurnStats(stopped_by="cancelled"))
    stream.when_ended(turn.note_speech_end)
    text, calls = "", []
    try:
        while True:
            step, ended = stream.next_step()
            pause_end = None if ended else stream.pause_end()
            if len(step):  # a step that ends the audio is encoded once, to the end
                turn.feed(step, evaluate=not ended and pause_end is None)
            if ended:
                turn.end_audio(stream.keep_samples)
                text, calls = generate_with_tools(turn, on_text, stream.ended_at, tools)
                break
            if pause_end is not None:
                turn.end_audio(pause_end, early=True)
                ahead = ReplyAhead(stream, pause_end, turn.stats, on_text)
                try:
                    with stream.answering_ahead():
                        text, calls = generate_with_tools(turn, ahead.on_text, None, tools, ahead)
                        ahead.settle()
                    break
                except SpeechResumed:
                    log.info("the speaker went on after a pause: %d reply tokens begun in it dropped",
                             turn.stats.generated_tokens)
                    turn.reopen_audio()
        if turn.stats.first_token_at and stream.ended_at is not None:  # endpoint → first token, 0 if ahead of it
            turn.stats.first_token_ms = max(0.0, (turn.stats.first_token_at - stream.ended_at) * 1000)
    except TurnCancelled:
        turn.stats.stopped_by = "cancelled"
    except BaseException:
        turn.stats.stopped_by = "failed"  # rolled back: nobody heard a reply
        raise
    finally:
        turn.finish(interruption)
    return TurnReply(text, turn.stats, calls)


@dataclass
class TurnResult:
    reply: str
    audio_seconds: float  # speech sent to the model, after trimming
    tokens: dict[str, int]
    timings_ms: dict[str, float]
    stopped_by: str
    spoken_seconds: float = 0.0
    sentences: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    audio_steps: list[int] = field(default_factory=list)  # audio tokens per encoder pass ([all] when evaluated whole)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reply": self.reply,
            "audio_seconds": round(self.audio_seconds, 3),
            "audio_steps": self.audio_steps,
            "tokens": self.tokens,
            "timings_ms": {name: round(value, 1) for name, value in self.timings_ms.items()},
            "stopped_by": self.stopped_by,
            "spoken_seconds": round(self.spoken_seconds, 3),
            "tool_calls": [record.as_dict() for record in self.tool_calls],
        }


def run_turn(
    engine: Responder,
    speech: Audio | SpeechStream,
    speaker: StreamingSpeaker | None,
    started: float,
    tools: ToolUse | None = None,
    interruption: Interruption | None = None,
) -> TurnResult:
    """Send speech to the engine and speak the reply as it streams; ``tools`` are
    offered to the model (their calls are never spoken); a barge-in sets
    ``interruption`` (the daemon's), which decides what the history keeps.

    ``started`` is the ``perf_counter()`` at which this turn's clock began (the
    end of the user's speech); stage timings are measured from it. A
    :class:`SpeechStream` is evaluated while it is spoken, and its clock starts
    when it ends.
    """
    hidden = HiddenBlockFilter()
    splitter = SentenceSplitter()
    sentences: list[str] = []
    reply_chars = 0  # of the raw reply so far: how a barge-in's cut is counted
    sentence_start: int | None = None  # where in the raw reply the next sentence's visible text began

    def hand_over(sentence_list: list[str]) -> None:
        nonlocal sentence_start
        for sentence in sentence_list:
            sentences.append(sentence)
            if speaker is not None:
                speaker.say(sentence, reply_chars, reply_chars if sentence_start is None else sentence_start)
            sentence_start = None
        if sentence_list and splitter.pending.strip():  # the next sentence has begun in this piece
            sentence_start = reply_chars - len(splitter.pending.lstrip())

    def on_text(piece: str) -> None:
        nonlocal reply_chars, sentence_start
        reply_chars += len(piece)
        visible = hidden.feed(piece)
        if sentence_start is None and visible.strip():  # visible text ends the piece: hidden text came before it
            sentence_start = reply_chars - len(visible.lstrip())
        hand_over(splitter.feed(visible))

    engine_started = time.perf_counter()
    if isinstance(speech, SpeechStream):
        reply = respond_streamed(engine, speech, on_text, tools, interruption)
        started = engine_started = speech.ended_at or time.perf_counter()
        speech = Audio(speech.samples, MODEL_SAMPLE_RATE)
    else:
        reply = engine.respond(speech.samples, on_text=on_text, tools=tools, interruption=interruption)
    hand_over(splitter.feed(hidden.flush()) + splitter.flush())
    if not sentences and any(record.status in ("rejected", "failed") for record in reply.tool_calls):
        hand_over([say("apology")])  # the model said nothing about it: the user still hears that it failed
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
    log.debug(  # the daemon journals the turn event; --once --verbose shows this
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
            "generated_ahead": stats.generated_ahead,
            "evaluated_this_turn": stats.evaluated_this_turn,
            "after_speech_end": stats.after_speech_end,
            "context": stats.context_tokens,
        },
        timings_ms=timings,
        stopped_by=stats.stopped_by,
        spoken_seconds=speech_stats.audio_seconds if speech_stats else 0.0,
        sentences=sentences,
        tool_calls=reply.tool_calls,
        audio_steps=stats.audio_steps,
    )
