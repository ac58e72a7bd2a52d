"""The Gemma 4 E2B engine: audio straight into the model's own audio encoder
through llama.cpp's mtmd library, reply text out, token by token.

Why the low-level bindings: llama-cpp-python's chat handler for Gemma 4 reads only
images, clears the KV cache on every call and cannot render template variables.
Here the engine loads once, evaluates the system prompt once, and keeps the KV
cache between turns, so each turn evaluates only its own new tokens: on a Pi 5
every token evaluated after the user stops speaking costs about 35 ms.
"""

from __future__ import annotations

import bisect
import codecs
import ctypes
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp

from ..audio.format import MODEL_SAMPLE_RATE
from ..config import EngineConfig
from ..errors import ModelFileError, UsageError
from .chat_format import ChatFormat, ToolDeclarations
from .tool_calls import CALL_CLOSE, CALL_OPEN
from .tool_loop import ToolUse, generate_with_tools

log = logging.getLogger(__name__)
native_log = logging.getLogger("edge_assistant.llama_cpp")

# GGML type ids for the KV cache (ggml.h).
KV_CACHE_GGML_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}
# llama.h enum llama_lazy_mode (the bindings declare no names for it).
LLAMA_LAZY_MODE_OFF = 0
LLAMA_LAZY_MODE_ON = 2
AUDIO_TOKENS_PER_SECOND = 25  # Gemma 4's audio encoder: one token per 40 ms
MAX_CLIP_SECONDS = 30  # Gemma 4's limit per audio clip; mtmd splits longer audio
FETCH_HINT = "fetch it with: edge-assistant models download"
_SILENT_TOKEN_ATTRS = (
    llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
)
SAMPLES_PER_AUDIO_TOKEN = 640  # 16 kHz / 25 tokens per second
# gemma4a.cpp: the conformer's attention runs in blocks of 12 tokens that see the
# whole block and 12 tokens before it, never later blocks; its convolutions pad on
# the left only, and the subsampling reads one mel frame past a token.
ENCODER_BLOCK_TOKENS = 12
ENCODER_BLOCK_SAMPLES = ENCODER_BLOCK_TOKENS * SAMPLES_PER_AUDIO_TOKEN  # 480 ms
CLIP_SAMPLES = MAX_CLIP_SECONDS * MODEL_SAMPLE_RATE  # mtmd encodes longer audio as separate 30 s clips


def encoder_reach_tokens(layers: int) -> int:
    """How far a difference at the start of an encoded window can travel forward
    through the conformer, in tokens, plus a block of margin. Encoding from a
    window start instead of the clip's start changes only its first token (the
    mel frame and the subsampling padding there); each layer's attention carries
    that into the next block (up to 24 tokens on) and its causal convolution 4
    further: 24 * layers + 4 (292 for E2B's 12 layers)."""
    return 24 * layers + 4 + ENCODER_BLOCK_TOKENS


def audio_encoder_layers(mmproj_path: Path) -> int:
    """``clip.audio.block_count`` from the projector file."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(mmproj_path)).fields["clip.audio.block_count"]
        return int(field.parts[field.data[0]][0])
    except (KeyError, ValueError, OSError) as error:
        raise ModelFileError(f"cannot read the audio encoder's layer count from {mmproj_path}: {error}") from None


def final_audio_tokens(clip_samples: int) -> int:
    """How many of a clip's audio tokens no later audio can change: those of the
    encoder blocks that are complete, one sample past their end (the subsampling
    convolution reads that far)."""
    return ENCODER_BLOCK_TOKENS * max(0, (clip_samples - 1) // ENCODER_BLOCK_SAMPLES)


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
    encode_ms: float = 0.0
    prefill_ms: float = 0.0
    first_token_ms: float = 0.0
    first_token_at: float = 0.0  # perf_counter() when the first reply token was sampled
    decode_ms: float = 0.0
    stopped_by: str = ""  # "end_of_turn", "max_tokens", "context_full", "cancelled" or "tool_call" (paused for results)


@dataclass
class _AudioChunks:
    """mtmd's chunks for one prompt and the bitmap they were made from."""

    chunks: mtmd_cpp.mtmd_input_chunks_p
    bitmap: mtmd_cpp.mtmd_bitmap_p

    def free(self) -> None:
        mtmd_cpp.mtmd_input_chunks_free(self.chunks)
        mtmd_cpp.mtmd_bitmap_free(self.bitmap)


@dataclass
class Interruption:
    """A barge-in as the audio loop saw it: how much of the raw reply text the
    user heard before it stopped. Set once from the audio thread; the engine's
    thread keeps that much of the reply in the conversation."""

    heard_chars: int | None = None


@dataclass
class _ReplyInCache:
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


# -- Weight placement on CPUs with AMX ------------------------------------------
# A llama.cpp built with -march=native on an x86 CPU with AMX puts Q4_K/Q6_K (and
# Q4_0, Q8_0, F16) weights in ggml's AMX buffer, whose matmul crashes with SIGSEGV
# at the first K-quant matmul (llama.cpp #20824, unfixed). Rebuilding without AMX
# does not reach existing installs (pip reuses its cached wheel), so the engine
# keeps every weight out of that buffer at load time instead.
AMX_CPU_FLAGS = frozenset({"amx_tile", "amx_int8"})
AMX_BUFFER = "AMX"
REPACK_BUFFER = "CPU_REPACK"
# Types whose matrices the x86 CPU_REPACK buffer takes on every CPU with AMX
# (they all have AVX2): ggml-cpu/repack.cpp ggml_repack_get_optimal_repack_type,
# Q4_0 -> q4_0_8x8 and Q4_K -> q4_K_8x8, both only for a row count divisible by 8.
# A tensor forced into CPU_REPACK that it cannot repack crashes the load.
_X86_REPACKED_TYPES = frozenset({llama_cpp.GGML_TYPE_Q4_0, llama_cpp.GGML_TYPE_Q4_K})
_REPACK_ROW_MULTIPLE = 8
# Gemma 4 weights used only as the left operand of a matmul (src/models/gemma4.cpp);
# the embedding tables are read by get_rows, which a repacked tensor cannot serve.
_MATMUL_WEIGHT = re.compile(
    r"blk\.(\d+)\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down|inp_gate|proj)\.weight"
)
_GGML_BACKEND_DEVICE_TYPE_CPU = 0


class _TensorBuftOverride(ctypes.Structure):
    """llama.h ``llama_model_tensor_buft_override`` (the bindings declare none)."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


class _GgufInitParams(ctypes.Structure):
    """gguf.h ``gguf_init_params``."""

    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@dataclass(frozen=True)
class WeightPlacement:
    """How the model's weights are placed: ``use_extra_bufts`` is llama.cpp's model
    parameter (AMX and CPU_REPACK buffers on or off); ``repacked`` are the
    ``tensor_buft_overrides`` patterns of the ``n_repacked`` matrices sent to
    CPU_REPACK; ``note`` says what was done, for the log."""

    use_extra_bufts: bool = True
    repacked: tuple[str, ...] = ()
    n_repacked: int = 0
    note: str = ""


def cpu_amx_flags(cpuinfo: str) -> frozenset[str]:
    """The AMX flags (``amx_tile``, ``amx_int8``) that /proc/cpuinfo's ``flags`` lines report."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return frozenset(flags & AMX_CPU_FLAGS)


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""  # not Linux: no flags to report


def _ggml() -> ctypes.CDLL:
    """The libggml llama_cpp loaded (its dependency libggml-base resolves through it)."""
    from llama_cpp._ggml import libggml

    for name, restype, argtypes in (
        ("ggml_backend_dev_by_type", ctypes.c_void_p, [ctypes.c_int]),
        ("ggml_backend_dev_backend_reg", ctypes.c_void_p, [ctypes.c_void_p]),
        ("ggml_backend_reg_get_proc_address", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
        ("ggml_backend_buft_name", ctypes.c_char_p, [ctypes.c_void_p]),
        ("gguf_init_from_file", ctypes.c_void_p, [ctypes.c_char_p, _GgufInitParams]),
        ("gguf_get_n_tensors", ctypes.c_int64, [ctypes.c_void_p]),
        ("gguf_get_tensor_name", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_tensor_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_tensor_ne", ctypes.POINTER(ctypes.c_int64), [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_free", None, [ctypes.c_void_p]),
    ):
        function = getattr(libggml, name)
        function.restype, function.argtypes = restype, argtypes
    return libggml


def cpu_extra_buffer_types() -> dict[str, int]:
    """The CPU backend's extra buffer types by name (e.g. ``AMX``, ``CPU_REPACK``),
    in the order llama.cpp tries them for a weight (llama-model.cpp make_cpu_buft_list)."""
    lib = _ggml()
    device = lib.ggml_backend_dev_by_type(_GGML_BACKEND_DEVICE_TYPE_CPU)
    if not device:
        return {}
    address = lib.ggml_backend_reg_get_proc_address(
        lib.ggml_backend_dev_backend_reg(device), b"ggml_backend_dev_get_extra_bufts"
    )
    if not address:
        return {}
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)(device)
    found: dict[str, int] = {}
    for i in range(64):  # a NULL-terminated array
        if not bufts or not bufts[i]:
            break
        found[lib.ggml_backend_buft_name(bufts[i]).decode()] = bufts[i]
    return found


def gguf_matrices(path: Path) -> list[tuple[str, int, int]]:
    """(name, GGML type id, rows) of every 2-D tensor in a GGUF file, read by ggml's
    own GGUF parser (metadata only: a fraction of a second for E2B)."""
    lib = _ggml()
    context = lib.gguf_init_from_file(str(path).encode(), _GgufInitParams(True, None))
    if not context:
        raise ModelFileError(f"cannot read the tensor list of {path}; {FETCH_HINT}")
    try:
        matrices = []
        for i in range(lib.gguf_get_n_tensors(context)):
            ne = lib.gguf_get_tensor_ne(context, i)
            if ne[1] > 1 and ne[2] == 1 and ne[3] == 1:
                name = lib.gguf_get_tensor_name(context, i).decode()
                matrices.append((name, lib.gguf_get_tensor_type(context, i), ne[1]))
        return matrices
    finally:
        lib.gguf_free(context)


def plan_weight_placement(
    amx_flags: frozenset[str], extra_buffers: Iterable[str], matrices: Callable[[], list[tuple[str, int, int]]]
) -> WeightPlacement:
    """Keep every weight out of ggml's AMX buffer when this ggml has one.

    llama.cpp tries the extra buffer types before plain CPU memory, AMX first; a
    ``tensor_buft_overrides`` entry naming the CPU buffer type goes through that same
    list again (llama-model-loader.cpp), so AMX can only be avoided by turning the
    extra buffer types off (``use_extra_bufts``). That also turns off repacking,
    which makes decode ~1.5x faster at real size; so the matrices CPU_REPACK takes
    on x86 are sent there by override. ``matrices`` is only called when needed."""
    extra = list(extra_buffers)
    if AMX_BUFFER not in extra:
        note = "CPU reports AMX but this llama.cpp build has no AMX buffer" if amx_flags else ""
        return WeightPlacement(note=note)
    cpu = f"CPU flags {', '.join(sorted(amx_flags))}" if amx_flags else "no AMX flags in /proc/cpuinfo"
    note = f"ggml offers its AMX buffer ({cpu}), whose matmul crashes (llama.cpp #20824): extra buffer types off"
    if REPACK_BUFFER not in extra:
        return WeightPlacement(use_extra_bufts=False, note=note)
    layers: dict[str, list[str]] = {}
    for name, ggml_type, rows in matrices():
        match = _MATMUL_WEIGHT.fullmatch(name)
        if match and ggml_type in _X86_REPACKED_TYPES and rows % _REPACK_ROW_MULTIPLE == 0:
            layers.setdefault(match.group(2), []).append(match.group(1))
    patterns = tuple(rf"^blk\.({'|'.join(ids)})\.{kind}\.weight$" for kind, ids in sorted(layers.items()))
    n_repacked = sum(len(ids) for ids in layers.values())
    note += f"; {n_repacked} Q4_0/Q4_K matrices repacked through {REPACK_BUFFER}, the rest in plain CPU memory"
    return WeightPlacement(use_extra_bufts=False, repacked=patterns, n_repacked=n_repacked, note=note)


def _apply_weight_placement(model_params: llama_cpp.llama_model_params, placement: WeightPlacement,
                            repack_buffer: int | None) -> ctypes.Array | None:
    """Set ``placement`` on ``model_params``; returns the override array, which must
    outlive the llama_model_load_from_file call that reads it."""
    model_params.use_extra_bufts = placement.use_extra_bufts
    if not placement.repacked:
        return None
    overrides = (_TensorBuftOverride * (len(placement.repacked) + 1))()
    for entry, pattern in zip(overrides, placement.repacked):
        entry.pattern = pattern.encode()
        entry.buft = repack_buffer
    model_params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
    return overrides


MADV_DONTNEED = 4  # Linux <sys/mman.h>


def mapped_ranges(path: Path, maps: str) -> list[tuple[int, int]]:
    """(start, end) of every mapping of ``path`` in a /proc/PID/maps text."""
    target = str(path.resolve())
    ranges = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            start, end = (int(value, 16) for value in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def release_mapped_pages(path: Path) -> int:
    """Unmap this process's resident pages of the mmap'd model file (they stay in
    the page cache): the bytes resident before.

    llama.cpp reads the matrices it repacks through its mapping and keeps the
    mapping, so the originals stay resident beside their repacked copy (861 MiB
    at E2B's size) although they are never read again. MADV_DONTNEED on a
    read-only file mapping only drops the page-table entries: the weights still
    used fault back in from the page cache on first use, the originals never do."""
    try:
        maps = Path("/proc/self/maps").read_text()
        before = _rss_file_bytes()
    except OSError:
        return 0  # not Linux: nothing to release
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for start, end in mapped_ranges(path, maps):
        if libc.madvise(start, end - start, MADV_DONTNEED) != 0:
            log.warning("madvise(MADV_DONTNEED) on the model mapping failed: %s", os.strerror(ctypes.get_errno()))
    return max(0, before - _rss_file_bytes())


def _rss_file_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^RssFile:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) * 1024 if match else 0


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
        tools: ToolDeclarations = (),
    ) -> None:
        """``sampler`` None: llama.cpp's chain from ``settings`` (:class:`LlamaSampler`);
        ``tools``: declarations the system prompt offers the model."""
        if settings.kv_cache_type not in KV_CACHE_GGML_TYPES:
            raise UsageError(f"unknown KV cache type {settings.kv_cache_type!r}")
        check_gguf(model_path, "model file")
        check_gguf(mmproj_path, "audio projector file")
        _init_backend()
        self.model_path = model_path
        self.mmproj_path = mmproj_path
        self.settings = settings
        self.threads = settings.threads or physical_cores()
        self._active: AudioTurn | None = None  # the turn cancel() reaches
        self._model = None
        self._ctx = None
        self._mtmd = None
        self._sampler: TokenSampler | None = sampler
        self.tools = list(tools)
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
        self._n_embd = llama_cpp.llama_model_n_embd_inp(self._model)
        self._audio_prefix_tokens, self._audio_suffix_tokens = self._split_user_turn()
        self.encoder_reach_tokens = encoder_reach_tokens(audio_encoder_layers(mmproj_path))
        self._n_past = 0
        self._n_system = 0
        self._last_reply: _ReplyInCache | None = None
        self.system_prompt_tokens = self._evaluate_system_prompt()

    # -- loading -----------------------------------------------------------

    def _load(self) -> None:
        settings = self.settings
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        model_params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if settings.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        model_params.lazy_mode = LLAMA_LAZY_MODE_ON if settings.lazy_load else LLAMA_LAZY_MODE_OFF
        extra_buffers = cpu_extra_buffer_types()
        if settings.repack:
            placement = plan_weight_placement(
                cpu_amx_flags(_read_cpuinfo()), extra_buffers, lambda: gguf_matrices(self.model_path)
            )
        else:
            placement = WeightPlacement(use_extra_bufts=False, note="extra buffer types off (engine.repack = false)")
        if placement.note:
            log.info("weights: %s", placement.note)
        overrides = _apply_weight_placement(model_params, placement, extra_buffers.get(REPACK_BUFFER))
        self._model = llama_cpp.llama_model_load_from_file(str(self.model_path).encode(), model_params)
        del overrides  # read by the load only
        if not self._model:
            raise ModelFileError(
                f"cannot load model {self.model_path} (corrupt, truncated or not a Gemma 4 model); {FETCH_HINT}"
            )
        if settings.use_mmap and (placement.use_extra_bufts or placement.repacked):
            released = release_mapped_pages(self.model_path)
            log.info("weights: %.0f MiB of the mapped model file released after load (repacked originals)", released / 2**20)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)

        kv_type = KV_CACHE_GGML_TYPES[settings.kv_cache_type]
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = settings.n_ctx
        context_params.n_batch = settings.n_batch
        context_params.n_ubatch = settings.n_ubatch
        context_params.n_seq_max = 1
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

    def _evaluate_system_prompt(self) -> int:
        tokens = self.tokenize(self.chat_format.system_block(self.settings.system_prompt, self.tools))
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
        self._last_reply = _ReplyInCache(reply.start, marks, self._n_past, interruption)
        log.info("barge-in: the history keeps %d of the reply's %d tokens (%d characters heard)",
                 len(marks), len(reply.marks), heard)

    def cancel(self) -> None:
        """Stop the turn in progress (from another thread) within the model
        evaluation running now; the cancelled turn leaves no trace in the
        conversation."""
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
                    batch.seq_id[index][0] = 0
                    batch.logits[index] = False
                batch.n_tokens = len(piece)
                last_piece = start + len(piece) == len(tokens)
                batch.logits[len(piece) - 1] = want_logits and last_piece
                status = llama_cpp.llama_decode(self._ctx, batch)
            finally:
                llama_cpp.llama_batch_free(batch)
            _check_decode(status, "llama_decode")
            self._n_past += len(piece)

    # -- a turn ----------------------------------------------------------------

    def audio_token_estimate(self, seconds: float) -> int:
        return int(np.ceil(seconds * AUDIO_TOKENS_PER_SECOND))

    def begin_turn(self, expected_seconds: float, speech_ended: bool = False) -> AudioTurn:
        """Open a user turn for up to ``expected_seconds`` of audio (for the context
        check); feed it, end its audio, generate, then commit or roll back.
        ``speech_ended``: the whole recording is already there (a file), so every
        token counts as evaluated after the end of speech."""
        return AudioTurn(self, expected_seconds, speech_ended)

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
        turn = self.begin_turn(len(samples) / self.audio_sample_rate, speech_ended=True)
        text, calls = "", []
        try:
            turn.feed(samples, evaluate=False)
            turn.end_audio()
            text, calls = generate_with_tools(turn, on_text, None, tools)
        except TurnCancelled:
            turn.stats.stopped_by = "cancelled"
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
        chunks = self._tokenize_with_audio(np.zeros(self.audio_sample_rate, dtype=np.float32), self._user_turn)
        try:
            texts = []
            for index in range(mtmd_cpp.mtmd_input_chunks_size(chunks.chunks)):
                chunk = mtmd_cpp.mtmd_input_chunks_get(chunks.chunks, index)
                if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    count = ctypes.c_size_t()
                    tokens = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                    texts.append([tokens[i] for i in range(count.value)])
        finally:
            chunks.free()
        if len(texts) != 2:
            raise ModelFileError(f"unexpected prompt layout from the audio projector {self.mmproj_path} ({len(texts)} text pieces)")
        return texts[0], texts[1]

    def _tokenize_with_audio(self, samples: np.ndarray, text: str) -> _AudioChunks:
        """mtmd's chunks for ``text`` with ``samples`` in place of its marker."""
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        bitmap = mtmd_cpp.mtmd_bitmap_init_from_audio(len(samples), samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        result = _AudioChunks(chunks, bitmap)
        prompt = mtmd_cpp.mtmd_input_text()
        encoded = text.encode("utf-8")
        prompt.text, prompt.text_len = encoded, len(encoded)
        prompt.add_special, prompt.parse_special = False, True
        bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
        status = mtmd_cpp.mtmd_tokenize(self._mtmd, chunks, ctypes.byref(prompt), bitmaps, 1)
        if status != 0:
            result.free()
            raise RuntimeError(f"mtmd_tokenize failed with status {status}")
        return result

    def _encode_clip(self, samples: np.ndarray, stats: TurnStats) -> np.ndarray:
        """Run the audio encoder over one clip (at most 30 s): its tokens'
        embeddings, (n_tokens, n_embd) float32."""
        chunks = self._tokenize_with_audio(samples, self._marker)
        try:
            audio = [
                mtmd_cpp.mtmd_input_chunks_get(chunks.chunks, index)
                for index in range(mtmd_cpp.mtmd_input_chunks_size(chunks.chunks))
                if mtmd_cpp.mtmd_input_chunk_get_type(mtmd_cpp.mtmd_input_chunks_get(chunks.chunks, index))
                == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_AUDIO
            ]
            if len(audio) != 1:
                raise RuntimeError(f"a clip of {len(samples)} samples gave {len(audio)} audio chunks, not one")
            n_tokens = mtmd_cpp.mtmd_input_chunk_get_n_tokens(audio[0])
            started = time.perf_counter()
            status = mtmd_cpp.mtmd_encode_chunk(self._mtmd, audio[0])
            stats.encode_ms += (time.perf_counter() - started) * 1000
            if status != 0:
                raise RuntimeError(f"audio encoder failed with status {status}")
            output = mtmd_cpp.mtmd_get_output_embd(self._mtmd)
            return np.ctypeslib.as_array(output, shape=(n_tokens * self._n_embd,)).reshape(n_tokens, self._n_embd).copy()
        finally:
            chunks.free()

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
                    batch.seq_id[index][0] = 0
                    batch.logits[index] = False
                batch.n_tokens = len(piece)
                status = llama_cpp.llama_decode(self._ctx, batch)
            finally:
                llama_cpp.llama_batch_free(batch)
            _check_decode(status, "llama_decode of audio embeddings")
            self._n_past += len(piece)

    def check_cache(self) -> None:
        """The KV cache holds exactly the positions the bookkeeping says."""
        last = llama_cpp.llama_memory_seq_pos_max(self._memory, 0)
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
        position) after each token evaluated: what a barge-in cuts by;
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
        stats.stopped_by = "max_tokens"
        call_closed = False
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
            marks.append((text_length, self._n_past))
        tail = decoder.decode(b"", final=True)
        if tail:
            pieces.append(tail)
            if on_text is not None:
                on_text(tail)
        stats.decode_ms += (time.perf_counter() - generation_started) * 1000
        return "".join(pieces)


class AudioTurn:
    """One user turn, driven step by step on the engine's thread: the fixed text
    before the audio is evaluated when the turn opens, audio is fed as it is
    heard, :meth:`end_audio` closes it, :meth:`generate` answers, and
    :meth:`commit` keeps the turn in the conversation or :meth:`rollback` removes
    it from the KV cache.

    Streaming is exact: each fed step re-encodes the current 30 s clip from its
    start (as the one-shot path encodes it) and evaluates only the tokens no later
    audio can change (:func:`final_audio_tokens`). Audio tokens are causal in the
    language model, so the cache ends up as if the whole clip had been evaluated
    at once. Only another thread's :meth:`cancel` is safe to call concurrently.
    """

    def __init__(self, engine: GemmaEngine, expected_seconds: float, speech_ended: bool = False) -> None:
        if engine._active is not None:
            raise RuntimeError("a turn is already open on this engine")
        engine._check_room(expected_seconds)
        self.engine = engine
        self.stats = TurnStats()
        self._cancelled = threading.Event()
        self._opened = time.perf_counter()
        self._start = engine._n_past
        self._speech_end = engine._n_past if speech_ended else None  # cache position when the speech ended
        self._samples = np.zeros(0, dtype=np.float32)
        self._clip_tokens: list[int] = []  # per 30 s clip: audio tokens in the cache
        self._clip_whole: list[bool] = []  # per clip: all its tokens are in the cache
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
        otherwise (cancelled, failed) roll it back."""
        heard = interruption.heard_chars if interruption is not None else None
        self._count_after_speech_end()
        if heard is not None and self._audio_ended and not self._closed:
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
            reply = _ReplyInCache(
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
            if index == len(self._clip_tokens):
                self._clip_tokens.append(0)
                self._clip_whole.append(False)
            if self._clip_whole[index]:
                continue
            clip = self._clip(index)
            whole = final or index < clips - 1
            wanted = None if whole else final_audio_tokens(len(clip))
            if wanted is not None and wanted <= self._clip_tokens[index]:
                return  # nothing new is final yet
            # Encode from a block boundary far enough back that the window's own
            # start cannot reach the tokens needed: the same values as from the
            # clip's start, for a bounded cost per step.
            done = self._clip_tokens[index]
            skipped = max(0, done - self.engine.encoder_reach_tokens) // ENCODER_BLOCK_TOKENS * ENCODER_BLOCK_TOKENS
            embeddings = self.engine._encode_clip(clip[skipped * SAMPLES_PER_AUDIO_TOKEN :], self.stats)
            total = skipped + len(embeddings)
            upto = total if wanted is None else min(wanted, total)
            new = embeddings[done - skipped : upto - skipped]
            if len(new):
                started = time.perf_counter()
                self.engine._decode_embeddings(new, self._cancelled)
                self.stats.prefill_ms += (time.perf_counter() - started) * 1000
                self.stats.audio_tokens += len(new)
            self._clip_tokens[index] = upto
            self._clip_whole[index] = whole

    def _count_after_speech_end(self) -> None:
        """Prompt tokens (audio and text, not the reply) evaluated after the
        speech ended."""
        with self._position_lock:
            if self._speech_end is not None:
                prompt_end = self.engine._n_past if self._reply_start is None else self._reply_start
                self.stats.after_speech_end = max(0, prompt_end - self._speech_end)

    def _forget_tokens_beyond(self, samples: int) -> None:
        """Keep only the audio tokens the first ``samples`` make final (up to the
        last complete encoder block of their last clip): what no change to the
        audio after them can alter."""
        clips = -(-samples // CLIP_SAMPLES)
        self._clip_tokens = self._clip_tokens[:clips]
        self._clip_whole = self._clip_whole[:clips]
        if self._clip_tokens:
            last = clips - 1
            last_clip_samples = samples - last * CLIP_SAMPLES
            self._clip_tokens[last] = min(self._clip_tokens[last], final_audio_tokens(last_clip_samples))
            self._clip_whole[last] = False
        kept = self._audio_start + sum(self._clip_tokens)
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
