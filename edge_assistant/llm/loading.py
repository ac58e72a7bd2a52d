"""Loading the model and placing its weights: the llama.cpp backend, the CPU's
buffer types (AMX, repacking), mapped-page release and checks of GGUF files."""

from __future__ import annotations

import ctypes
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import llama_cpp
from llama_cpp import mtmd_cpp

from ..config import EngineConfig
from ..errors import ModelFileError

log = logging.getLogger(__name__)
native_log = logging.getLogger("edge_assistant.llama_cpp")

# GGML type ids for the KV cache (ggml.h).
KV_CACHE_GGML_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}
# llama.h enum llama_lazy_mode (the bindings declare no names for it).
LLAMA_LAZY_MODE_OFF = 0
LLAMA_LAZY_MODE_ON = 2
FETCH_HINT = "fetch it with: edge-assistant models download"


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


def load_model(model_path: Path, settings: EngineConfig) -> llama_cpp.llama_model_p:
    """The text model on the CPU, its weights placed as :func:`plan_weight_placement`
    says (or extra buffer types off with ``repack`` false) and, when mmap'd, the
    pages of the repacked originals released."""
    model_params = llama_cpp.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model_params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if settings.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
    model_params.lazy_mode = LLAMA_LAZY_MODE_ON if settings.lazy_load else LLAMA_LAZY_MODE_OFF
    extra_buffers = cpu_extra_buffer_types()
    if settings.repack:
        placement = plan_weight_placement(
            cpu_amx_flags(_read_cpuinfo()), extra_buffers, lambda: gguf_matrices(model_path)
        )
    else:
        placement = WeightPlacement(use_extra_bufts=False, note="extra buffer types off (engine.repack = false)")
    if placement.note:
        log.info("weights: %s", placement.note)
    overrides = _apply_weight_placement(model_params, placement, extra_buffers.get(REPACK_BUFFER))
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), model_params)
    del overrides  # read by the load only
    if not model:
        raise ModelFileError(
            f"cannot load model {model_path} (corrupt, truncated or not a Gemma 4 model); {FETCH_HINT}"
        )
    if settings.use_mmap and (placement.use_extra_bufts or placement.repacked):
        released = release_mapped_pages(model_path)
        log.info("weights: %.0f MiB of the mapped model file released after load (repacked originals)", released / 2**20)
    return model


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
