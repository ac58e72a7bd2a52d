"""One user turn fed step by step: audio streamed into the model's encoder as
it is heard, then ended, reopened, answered, committed or rolled back."""

from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import llama_cpp
import numpy as np

from ..audio.format import MODEL_SAMPLE_RATE
from .clip_encoder import ClipEncoder

if TYPE_CHECKING:
    from .engine import GemmaEngine

log = logging.getLogger(__name__)

AUDIO_TOKENS_PER_SECOND = 25  # Gemma 4's audio encoder: one token per 40 ms
MAX_CLIP_SECONDS = 30  # Gemma 4's limit per audio clip; mtmd splits longer audio
CLIP_SAMPLES = MAX_CLIP_SECONDS * MODEL_SAMPLE_RATE  # mtmd encodes longer audio as separate 30 s clips


class TurnCancelled(Exception):
    """Raised inside a turn's prefill when the turn was cancelled."""


@dataclass
class TurnStats:
    """What one turn cost. ``evaluated_this_turn`` counts every token that went
    through the model in this turn: the new prompt text, the audio tokens, the
    generated tokens and the end-of-turn marker kept for the history."""

    prompt_tokens: int = 0
    audio_tokens: int = 0
    generated_tokens: int = 0
    generated_ahead: int = 0  # of those, generated in the pause before the endpoint confirmed the end
    evaluated_this_turn: int = 0
    after_speech_end: int = 0  # of those, evaluated after the audio ended (the closing text, unfinished audio)
    context_tokens: int = 0  # tokens in the KV cache after the turn
    audio_steps: list[int] = field(default_factory=list)  # audio tokens evaluated per encoder pass
    encode_ms: float = 0.0
    prefill_ms: float = 0.0
    first_token_ms: float = 0.0
    first_token_at: float = 0.0  # perf_counter() when the first reply token was sampled
    decode_ms: float = 0.0
    stopped_by: str = ""  # "end_of_turn", "max_tokens", "context_full", "cancelled", "failed" or "tool_call" (paused for results)


@dataclass
class Interruption:
    """What stops one turn from outside, per turn: its own cancel (a barge-in, a
    discarded stream, a timeout, shutdown), read by the engine's abort callback
    while that turn is open, so a cancel never reaches another turn; and for a
    barge-in how much of the raw reply text the user heard before it stopped.
    Set from the audio thread; the engine's thread keeps that much of the reply
    in the conversation."""

    heard_chars: int | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class ReplyInCache:
    """The last kept turn's reply: where it starts in the cache, (reply text
    length, cache position) after each of its generated tokens (tool responses
    sit between them), and the interruption that may cut it."""

    start: int
    marks: list[tuple[int, int]]
    end: int  # the cache position after the turn, end-of-turn marker included
    interruption: Interruption | None

    def cut(self, heard_chars: int) -> tuple[int, list[tuple[int, int]]]:
        """(cache position to keep up to, the marks kept) for a reply heard up
        to ``heard_chars`` characters."""
        kept = bisect.bisect_right([chars for chars, _ in self.marks], heard_chars)
        return (self.marks[kept - 1][1] if kept else self.start), self.marks[:kept]


@dataclass
class TurnReply:
    text: str  # raw model text, hidden blocks included; reply_text filters it
    stats: TurnStats = field(default_factory=TurnStats)
    tool_calls: list[Any] = field(default_factory=list)  # tools.ToolCallRecord, in call order


@dataclass
class _ClipInCache:
    """One 30 s clip of a turn: its encoder and how many of its tokens the cache holds."""

    encoder: ClipEncoder
    tokens: int = 0
    whole: bool = False  # every token is in the cache (the clip ended)


class AudioTurn:
    """One user turn, driven step by step on the engine's thread: the fixed text
    before the audio is evaluated when the turn opens, audio is fed as it is
    heard, :meth:`end_audio` closes it, :meth:`generate` answers, and
    :meth:`commit` keeps the turn in the conversation or :meth:`rollback` removes
    it from the KV cache.

    Streaming is exact and encodes each token once: every 30 s clip has a
    stateful encoder (:class:`~edge_assistant.llm.clip_encoder.ClipEncoder`) that
    returns the tokens no later audio can change, and only those are evaluated.
    Audio tokens are causal in the language model, so the cache ends up as if
    the whole clip had been evaluated at once. Only another thread's
    :meth:`cancel` is safe to call concurrently.
    """

    def __init__(
        self, engine: GemmaEngine, expected_seconds: float, speech_ended: bool = False,
        interruption: Interruption | None = None,
    ) -> None:
        """``interruption``: the turn's own cancel (already set: the turn opens
        cancelled and :class:`TurnCancelled` is raised before anything is evaluated)."""
        if engine._active is not None:
            raise RuntimeError("a turn is already open on this engine")
        engine._check_room(expected_seconds)
        self.engine = engine
        self.stats = TurnStats()
        self._cancelled = interruption.cancelled if interruption is not None else threading.Event()
        self._opened = time.perf_counter()
        self._start = engine._n_past
        self._speech_end = engine._n_past if speech_ended else None  # cache position when the speech ended
        self._samples = np.zeros(0, dtype=np.float32)
        self._clips: list[_ClipInCache] = []  # per 30 s clip, in order
        self._audio_ended = False
        self.committing = False  # closing the turn in the cache: a cancel no longer stops that
        self._heard = self._samples  # all audio fed, before end_audio() trimmed it
        self._closing_start = 0  # cache position of the text closing the user turn, once the audio ended
        self._reply_start: int | None = None
        self._reply_marks: list[tuple[int, int]] = []  # (reply text length, cache position) per token
        self._reply_chars = 0
        self._position_lock = threading.Lock()  # _speech_end is noted from the audio thread
        self._closed = False
        engine._active = self
        try:
            self._evaluate_text(engine._audio_prefix_tokens, want_logits=False)
        except BaseException:
            self.rollback()
            raise
        self._audio_start = engine._n_past

    # -- driving the turn ---------------------------------------------------------

    def cancel(self) -> None:
        """From any thread: stop at the next sub-batch or token."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def fed_samples(self) -> int:
        return len(self._samples)

    def feed(self, samples: np.ndarray, evaluate: bool = True) -> None:
        """Append heard audio and evaluate the tokens it made final; ``evaluate``
        False when :meth:`end_audio` follows at once (one encoder pass, not two)."""
        if self._audio_ended:
            raise RuntimeError("audio fed after end_audio()")
        self._samples = np.concatenate([self._samples, np.asarray(samples, dtype=np.float32)])
        if evaluate:
            self._advance(final=False)

    def note_speech_end(self) -> None:
        """From any thread, when the speaker stopped: tokens the cache holds now
        were evaluated while they spoke; the rest count as after the end."""
        with self._position_lock:
            if self._speech_end is None:
                self._speech_end = self.engine._n_past

    def end_audio(self, keep_samples: int | None = None, early: bool = False) -> None:
        """The utterance is over; it is the first ``keep_samples`` fed (all by
        default: the endpointer trims trailing silence). Evaluates what is left of
        the audio and the text that closes the user turn, ready to generate.

        ``early``: said while the speaker pauses, before the endpoint decides;
        :meth:`reopen_audio` undoes it if they go on."""
        if not len(self._samples) or keep_samples == 0:
            raise ValueError("a turn needs audio")
        if not early:
            self.note_speech_end()
        self._heard = self._samples
        if keep_samples is not None and keep_samples < len(self._samples):
            self._forget_tokens_beyond(keep_samples)
            self._samples = self._samples[:keep_samples]
        self._advance(final=True)
        self._closing_start = self.engine._n_past
        self._evaluate_text(self.engine._audio_suffix_tokens, want_logits=True)
        self._audio_ended = True
        self._count_after_speech_end()

    def reopen_audio(self) -> None:
        """Undo an early :meth:`end_audio`: the speaker went on after a pause.
        The closing text, any reply generated ahead of the endpoint and the audio
        tokens the end changed leave the cache; the tokens final before it stay,
        and feeding continues from all the audio heard."""
        if not self._audio_ended:
            raise RuntimeError("reopen_audio() without end_audio()")
        self._truncate(self._closing_start)
        self.stats.prompt_tokens -= len(self.engine._audio_suffix_tokens)
        self.stats.generated_tokens, self.stats.first_token_ms, self.stats.first_token_at = 0, 0.0, 0.0
        self.stats.decode_ms, self.stats.stopped_by = 0.0, ""
        self._reply_start, self._reply_marks, self._reply_chars = None, [], 0
        self.engine._sampler.reset()  # the answer restarts as a fresh turn's would
        self._forget_tokens_beyond(len(self._samples))
        self._samples = self._heard
        self._audio_ended = False

    def next_token_logits(self) -> np.ndarray:
        """The model's logits for the first reply token (after :meth:`end_audio`):
        what exactness checks compare."""
        if not self._audio_ended:
            raise RuntimeError("no logits before end_audio()")
        engine = self.engine
        n_vocab = llama_cpp.llama_vocab_n_tokens(engine._vocab)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(engine._ctx, -1), shape=(n_vocab,)).copy()

    def generate(
        self,
        on_text: Callable[[str], None] | None = None,
        started: float | None = None,
        max_tokens: int | None = None,
        between_tokens: Callable[[], None] | None = None,
    ) -> str:
        """The reply, token by token to ``on_text``; ``started`` (perf_counter) is
        where first_token_ms counts from, by default the turn's opening;
        ``max_tokens`` caps this call (default engine.max_tokens);
        ``between_tokens`` runs before each token and may raise to stop (after an
        early :meth:`end_audio`: the speaker went on, :meth:`reopen_audio`)."""
        if not self._audio_ended:
            raise RuntimeError("generate() before end_audio()")
        engine = self.engine
        if self._reply_start is None:
            self._reply_start = engine._n_past
        self._count_after_speech_end()
        marks: list[tuple[int, int]] = []
        started = started if started is not None else self._opened
        text = engine._generate(self.stats, started, on_text, self._cancelled, marks, max_tokens, between_tokens)
        self._reply_marks.extend((self._reply_chars + chars, position) for chars, position in marks)
        self._reply_chars += len(text)
        return text

    def continue_with(self, text: str) -> bool:
        """Evaluate ``text`` (tool responses) into the model's own turn, with no
        end-of-turn marker, so :meth:`generate` continues after it. False, with
        nothing evaluated, when it would not fit the context."""
        tokens = self.engine.tokenize(text)
        if self.engine._n_past + len(tokens) + 2 >= self.engine.settings.n_ctx:
            self.stats.stopped_by = "context_full"
            return False
        self._evaluate_text(tokens, want_logits=True)
        return True

    def finish(self, interruption: Interruption | None = None) -> None:
        """Close the turn, from a ``finally``: keep it when it answered; after a
        barge-in keep the question and the part of the reply the user heard;
        otherwise (cancelled, failed: anything but an interruption) roll it back."""
        heard = interruption.heard_chars if interruption is not None else None
        self._count_after_speech_end()
        if self.stats.stopped_by == "failed":
            self.rollback()
        elif heard is not None and self._audio_ended and not self._closed:
            self.stats.stopped_by = "interrupted"
            self.commit(interruption)
        elif self.stats.stopped_by in ("", "cancelled"):
            self.rollback()
        else:
            self.commit(interruption)

    def commit(self, interruption: Interruption | None = None) -> None:
        """Keep the turn: close the model's turn in the cache (with history on) so
        the next turn continues from it. With a barge-in's ``interruption``, only
        the part of the reply the user heard stays; one that comes later can
        still cut it (:meth:`GemmaEngine.trim_last_reply`)."""
        engine = self.engine
        self.committing = True
        try:
            reply = ReplyInCache(
                engine._n_past if self._reply_start is None else self._reply_start, self._reply_marks, 0, interruption
            )
            if interruption is not None and interruption.heard_chars is not None:
                position, reply.marks = reply.cut(interruption.heard_chars)
                self._truncate(position)
            if engine.settings.keep_history:
                engine._decode_tokens(engine._turn_end_tokens, want_logits=False)
                reply.end = engine._n_past
                engine._last_reply = reply
            engine.check_cache()
        except BaseException:
            self.rollback()
            raise
        self._close()

    def rollback(self) -> None:
        """Remove the whole turn from the cache, as if it had never started."""
        if not self._closed:
            self.engine._truncate(self._start)
            self._close()

    # -- internals ---------------------------------------------------------------

    def _close(self) -> None:
        for clip in self._clips:
            clip.encoder.close()
        self._clips = []
        self.stats.evaluated_this_turn = self.engine._n_past - self._start
        self.stats.context_tokens = self.engine._n_past
        self.engine._sampler.reset()  # once per turn, however many times it paused for tool results
        self.engine._active = None
        self._closed = True

    def _evaluate_text(self, tokens: list[int], want_logits: bool) -> None:
        if self._cancelled.is_set():
            raise TurnCancelled()
        started = time.perf_counter()
        self.engine._decode_tokens(tokens, want_logits)
        self.stats.prompt_tokens += len(tokens)
        self.stats.prefill_ms += (time.perf_counter() - started) * 1000

    def _clip(self, index: int) -> np.ndarray:
        return self._samples[index * CLIP_SAMPLES : (index + 1) * CLIP_SAMPLES]

    def _advance(self, final: bool) -> None:
        """Encode and evaluate every audio token that is final now (all of them
        when ``final``), clip by clip, in order. A clip followed by more audio is
        a whole 30 s clip: all its tokens are final."""
        clips = -(-len(self._samples) // CLIP_SAMPLES)
        for index in range(clips):
            if index == len(self._clips):
                self._clips.append(_ClipInCache(self.engine.clip_encoder()))
            clip = self._clips[index]
            if clip.whole:
                continue
            clip.encoder.feed(self._clip(index)[clip.encoder.samples :])
            whole = final or index < clips - 1
            started = time.perf_counter()
            embeddings = clip.encoder.encode(last=whole)
            encode_ms = (time.perf_counter() - started) * 1000
            self.stats.encode_ms += encode_ms
            prefill_ms = 0.0
            if len(embeddings):
                started = time.perf_counter()
                self.engine._decode_embeddings(embeddings, self._cancelled)
                prefill_ms = (time.perf_counter() - started) * 1000
                self.stats.prefill_ms += prefill_ms
                self.stats.audio_tokens += len(embeddings)
                self.stats.audio_steps.append(len(embeddings))
            log.debug("audio step: %d samples fed, %d tokens (%s), encoder %.0f ms, prefill %.0f ms",
                      clip.encoder.samples, len(embeddings), "to the end" if whole else "final blocks", encode_ms, prefill_ms)
            clip.tokens += len(embeddings)
            clip.whole = whole

    def _count_after_speech_end(self) -> None:
        """Prompt tokens (audio and text, not the reply) evaluated after the
        speech ended."""
        with self._position_lock:
            if self._speech_end is not None:
                prompt_end = self.engine._n_past if self._reply_start is None else self._reply_start
                self.stats.after_speech_end = max(0, prompt_end - self._speech_end)

    def _forget_tokens_beyond(self, samples: int) -> None:
        """Keep only the audio tokens the first ``samples`` make final (up to the
        last whole encoder block of their last clip): what no change to the
        audio after them can alter."""
        clips = -(-samples // CLIP_SAMPLES)
        for clip in self._clips[clips:]:
            clip.encoder.close()
        del self._clips[clips:]
        if self._clips:
            last = self._clips[-1]
            last.tokens = last.encoder.rewind(samples - (clips - 1) * CLIP_SAMPLES)
            last.whole = False
        kept = self._audio_start + sum(clip.tokens for clip in self._clips)
        if kept < self.engine._n_past:
            self.stats.audio_tokens -= self.engine._n_past - kept
            self._truncate(kept)

    def _truncate(self, n_past: int) -> None:
        """Drop cache positions from ``n_past`` on; those evaluated before the
        speech ended were not, after all, so they count again if re-evaluated."""
        with self._position_lock:
            self.engine._truncate(n_past)
            if self._speech_end is not None:
                self._speech_end = min(self._speech_end, n_past)
