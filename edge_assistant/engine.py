"""The Gemma 4 E2B engine: audio straight into the model's own audio encoder
through llama.cpp's mtmd library, reply text out, token by token.

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
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp

from .chat_format import ChatFormat
from .config import EngineConfig
from .errors import ModelFileError, UsageError

log = logging.getLogger(__name__)
native_log = logging.getLogger("edge_assistant.llama_cpp")

# GGML type ids for the KV cache (ggml.h).
KV_CACHE_GGML_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}
AUDIO_TOKENS_PER_SECOND = 25  # Gemma 4's audio encoder: one token per 40 ms
MAX_CLIP_SECONDS = 30  # Gemma 4's limit per audio clip; mtmd splits longer audio
FETCH_HINT = "fetch it with: edge-assistant models download"
_SILENT_TOKEN_ATTRS = (
    llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
)
_NO_POST_DECODE_CALLBACK = mtmd_cpp.mtmd_helper_post_decode_callback()  # a NULL function pointer


@dataclass
class TurnStats:
    """What one turn cost. ``evaluated_this_turn`` counts every token that went
    through the model in this turn: the new prompt text, the audio tokens, the
    generated tokens and the end-of-turn marker kept for the history."""

    prompt_tokens: int = 0
    audio_tokens: int = 0
    generated_tokens: int = 0
    evaluated_this_turn: int = 0
    context_tokens: int = 0  # tokens in the KV cache after the turn
    encode_ms: float = 0.0
    prefill_ms: float = 0.0
    first_token_ms: float = 0.0
    decode_ms: float = 0.0
    stopped_by: str = ""  # "end_of_turn", "max_tokens", "context_full" or "cancelled"


@dataclass
class TurnReply:
    text: str  # raw model text, hidden blocks included; reply_text filters it
    stats: TurnStats = field(default_factory=TurnStats)


class TokenSampler(Protocol):
    """Picks the next token from the logits of the context's last evaluated token.
    The engine owns one per model; tests pass a scripted one so a turn's reply has
    a known shape whatever the random-weight twin would say."""

    def sample(self, ctx: llama_cpp.llama_context_p) -> int: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class LlamaSampler:
    """llama.cpp's sampler chain: greedy at temperature 0, else top-k, top-p,
    temperature and a seeded draw (Google's recommended Gemma 4 settings)."""

    def __init__(self, settings: EngineConfig) -> None:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if settings.temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            seed = settings.seed if settings.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED
            if settings.top_k > 0:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(settings.top_k))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(settings.top_p, 1))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(settings.temperature))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        self._chain = chain

    def sample(self, ctx: llama_cpp.llama_context_p) -> int:
        return llama_cpp.llama_sampler_sample(self._chain, ctx, -1)

    def reset(self) -> None:
        llama_cpp.llama_sampler_reset(self._chain)

    def close(self) -> None:
        if self._chain:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


def physical_cores() -> int:
    """Physical cores available to this process: llama.cpp gains nothing from SMT
    siblings and loses when it competes with audio capture for them."""
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in available:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(available)
        cores.add((package, core))
    return max(1, len(cores))


@llama_cpp.llama_log_callback
def _route_native_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp and mtmd print a lot on load; keep it in ``--verbose`` logs."""
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        native_log.debug("%s", message)


_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        llama_cpp.llama_log_set(_route_native_log, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_log_set(_route_native_log, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(_route_native_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


def check_gguf(path: Path, what: str) -> None:
    """Fail with a clear message before llama.cpp sees a file it would choke on."""
    if not path.is_file():
        raise ModelFileError(f"{what} not found: {path}; {FETCH_HINT}")
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as error:
        raise ModelFileError(f"{what} is not readable: {path}: {error.strerror}") from None
    if magic != b"GGUF":
        raise ModelFileError(f"{what} is not a GGUF file: {path}; {FETCH_HINT}")


class GemmaEngine:
    """One loaded model + audio projector serving many turns."""

    def __init__(
        self, model_path: Path, mmproj_path: Path, settings: EngineConfig, sampler: TokenSampler | None = None
    ) -> None:
        """``sampler`` None: llama.cpp's chain from ``settings`` (:class:`LlamaSampler`)."""
        if settings.kv_cache_type not in KV_CACHE_GGML_TYPES:
            raise UsageError(f"unknown KV cache type {settings.kv_cache_type!r}")
        check_gguf(model_path, "model file")
        check_gguf(mmproj_path, "audio projector file")
        _init_backend()
        self.model_path = model_path
        self.mmproj_path = mmproj_path
        self.settings = settings
        self.threads = settings.threads or physical_cores()
        self._cancel = threading.Event()
        self._model = None
        self._ctx = None
        self._mtmd = None
        self._sampler: TokenSampler | None = sampler
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        self.chat_format = ChatFormat.from_template(self._chat_template(), self._token_text(self._bos))
        # The same for every turn: built once, not per utterance.
        self._user_turn = self.chat_format.user_turn(self._marker)
        self._user_turn_tokens = len(self.tokenize(self._user_turn))
        self._turn_end_tokens = self.tokenize(self.chat_format.turn_end)
        self._n_past = 0
        self._n_system = 0
        self.system_prompt_tokens = self._evaluate_system_prompt()

    # -- loading -----------------------------------------------------------

    def _load(self) -> None:
        settings = self.settings
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        model_params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if settings.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        self._model = llama_cpp.llama_model_load_from_file(str(self.model_path).encode(), model_params)
        if not self._model:
            raise ModelFileError(
                f"cannot load model {self.model_path} (corrupt, truncated or not a Gemma 4 model); {FETCH_HINT}"
            )
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)

        kv_type = KV_CACHE_GGML_TYPES[settings.kv_cache_type]
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = settings.n_ctx
        context_params.n_batch = settings.n_batch
        context_params.n_ubatch = settings.n_ubatch
        context_params.n_seq_max = 1
        context_params.n_threads = self.threads
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

        mtmd_params = mtmd_cpp.mtmd_context_params_default()
        mtmd_params.use_gpu = False
        mtmd_params.n_threads = self.threads
        mtmd_params.print_timings = False
        mtmd_params.warmup = False
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

    def _evaluate_system_prompt(self) -> int:
        tokens = self.tokenize(self.chat_format.system_block(self.settings.system_prompt))
        self._decode_tokens(tokens, want_logits=False)
        self._n_system = self._n_past
        log.info("system prompt evaluated: %d tokens", len(tokens))
        return len(tokens)

    def reset_history(self) -> None:
        """Forget the conversation, keep the evaluated system prompt."""
        self._truncate(self._n_system)

    def _truncate(self, n_past: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, 0, n_past, -1)
        self._n_past = n_past

    def cancel(self) -> None:
        """Stop the turn in progress (from another thread) at the next chunk or
        token; the cancelled turn leaves no trace in the conversation."""
        self._cancel.set()

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
                    batch.seq_id[index][0] = 0
                    batch.logits[index] = False
                batch.n_tokens = len(piece)
                last_piece = start + len(piece) == len(tokens)
                batch.logits[len(piece) - 1] = want_logits and last_piece
                status = llama_cpp.llama_decode(self._ctx, batch)
            finally:
                llama_cpp.llama_batch_free(batch)
            if status != 0:
                raise RuntimeError(f"llama_decode failed with status {status}")
            self._n_past += len(piece)

    # -- a turn ----------------------------------------------------------------

    def audio_token_estimate(self, seconds: float) -> int:
        return int(np.ceil(seconds * AUDIO_TOKENS_PER_SECOND))

    def respond(self, samples: np.ndarray, on_text: Callable[[str], None] | None = None) -> TurnReply:
        """Answer one spoken turn given as 16 kHz mono float32 samples.

        ``on_text`` receives the reply text as it is generated (hidden blocks
        included: the caller filters). Returns the whole text and what it cost.
        """
        if not self.settings.keep_history:
            self.reset_history()
        stats = TurnStats()
        started = time.perf_counter()
        needed = self._user_turn_tokens + self.audio_token_estimate(len(samples) / self.audio_sample_rate)
        needed += self.settings.max_tokens + 4
        if self._n_past + needed > self.settings.n_ctx and self._n_past > self._n_system:
            log.info("context would overflow (%d + %d > %d): history reset", self._n_past, needed, self.settings.n_ctx)
            self.reset_history()
        if self._n_system + needed > self.settings.n_ctx:
            raise UsageError(
                f"audio of {len(samples) / self.audio_sample_rate:.1f} s does not fit the context "
                f"(engine.n_ctx = {self.settings.n_ctx}); shorten it or raise engine.n_ctx"
            )
        n_past_before = self._n_past
        self._cancel.clear()
        self._evaluate_prompt(self._user_turn, samples, stats)
        stats.prefill_ms -= stats.encode_ms  # encode time was measured inside the prefill span
        text = self._generate(stats, started, on_text)
        if stats.stopped_by == "cancelled":
            self._truncate(n_past_before)
            stats.context_tokens = self._n_past
            return TurnReply(text, stats)
        if self.settings.keep_history:
            # Close the model's turn in the cache so the next turn continues from it.
            self._decode_tokens(self._turn_end_tokens, want_logits=False)
        stats.evaluated_this_turn = self._n_past - n_past_before
        stats.context_tokens = self._n_past
        return TurnReply(text, stats)

    def _evaluate_prompt(self, user_turn: str, samples: np.ndarray, stats: TurnStats) -> None:
        """Tokenize the user turn with the audio in place of the marker, then run
        each chunk: text chunks are decoded, audio chunks encoded by the conformer
        and their embeddings decoded into the context."""
        prefill_started = time.perf_counter()
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        bitmap = mtmd_cpp.mtmd_bitmap_init_from_audio(len(samples), samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            text = mtmd_cpp.mtmd_input_text()
            encoded = user_turn.encode("utf-8")
            text.text, text.text_len = encoded, len(encoded)
            text.add_special, text.parse_special = False, True
            bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
            status = mtmd_cpp.mtmd_tokenize(self._mtmd, chunks, ctypes.byref(text), bitmaps, 1)
            if status != 0:
                raise RuntimeError(f"mtmd_tokenize failed with status {status}")
            count = mtmd_cpp.mtmd_input_chunks_size(chunks)
            for index in range(count):
                if self._cancel.is_set():
                    break
                chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, index)
                is_last = index == count - 1
                self._evaluate_chunk(chunk, is_last, stats)
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            mtmd_cpp.mtmd_bitmap_free(bitmap)
        stats.prefill_ms += (time.perf_counter() - prefill_started) * 1000

    def _evaluate_chunk(self, chunk: mtmd_cpp.mtmd_input_chunk_p, is_last: bool, stats: TurnStats) -> None:
        n_tokens = mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)
        new_n_past = llama_cpp.llama_pos(self._n_past)  # the helpers add to it
        if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
            stats.prompt_tokens += n_tokens
            status = mtmd_cpp.mtmd_helper_eval_chunk_single(
                self._mtmd, self._ctx, chunk, self._n_past, 0, self.settings.n_batch, is_last, ctypes.byref(new_n_past)
            )
        else:
            stats.audio_tokens += n_tokens
            encode_started = time.perf_counter()
            status = mtmd_cpp.mtmd_encode_chunk(self._mtmd, chunk)
            stats.encode_ms += (time.perf_counter() - encode_started) * 1000
            if status != 0:
                raise RuntimeError(f"audio encoder failed with status {status}")
            embeddings = mtmd_cpp.mtmd_get_output_embd(self._mtmd)
            status = mtmd_cpp.mtmd_helper_decode_image_chunk(
                self._mtmd, self._ctx, chunk, embeddings, self._n_past, 0, self.settings.n_batch,
                ctypes.byref(new_n_past), _NO_POST_DECODE_CALLBACK, None,
            )
        if status != 0:
            raise RuntimeError(f"evaluating a prompt chunk failed with status {status}")
        self._n_past = new_n_past.value

    def _generate(self, stats: TurnStats, started: float, on_text: Callable[[str], None] | None) -> str:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        generation_started = time.perf_counter()
        stats.stopped_by = "max_tokens"
        for _ in range(self.settings.max_tokens):
            if self._cancel.is_set():
                stats.stopped_by = "cancelled"
                break
            token = self._sampler.sample(self._ctx)
            if stats.generated_tokens == 0:
                stats.first_token_ms = (time.perf_counter() - started) * 1000
                generation_started = time.perf_counter()
            if llama_cpp.llama_vocab_is_eog(self._vocab, token) or token in self._stop_tokens:
                stats.stopped_by = "end_of_turn"
                break
            stats.generated_tokens += 1
            piece = decoder.decode(self._reply_bytes(token))
            if piece:
                pieces.append(piece)
                if on_text is not None:
                    on_text(piece)
            if self._n_past + 1 >= self.settings.n_ctx - 2:
                stats.stopped_by = "context_full"
                break
            self._decode_tokens([token], want_logits=True)
        tail = decoder.decode(b"", final=True)
        if tail:
            pieces.append(tail)
            if on_text is not None:
                on_text(tail)
        self._sampler.reset()
        stats.decode_ms = (time.perf_counter() - generation_started) * 1000
        return "".join(pieces)
