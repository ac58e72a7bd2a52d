"""The conversation engine: Gemma 4 E2B through llama.cpp's mtmd library, its
history kept in the KV cache between turns, reply text out token by token.

Audio goes straight into the model's own audio encoder (:mod:`.audio_turn`).

Why the low-level bindings: llama-cpp-python's chat handler for Gemma 4 reads only
images, clears the KV cache on every call and cannot render template variables.
Here the engine loads once, evaluates the system prompt once, and keeps the KV
cache between turns, so each turn evaluates only its own new tokens: on a Pi 5
every token evaluated after the user stops speaking costs about 35 ms.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp

from ..config import EngineConfig
from ..errors import ModelFileError, UsageError
from .audio_turn import (
    AUDIO_TOKENS_PER_SECOND,
    AudioTurn,
    Interruption,
    ReplyInCache,
    TurnCancelled,
    TurnReply,
    TurnStats,
)
from .chat_format import ChatFormat, ToolDeclarations
from .clip_encoder import ClipEncoder, check_streaming_support
from .graph_thread import on_graph_thread
from .loading import FETCH_HINT, KV_CACHE_GGML_TYPES, _init_backend, check_gguf, load_model, physical_cores
from .mtmd_prompt import text_pieces
from .prompt_state import files_fingerprint, prompt_state_file, restore_sequence_state, sequence_state
from .sampling import LlamaSampler, TokenSampler
from .tool_calls import CALL_CLOSE, CALL_OPEN
from .tool_loop import ToolUse, generate_with_tools

log = logging.getLogger(__name__)

_SILENT_TOKEN_ATTRS = (
    llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
)


@dataclass
class _Conversation:
    """One conversation in the KV cache: a llama.cpp sequence (a room) and how
    far it goes. Every conversation starts from the same system prompt, whose
    cache cells they share (copied with ``llama_memory_seq_cp``, not evaluated
    again)."""

    seq_id: int
    n_past: int = 0
    last_reply: ReplyInCache | None = None


DECODE_ABORTED = 2  # llama_decode's status when the abort callback stopped it


def _check_decode(status: int, what: str) -> None:
    if status == DECODE_ABORTED:
        raise TurnCancelled()
    if status != 0:
        raise RuntimeError(f"{what} failed with status {status}")


class GemmaEngine:
    """One loaded model + audio projector serving many turns."""

    def __init__(
        self, model_path: Path, mmproj_path: Path, settings: EngineConfig, sampler: TokenSampler | None = None,
        tools: ToolDeclarations = (), prompt_state_dir: Path | None = None, conversations: int = 1,
    ) -> None:
        """``sampler`` None: llama.cpp's chain from ``settings`` (:class:`LlamaSampler`);
        ``tools``: declarations the system prompt offers the model;
        ``prompt_state_dir``: where the system prompt's KV state is saved and
        restored from (:mod:`.prompt_state`); None: evaluate it at every start;
        ``conversations``: how many independent conversations (rooms) the cache
        holds, each up to ``settings.n_ctx`` tokens (:meth:`use_conversation`)."""
        if conversations < 1:
            raise UsageError("an engine needs at least one conversation")
        if settings.kv_cache_type not in KV_CACHE_GGML_TYPES:
            raise UsageError(f"unknown KV cache type {settings.kv_cache_type!r}")
        check_gguf(model_path, "model file")
        check_gguf(mmproj_path, "audio projector file")
        check_streaming_support()
        _init_backend()
        self.model_path = model_path
        self.mmproj_path = mmproj_path
        self.settings = settings
        self.threads = settings.threads or physical_cores()
        self._conversations = [_Conversation(seq_id) for seq_id in range(conversations)]
        self._conversation = self._conversations[0]  # the one turns read and write
        self._active: AudioTurn | None = None  # the turn cancel() reaches
        self._model = None
        self._ctx = None
        self._mtmd = None
        self._sampler: TokenSampler | None = sampler
        self.tools = list(tools)
        self.prompt_state_dir = prompt_state_dir
        self.system_prompt_restored = False
        try:
            on_graph_thread(self._load)
            # What keys the saved system prompt states, taken once (prompt_state.py).
            self.files_fingerprint = files_fingerprint([model_path, mmproj_path]) if prompt_state_dir is not None else b""
        except BaseException:
            self.close()
            raise
        self.chat_format = ChatFormat.from_template(self._chat_template(), self._token_text(self._bos))
        # The same for every turn: built once, not per utterance.
        self._user_turn = self.chat_format.user_turn(self._marker)
        self._user_turn_tokens = len(self.tokenize(self._user_turn))
        self._turn_end_tokens = self.tokenize(self.chat_format.turn_end)
        self._n_embd = llama_cpp.llama_model_n_embd_inp(self._model)
        self._audio_prefix_tokens, self._audio_suffix_tokens = self._split_user_turn()
        self._n_system = 0
        self.system_prompt_tokens = self._evaluate_system_prompt()
        self._share_system_prompt()

    # -- loading -----------------------------------------------------------

    def _load(self) -> None:
        settings = self.settings
        self._model = load_model(self.model_path, settings)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)

        kv_type = KV_CACHE_GGML_TYPES[settings.kv_cache_type]
        context_params = llama_cpp.llama_context_default_params()
        # One unified cache for every conversation: the system prompt's cells
        # are shared by all of them, and each has room for n_ctx tokens.
        context_params.n_ctx = settings.n_ctx * len(self._conversations)
        context_params.n_batch = settings.n_batch
        context_params.n_ubatch = settings.n_ubatch
        context_params.n_seq_max = len(self._conversations)
        context_params.kv_unified = True
        context_params.n_threads = settings.decode_threads or self.threads
        context_params.n_threads_batch = self.threads
        # A quantized V cache needs flash attention.
        context_params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        context_params.type_k = kv_type
        context_params.type_v = kv_type
        # Keep the sliding-window layers' KV for the whole context instead of the
        # last 512 tokens, so the cache can be rolled back to the end of the system
        # prompt (history reset) without evaluating it again. E2B has one KV head
        # and only 15 layers that own a cache: this costs tens of MiB, not hundreds.
        context_params.swa_full = True
        context_params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, context_params)
        if not self._ctx:
            raise ModelFileError(
                f"cannot create a llama.cpp context for {self.model_path} "
                f"(n_ctx={settings.n_ctx}, kv_cache_type={settings.kv_cache_type}); try a smaller engine.n_ctx"
            )
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        # Checked by ggml between graph nodes: a cancelled turn stops inside a
        # sub-batch (llama.cpp then drops that sub-batch's positions), not after it.
        # A Python callback takes the GIL at every node (issue 22, defect 9; the
        # test twin: 271 calls per decoded token). scripts/bench_abort_callback.py
        # times it in pairs of fresh runs with Piper and an audio loop alongside and
        # says whether the noise allows a verdict against 3 %; on a shared 2-core
        # Xeon it has not yet. Over 3 % would mean checking every Nth node or
        # moving the flag into C.
        self._abort_check = llama_cpp.ggml_abort_callback(lambda _data: self._cancel_requested())
        llama_cpp.llama_set_abort_callback(self._ctx, self._abort_check, None)

        mtmd_params = mtmd_cpp.mtmd_context_params_default()
        mtmd_params.use_gpu = False
        mtmd_params.n_threads = self.threads
        mtmd_params.print_timings = False
        mtmd_params.warmup = settings.warm_up_projector
        self._mtmd = mtmd_cpp.mtmd_init_from_file(str(self.mmproj_path).encode(), self._model, mtmd_params)
        if not self._mtmd:
            raise ModelFileError(
                f"cannot load audio projector {self.mmproj_path} (corrupt, or not made for this model); {FETCH_HINT}"
            )
        if not mtmd_cpp.mtmd_support_audio(self._mtmd):
            raise ModelFileError(f"projector {self.mmproj_path} has no audio encoder; {FETCH_HINT}")
        self.audio_sample_rate = mtmd_cpp.mtmd_get_audio_sample_rate(self._mtmd)
        self._marker = mtmd_cpp.mtmd_default_marker().decode()
        self._bos = llama_cpp.llama_vocab_bos(self._vocab)
        self._stop_tokens = {self._single_token("<|turn>")} - {None}
        self._call_open = self._single_token(CALL_OPEN)
        self._call_close = self._single_token(CALL_CLOSE)
        if self._sampler is None:
            self._sampler = LlamaSampler(self.settings)

    def _chat_template(self) -> str | None:
        template = llama_cpp.llama_model_chat_template(self._model, None)
        return template.decode("utf-8") if template else None

    def close(self) -> None:
        """Free native memory; safe to call twice."""
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
        if self._mtmd:
            mtmd_cpp.mtmd_free(self._mtmd)
            self._mtmd = None
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> GemmaEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- tokens --------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Text with special tokens parsed (``<|turn>`` is one token), no BOS added:
        the chat format writes the BOS itself."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self._vocab, data, len(data), tokens, capacity, False, True)
        if count < 0:
            raise RuntimeError(f"tokenizer needs {-count} slots for {len(data)} bytes")
        return list(tokens[:count])

    def _token_bytes(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, True)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, True)
        return buffer.raw[:size]

    def _reply_bytes(self, token: int) -> bytes:
        """What a generated token adds to the reply text. Control and unused tokens
        add nothing; user-defined markers such as ``<|channel>`` are kept so the
        reply filter can remove the blocks they delimit."""
        if llama_cpp.llama_vocab_get_attr(self._vocab, token) & _SILENT_TOKEN_ATTRS:
            return b""
        return self._token_bytes(token)

    def _token_text(self, token: int) -> str:
        return self._token_bytes(token).decode("utf-8", errors="replace")

    def _single_token(self, text: str) -> int | None:
        tokens = self.tokenize(text)
        return tokens[0] if len(tokens) == 1 else None

    # -- the KV cache ----------------------------------------------------------

    @property
    def context_tokens(self) -> int:
        return self._n_past

    # The open conversation's bookkeeping: what AudioTurn and the cache code use.
    @property
    def _n_past(self) -> int:
        return self._conversation.n_past

    @_n_past.setter
    def _n_past(self, value: int) -> None:
        self._conversation.n_past = value

    @property
    def _last_reply(self) -> ReplyInCache | None:
        return self._conversation.last_reply

    @_last_reply.setter
    def _last_reply(self, value: ReplyInCache | None) -> None:
        self._conversation.last_reply = value

    @property
    def conversations(self) -> int:
        return len(self._conversations)

    def use_conversation(self, index: int) -> None:
        """Send the next turns to conversation ``index`` (a room's), on the
        engine's thread, between turns."""
        if self._active is not None:
            raise RuntimeError("cannot switch conversations while a turn is open")
        self._conversation = self._conversations[index]

    def _share_system_prompt(self) -> None:
        """Every other conversation starts as a copy of the first's system
        prompt: the cells are shared in the unified cache, nothing is evaluated."""
        first = self._conversations[0]
        for other in self._conversations[1:]:
            llama_cpp.llama_memory_seq_rm(self._memory, other.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._memory, first.seq_id, other.seq_id, -1, -1)
            other.n_past, other.last_reply = first.n_past, None

    def kv_bytes_per_token(self) -> float:
        """One token of one conversation in the KV cache (from the first one's state size)."""
        first = self._conversations[0]
        return llama_cpp.llama_state_seq_get_size(self._ctx, first.seq_id) / max(1, first.n_past)

    def _evaluate_system_prompt(self) -> int:
        tokens = self.tokenize(self.chat_format.system_block(self.settings.system_prompt, self.tools))
        saved = prompt_state_file(self, tokens) if self.prompt_state_dir is not None else None
        started = time.perf_counter()
        if saved is not None and restore_sequence_state(self._ctx, self._memory, saved, len(tokens)):
            self._n_past = len(tokens)
            self.system_prompt_restored = True
            log.info("system prompt restored: %d tokens in %.0f ms", len(tokens), (time.perf_counter() - started) * 1000)
        else:
            self._decode_tokens(tokens, want_logits=False)
            log.info("system prompt evaluated: %d tokens in %.0f ms", len(tokens), (time.perf_counter() - started) * 1000)
            if saved is not None:
                saved.save(sequence_state(self._ctx, self._conversation.seq_id))
        self._n_system = self._n_past
        return len(tokens)

    def reset_history(self) -> None:
        """Forget the open conversation, keep the evaluated system prompt."""
        self._truncate(self._n_system)

    def declare_tools(self, tools: ToolDeclarations) -> None:
        """A new system prompt for other tools (an MCP server came up): the cache is
        emptied and the prompt evaluated (or restored from its saved state) once,
        and every room's conversation starts afresh from it. Between turns, on
        the engine's thread. If that fails, every room is back on the prompt of
        the tools declared before, and the error is raised."""
        current, declared = self._conversation, self.tools
        self.use_conversation(0)
        try:
            self._restart_with(tools)
        except BaseException:
            self._restart_with(declared)
            raise
        finally:
            self._conversation = current

    def _restart_with(self, tools: ToolDeclarations) -> None:
        self.tools = list(tools)
        self._truncate(0)
        self.system_prompt_restored = False
        self.system_prompt_tokens = self._evaluate_system_prompt()
        self._share_system_prompt()

    def _truncate(self, n_past: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, self._conversation.seq_id, n_past, -1)
        self._n_past = n_past
        if self._last_reply is not None and self._last_reply.end > n_past:
            self._last_reply = None

    def trim_last_reply(self, interruption: Interruption) -> None:
        """After a barge-in on a reply that was already complete in the cache:
        keep only what the user heard of it (on the engine's thread, before the
        next turn). Nothing happens unless that reply is still the last thing in
        the conversation."""
        reply = self._last_reply
        heard = interruption.heard_chars
        if heard is None or reply is None or reply.interruption is not interruption or self._n_past != reply.end:
            return
        position, marks = reply.cut(heard)
        if len(marks) == len(reply.marks):
            return
        self._truncate(position)
        self._decode_tokens(self._turn_end_tokens, want_logits=False)
        self._last_reply = ReplyInCache(reply.start, marks, self._n_past, interruption)
        log.info("barge-in: the history keeps %d of the reply's %d tokens (%d characters heard)",
                 len(marks), len(reply.marks), heard)

    def cancel(self) -> None:
        """Stop whichever turn is open (from another thread) within the model
        evaluation running now; the cancelled turn leaves no trace in the
        conversation. The daemon cancels a particular turn through its own
        :class:`Interruption` instead."""
        turn = self._active
        if turn is not None:
            turn.cancel()

    def _cancel_requested(self) -> bool:
        turn = self._active
        return turn is not None and turn.cancelled and not turn.committing

    def _decode_tokens(self, tokens: list[int], want_logits: bool) -> None:
        """Evaluate text tokens in n_batch pieces; logits only for the last one."""
        for start in range(0, len(tokens), self.settings.n_batch):
            piece = tokens[start : start + self.settings.n_batch]
            batch = llama_cpp.llama_batch_init(len(piece), 0, 1)
            try:
                for index, token in enumerate(piece):
                    batch.token[index] = token
                    batch.pos[index] = self._n_past + index
                    batch.n_seq_id[index] = 1
                    batch.seq_id[index][0] = self._conversation.seq_id
                    batch.logits[index] = False
                batch.n_tokens = len(piece)
                last_piece = start + len(piece) == len(tokens)
                batch.logits[len(piece) - 1] = want_logits and last_piece
                status = on_graph_thread(lambda: llama_cpp.llama_decode(self._ctx, batch))
            finally:
                llama_cpp.llama_batch_free(batch)
            _check_decode(status, "llama_decode")
            self._n_past += len(piece)

    # -- a turn ----------------------------------------------------------------

    def audio_token_estimate(self, seconds: float) -> int:
        return int(np.ceil(seconds * AUDIO_TOKENS_PER_SECOND))

    def begin_turn(
        self, expected_seconds: float, speech_ended: bool = False, interruption: Interruption | None = None
    ) -> AudioTurn:
        """Open a user turn for up to ``expected_seconds`` of audio (for the context
        check); feed it, end its audio, generate, then commit or roll back.
        ``speech_ended``: the whole recording is already there (a file), so every
        token counts as evaluated after the end of speech; ``interruption``: the
        turn's own cancel (raises :class:`TurnCancelled` if already set)."""
        return AudioTurn(self, expected_seconds, speech_ended, interruption)

    def respond(
        self,
        samples: np.ndarray,
        on_text: Callable[[str], None] | None = None,
        tools: ToolUse | None = None,
        interruption: Interruption | None = None,
    ) -> TurnReply:
        """Answer one spoken turn given as 16 kHz mono float32 samples, through the
        same :class:`AudioTurn` a stream feeds. All of it is fed at once: the
        result is the same as feeding it in steps, and one encoder pass is the
        cheapest when the whole recording is already there.

        ``on_text`` receives the reply text as it is generated (hidden blocks
        included: the caller filters); ``tools`` are run when the model calls
        them; after a barge-in (``interruption``) the question and what was
        heard of the reply stay. Returns the whole text, what it cost and the
        tool calls.
        """
        try:
            turn = self.begin_turn(len(samples) / self.audio_sample_rate, speech_ended=True, interruption=interruption)
        except TurnCancelled:  # cancelled before or while it opened
            return TurnReply("", TurnStats(stopped_by="cancelled"))
        text, calls = "", []
        try:
            turn.feed(samples, evaluate=False)
            turn.end_audio()
            text, calls = generate_with_tools(turn, on_text, None, tools)
        except TurnCancelled:
            turn.stats.stopped_by = "cancelled"
        except BaseException:
            turn.stats.stopped_by = "failed"  # rolled back: nobody heard a reply
            raise
        finally:
            turn.finish(interruption)
        return TurnReply(text, turn.stats, calls)

    def _check_room(self, expected_seconds: float) -> None:
        """Make room for a turn of ``expected_seconds``: forget the history if the
        context would overflow; refuse audio that cannot fit even then."""
        if not self.settings.keep_history:
            self.reset_history()
        needed = self._user_turn_tokens + self.audio_token_estimate(expected_seconds) + self.settings.max_tokens + 4
        if self._n_past + needed > self.settings.n_ctx and self._n_past > self._n_system:
            log.info("context would overflow (%d + %d > %d): history reset", self._n_past, needed, self.settings.n_ctx)
            self.reset_history()
        if self._n_system + needed > self.settings.n_ctx:
            raise UsageError(
                f"audio of {expected_seconds:.1f} s does not fit the context "
                f"(engine.n_ctx = {self.settings.n_ctx}); shorten it or raise engine.n_ctx"
            )

    def _split_user_turn(self) -> tuple[list[int], list[int]]:
        """The user turn's text tokens before and after its audio, exactly as mtmd
        tokenizes them (the audio begin and end markers included)."""
        texts = text_pieces(self._mtmd, np.zeros(self.audio_sample_rate, dtype=np.float32), self._user_turn)
        if len(texts) != 2:
            raise ModelFileError(f"unexpected prompt layout from the audio projector {self.mmproj_path} ({len(texts)} text pieces)")
        return texts[0], texts[1]

    def clip_encoder(self) -> ClipEncoder:
        """A stateful audio encoder for one clip of a turn (closed by the turn)."""
        return ClipEncoder(self._mtmd, self._n_embd)

    def _decode_embeddings(self, embeddings: np.ndarray, cancelled: threading.Event) -> None:
        """Evaluate audio embeddings into the cache in n_batch pieces, as mtmd's
        helper does for Gemma 4 audio (causal, one position per token); stops
        between pieces when the turn is cancelled."""
        n_batch = self.settings.n_batch
        for start in range(0, len(embeddings), n_batch):
            if cancelled.is_set():
                raise TurnCancelled()
            piece = np.ascontiguousarray(embeddings[start : start + n_batch], dtype=np.float32)
            batch = llama_cpp.llama_batch_init(len(piece), self._n_embd, 1)
            try:
                ctypes.memmove(batch.embd, piece.ctypes.data, piece.nbytes)
                for index in range(len(piece)):
                    batch.pos[index] = self._n_past + index
                    batch.n_seq_id[index] = 1
                    batch.seq_id[index][0] = self._conversation.seq_id
                    batch.logits[index] = False
                batch.n_tokens = len(piece)
                status = on_graph_thread(lambda: llama_cpp.llama_decode(self._ctx, batch))
            finally:
                llama_cpp.llama_batch_free(batch)
            _check_decode(status, "llama_decode of audio embeddings")
            self._n_past += len(piece)

    def check_cache(self) -> None:
        """The KV cache holds exactly the positions the bookkeeping says."""
        last = llama_cpp.llama_memory_seq_pos_max(self._memory, self._conversation.seq_id)
        if last != self._n_past - 1:
            raise RuntimeError(f"KV cache drifted: it ends at position {last}, the engine expects {self._n_past - 1}")

    def _generate(
        self,
        stats: TurnStats,
        started: float,
        on_text: Callable[[str], None] | None,
        cancelled: threading.Event,
        marks: list[tuple[int, int]],
        max_tokens: int | None = None,
        between_tokens: Callable[[], None] | None = None,
    ) -> str:
        """Sample until the turn ends; ``marks`` gets (reply text length, cache
        position) after each token evaluated outside a tool call: what a
        barge-in cuts by, so a cut never keeps part of a call, or a call without
        the response that follows it (the next mark comes after the response);
        ``between_tokens`` is called before each token is sampled and may raise
        to abandon the generation (the caller then truncates the cache). Once a
        tool call closes, only another call may follow: anything else (Gemma's
        ``<|tool_response>``, the end of the turn, text) pauses generation with
        ``stopped_by`` "tool_call", unevaluated, so the caller can put the
        results in and call again (the sampler keeps its state until the turn
        closes)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        text_length = 0
        generation_started = time.perf_counter()
        stats.stopped_by = ""  # until it stops: a failure before then rolls the turn back
        call_closed = False
        in_call = False
        for _ in range(max_tokens or self.settings.max_tokens):
            if cancelled.is_set():
                stats.stopped_by = "cancelled"
                break
            if between_tokens is not None:
                between_tokens()
            token = self._sampler.sample(self._ctx)
            if stats.generated_tokens == 0:
                stats.first_token_at = time.perf_counter()
                stats.first_token_ms = (stats.first_token_at - started) * 1000
                generation_started = stats.first_token_at
            if call_closed and token != self._call_open:
                stats.stopped_by = "tool_call"
                break
            if llama_cpp.llama_vocab_is_eog(self._vocab, token) or token in self._stop_tokens:
                stats.stopped_by = "end_of_turn"
                break
            call_closed = token == self._call_close
            in_call = (in_call or token == self._call_open) and not call_closed
            stats.generated_tokens += 1
            piece = decoder.decode(self._reply_bytes(token))
            if piece:
                pieces.append(piece)
                text_length += len(piece)
                if on_text is not None:
                    on_text(piece)
            if self._n_past + 1 >= self.settings.n_ctx - 2:
                stats.stopped_by = "context_full"
                break
            try:
                self._decode_tokens([token], want_logits=True)
            except TurnCancelled:  # stopped inside the evaluation of this token
                stats.stopped_by = "cancelled"
                break
            if not in_call and not call_closed:
                marks.append((text_length, self._n_past))
        else:
            stats.stopped_by = "max_tokens"
        tail = decoder.decode(b"", final=True)
        if tail:
            pieces.append(tail)
            if on_text is not None:
                on_text(tail)
        stats.decode_ms += (time.perf_counter() - generation_started) * 1000
        return "".join(pieces)
