#!/usr/bin/env python3
"""Build the "Gemma 4 E2B twin": a tiny random-weight gemma4 text model plus a
tiny ``gemma4a`` audio projector that the real llama.cpp (vendored by
llama-cpp-python 0.3.36) loads and runs, so tests exercise the real audio path.

    python scripts/make_twin.py --out DIR [--seed N] [--with-vision]

writes ``DIR/twin-e2b.gguf`` and ``DIR/twin-e2b-mmproj.gguf`` (audio only);
``--with-vision`` adds ``DIR/twin-e2b-mmproj-av.gguf``, a projector with a tiny
``gemma4v`` vision tower as well, laid out like the published E2B mmproj files
(for checking ``edge-assistant models slim``).  ``ensure_twin()`` keeps a
fingerprint-keyed cache of the twin for the tests and scripts/bench_once.py.

    python scripts/make_twin.py --full-size --out DIR [--seed N] [--projector-type f16|q8_0]

writes the same model at E2B's real size instead (``DIR/e2b-full-size.gguf``,
Q4_K_M mix, ~3.1 GB, and a real-size audio projector; ``ensure_full_size_twin()``
caches it), for measuring time and memory at real size.  Same seed (and
same generator source, data, gguf and numpy) -> byte-identical files.  The
weights are noise: the twin produces gibberish, but with the real Gemma 4
tokenizer, chat template, layer layout (sliding/global pattern, shared KV,
per-layer embeddings, soft-capping, proportional RoPE) and the real conformer
graph.  See scripts/TWIN.md for which hyperparameters are real and which are
shrunk, and where in llama.cpp the tensor names and shapes come from.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import lzma
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from edge_assistant.atomic import atomic_path

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "twin_data"
TOKENIZER_DATA = DATA_DIR / "gemma4_tokenizer.npz.xz"

MODEL_NAME = "twin-e2b.gguf"
MMPROJ_NAME = "twin-e2b-mmproj.gguf"
MMPROJ_AV_NAME = "twin-e2b-mmproj-av.gguf"  # vision + audio (--with-vision)


# --------------------------------------------------------------------------
# Hyperparameters.  "real" = value of google/gemma-4-E2B-it; others are shrunk.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class TextHP:
    n_vocab: int = 262144            # real (full tokenizer)
    n_ctx_train: int = 131072        # real
    n_embd: int = 64                 # real 1536
    n_layer: int = 10                # real 35 = 7 x (4 sliding + 1 global)
    n_kv_shared: int = 5             # real 20 (of 35); here 5 of 10
    n_head: int = 2                  # real 8
    n_head_kv: int = 1               # real
    head_dim_swa: int = 32           # real 256
    head_dim_full: int = 64          # real 512 (ratio 2:1 kept)
    n_ff: int = 256                  # real 6144 (4 x n_embd kept)
    double_wide_mlp: bool = True     # real: shared-KV layers use 2 x n_ff
    n_embd_per_layer: int = 16       # real 256
    sliding_window: int = 512        # real
    swa_period: int = 5              # real: every 5th layer is full attention
    rope_base: float = 1_000_000.0   # real (full attention)
    rope_base_swa: float = 10_000.0  # real (sliding)
    partial_rotary_full: float = 0.25  # real ("proportional" RoPE on global layers)
    rms_eps: float = 1e-6            # real
    logit_softcap: float = 30.0      # real

    def is_swa(self, il: int) -> bool:
        return il % self.swa_period != self.swa_period - 1

    def n_ff_layer(self, il: int) -> int:
        shared = il >= self.n_layer - self.n_kv_shared
        return self.n_ff * 2 if (self.double_wide_mlp and shared) else self.n_ff

    def head_dim(self, il: int) -> int:
        return self.head_dim_swa if self.is_swa(il) else self.head_dim_full


@dataclass(frozen=True)
class AudioHP:
    n_mel: int = 128                 # real
    n_embd: int = 64                 # real 1024
    n_head: int = 2                  # real 8 (head dim here 32, real 128)
    n_ff: int = 256                  # real 4096 (= 4 x n_embd, as the converter writes)
    n_layer: int = 2                 # real 12
    sscp_channels: tuple[int, int] = (8, 4)  # real (128, 32)
    conv_kernel: int = 5             # real (fixed in gemma4a.cpp: left pad 4)
    out_proj: int = 48               # real 1536 (output_proj_dims)
    eps: float = 1e-6                # real


@dataclass(frozen=True)
class VisionHP:
    # Shrunk so that vision bytes : audio bytes stays the real E2B's 0.598
    # (scripts/TWIN.md): widths scaled like the audio tower's (real
    # 768 : 1024 -> 48 : 64), layers as close as an integer allows (real
    # 16 : 12 -> 2 : 2), and the position table sized to make up the rest
    # (the real-size 16x16x3 patch embedding is relatively big at this width).
    # Only written with --with-vision.
    n_embd: int = 48                 # real 768
    n_ff: int = 192                  # real 3072 (= 4 x n_embd)
    n_layer: int = 2                 # real 16
    n_head: int = 2                  # real 12 (head dim here 24, real 64)
    patch_size: int = 16             # real
    image_size: int = 224            # real (the converter writes 224; unused by llama.cpp)
    n_pos: int = 74                  # real 10240 (position_embedding_size); >= 48 for mtmd's 256-token warmup
    eps: float = 1e-6                # real
    clipped_linears: bool = True     # real for E2B (use_clipped_linears)
    standardize: bool = False        # real for E2B (no v.std_bias / v.std_scale)
    image_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # assumed: the graph rescales [0,1] itself
    image_std: tuple[float, float, float] = (1.0, 1.0, 1.0)


TEXT = TextHP()
AUDIO = AudioHP()
VISION = VisionHP()


class TwinError(Exception):
    """A user-facing error (bad arguments, unwritable output, missing data)."""


# --------------------------------------------------------------------------
# Fingerprint (cache key)
# --------------------------------------------------------------------------
def _data_files() -> list[Path]:
    return sorted(p for p in DATA_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def twin_fingerprint(seed: int = 0) -> str:
    """Hash of this generator's source, its data files, the seed and the
    versions of the packages that shape the bytes (gguf, numpy)."""
    h = hashlib.sha256()
    h.update(b"edge-assistant-twin/1\0")
    h.update(Path(__file__).resolve().read_bytes())
    for p in _data_files():
        h.update(p.relative_to(DATA_DIR).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    for pkg in ("gguf", "numpy"):
        try:
            ver = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            ver = "?"
        h.update(f"{pkg}={ver}\0".encode())
    h.update(f"seed={int(seed)}".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------
# Tokenizer data
# --------------------------------------------------------------------------
def load_tokenizer_kv() -> list[tuple[str, str, str, object]]:
    """Return [(key, kind, gguf_type_name, value)] for every tokenizer.* key,
    in the order of the real vocab GGUF.  String arrays come back as lists of
    bytes (GGUFWriter writes bytes as they are)."""
    if not TOKENIZER_DATA.is_file():
        raise TwinError(f"tokenizer data missing: {TOKENIZER_DATA} (see scripts/twin_data/extract_tokenizer.py)")
    z = np.load(io.BytesIO(lzma.decompress(TOKENIZER_DATA.read_bytes())), allow_pickle=False)
    meta = json.loads(bytes(z["meta.json"]).decode("utf-8"))
    out: list[tuple[str, str, str, object]] = []
    for key, kind, gtype, value in meta:
        if kind == "str_array":
            blob = z[key + ".blob"].tobytes()
            ends = z[key + ".offs"].astype(np.int64).tolist()
            starts = [0] + ends[:-1]
            out.append((key, kind, gtype, [blob[s:e] for s, e in zip(starts, ends)]))
        elif kind == "num_array":
            out.append((key, kind, gtype, z[key].tolist()))
        elif kind == "scalar":
            out.append((key, kind, gtype, value))
    return out


# --------------------------------------------------------------------------
# Random tensors
# --------------------------------------------------------------------------
def _rng(seed: int, name: str) -> np.random.Generator:
    # One stream per tensor name: adding a tensor does not change the others.
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _normal(seed: int, name: str, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (_rng(seed, name).standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def _norm_weight(seed: int, name: str, n: int) -> np.ndarray:
    # gemma4 RMSNorm weights are used as-is (no +1 shift): keep them near 1
    return (1.0 + _normal(seed, name, (n,), 0.05)).astype(np.float32)


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: name, numpy shape (ggml ``ne`` reversed), storage type and
    how to fill it.  ``init`` is ("normal", rng key, std), ("norm", rng key,
    None), ("absnorm", rng key, None), ("scale", rng key, None), ("const",
    None, value) or ("rope", None, partial rotary factor).  Shapes and types
    alone give a file's size, so the same specs describe the real E2B
    without making its data (``full_size_plan``)."""
    name: str
    shape: tuple[int, ...]
    dtype: str  # a GGML type name: F32, F16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K
    init: tuple[str, str | None, float | None]

    @property
    def n_params(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return _type_nbytes(self.shape, self.dtype)


def _type_nbytes(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of a tensor of ``shape`` stored as ``dtype`` (rows are whole blocks)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[dtype]]
    if shape[-1] % block:
        raise ValueError(f"a row of {shape[-1]} values is not whole {dtype} blocks of {block}")
    return int(np.prod(shape)) // block * size


def _values(seed: int, spec: TensorSpec) -> np.ndarray:
    """The float32 values of a tensor that is small enough to make as floats."""
    kind, key, arg = spec.init
    if kind == "normal":
        return _normal(seed, key, spec.shape, arg)
    if kind == "norm":
        return _norm_weight(seed, key, spec.shape[0])
    if kind == "absnorm":
        return np.abs(_norm_weight(seed, key, spec.shape[0]))
    if kind == "scale":
        return np.full(spec.shape, 0.5 + 0.5 * _rng(seed, key).random(), np.float32)
    if kind == "const":
        return np.full(spec.shape, arg, np.float32)
    if kind == "rope":
        # proportional RoPE on global layers: rotate the first ``arg`` of the
        # dims, freeze the rest (freq factor 1e30), as Gemma4Model.generate_extra_tensors
        n_rot = int(spec.shape[0] * arg)
        return np.array([1.0] * n_rot + [1e30] * (spec.shape[0] - n_rot), dtype=np.float32)
    raise ValueError(f"unknown init {kind!r} for {spec.name}")  # pragma: no cover - programming error


# K-quants are written as random blocks, never quantized from floats: the
# full-size model has ~4.6 G weights, and quantizing floats that are noise
# anyway would only cost time and memory.  gguf 0.19 cannot quantize K-quants.
QK_K = 256
_KQUANT_CHUNK_BLOCKS = 1 << 16  # blocks generated at a time (<= 14 MB)


def _uniform_std(levels: int) -> float:
    """Standard deviation of an integer uniform on ``levels`` values."""
    return float(np.sqrt((levels * levels - 1) / 12))


def _rms_uniform(lo: int, hi: int) -> float:
    """Root mean square of an integer uniform on [lo, hi]."""
    mean = (lo + hi) / 2
    return float(np.sqrt(mean * mean + _uniform_std(hi - lo + 1) ** 2))


def _pack_scale_min_k4(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """The 12-byte ``scales`` field of block_q4_K / block_q5_K (ggml-common.h)
    from eight 6-bit sub-block scales and mins per block."""
    lo_sc, hi_sc, lo_mn, hi_mn = sc[:, :4], sc[:, 4:], mn[:, :4], mn[:, 4:]
    return np.concatenate([lo_sc | ((hi_sc >> 4) << 6), lo_mn | ((hi_mn >> 4) << 6),
                           (hi_sc & 0x0F) | ((hi_mn & 0x0F) << 4)], axis=1).astype(np.uint8)


def _kquant_blocks(rng: np.random.Generator, n: int, dtype: str, std: float) -> np.ndarray:
    """``n`` random blocks of a K-quant whose values have mean 0 and standard
    deviation ``std``: uniform quants, sub-block scales in the upper half of
    their range, and a fixed super-block scale ``d`` chosen for ``std``.  With
    mins equal to scales and dmin = d * (levels - 1) / 2, each value is
    d * scale * (q - (levels - 1) / 2): centred, like trained weights."""
    def raw(width: int) -> np.ndarray:
        return np.frombuffer(rng.bytes(n * width), np.uint8).reshape(n, width)

    def f16(x: float) -> np.ndarray:
        return np.broadcast_to(np.frombuffer(np.float16(x).tobytes(), np.uint8), (n, 2))

    if dtype in ("Q4_K", "Q5_K"):
        levels = 16 if dtype == "Q4_K" else 32
        sc = rng.integers(32, 64, (n, 8), dtype=np.uint8)
        d = std / (_rms_uniform(32, 63) * _uniform_std(levels))
        qh = [raw(QK_K // 8)] if dtype == "Q5_K" else []  # the fifth bits
        parts = [f16(d), f16(d * (levels - 1) / 2), _pack_scale_min_k4(sc, sc), *qh, raw(QK_K // 2)]
    elif dtype == "Q6_K":
        sign = np.where(rng.random((n, 16)) < 0.5, -1, 1)
        scales = (sign * rng.integers(32, 128, (n, 16))).astype(np.int8).view(np.uint8)
        d = std / (_rms_uniform(32, 127) * _uniform_std(64))
        parts = [raw(QK_K // 2), raw(QK_K // 4), scales, f16(d)]  # ql, qh, scales, d
    else:  # pragma: no cover - programming error
        raise ValueError(f"no random blocks for {dtype}")
    return np.concatenate(parts, axis=1)


def _tensor_data(seed: int, spec: TensorSpec) -> Iterator[np.ndarray]:
    """The bytes of ``spec`` as arrays, in order; K-quants in chunks so a
    1.6 GB table never sits in memory."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if spec.dtype in ("Q4_K", "Q5_K", "Q6_K"):
        kind, key, std = spec.init
        assert kind == "normal", spec
        rng = _rng(seed, key)
        n_blocks = spec.n_params // QK_K
        for start in range(0, n_blocks, _KQUANT_CHUNK_BLOCKS):
            yield _kquant_blocks(rng, min(_KQUANT_CHUNK_BLOCKS, n_blocks - start), spec.dtype, std)
        return
    values = _values(seed, spec)
    if spec.dtype == "F32":
        yield values
    elif spec.dtype == "F16":
        yield values.astype(np.float16)
    else:
        yield quantize(values, GGMLQuantizationType[spec.dtype])


# --------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------
def _add_tensor_infos(writer, specs: Sequence[TensorSpec]) -> None:
    """Declare ``specs`` in the writer's tensor index (no data yet)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    for spec in specs:
        if spec.dtype in ("F32", "F16"):
            np_dtype = np.dtype(np.float32 if spec.dtype == "F32" else np.float16)
            writer.add_tensor_info(spec.name, spec.shape, np_dtype, spec.nbytes)
        else:
            qtype = GGMLQuantizationType[spec.dtype]
            block, size = GGML_QUANT_SIZES[qtype]
            byte_shape = (*spec.shape[:-1], spec.shape[-1] // block * size)
            writer.add_tensor_info(spec.name, byte_shape, np.dtype(np.uint8), spec.nbytes, raw_dtype=qtype)


def _write(writer, final: Path, specs: Sequence[TensorSpec] = (), seed: int = 0) -> None:
    """Write ``writer``'s metadata and ``specs``' data to ``final``, atomically.

    Tensor data is streamed (GGUFWriter.add_tensor would keep every array in
    memory until the end): the data section starts at an aligned offset and
    each tensor is padded to the alignment, as GGUFWriter.write_tensors_to_file
    does."""
    try:
        with atomic_path(final) as tmp:
            _add_tensor_infos(writer, specs)
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            out = writer.fout[0]
            out.write(b"\0" * (-out.tell() % writer.data_alignment))
            for spec in specs:
                written = 0
                for chunk in _tensor_data(seed, spec):
                    out.write(memoryview(np.ascontiguousarray(chunk)).cast("B"))
                    written += chunk.nbytes
                assert written == spec.nbytes, (spec, written)
                out.write(b"\0" * (-written % writer.data_alignment))
            writer.close()
    finally:
        writer.close()  # closing twice is harmless; a failed write must not leave the file open


def _layout_bytes(writer, specs: Sequence[TensorSpec]) -> tuple[int, int]:
    """(header bytes, file bytes) of a file with ``writer``'s metadata and
    ``specs``, written without any tensor data."""
    _add_tensor_infos(writer, specs)
    with tempfile.TemporaryDirectory() as tmp:
        header = Path(tmp) / "header.gguf"
        writer.write_header_to_file(path=header)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        size = header.stat().st_size
    align = writer.data_alignment
    header_bytes = -(-size // align) * align
    return header_bytes, header_bytes + sum(-(-spec.nbytes // align) * align for spec in specs)


def _add_tokenizer(writer, tok_kv) -> None:
    import gguf

    VT = gguf.GGUFValueType
    for key, kind, gtype, value in tok_kv:
        if kind in ("str_array", "num_array"):
            writer.add_key_value(key, value, VT.ARRAY, sub_type=VT[gtype])
        else:
            writer.add_key_value(key, value, VT[gtype])


# --------------------------------------------------------------------------
# The text model
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class TypeMix:
    """Which GGML type each text tensor gets.  Matrices follow llama.cpp's
    Q4_K_M rules (src/llama-quant.cpp llama_tensor_get_type_impl): ``matrix``
    by default, ``more_bits`` for ffn_down and attn_v in the layers its
    ``use_more_bits`` picks, and ``fallback`` where a row is not whole
    256-value blocks (the twin's narrow matrices).  Norms and other 1-D
    tensors are F32; per_layer_model_proj is never quantized."""
    token_embd: str
    per_layer_token_embd: str
    matrix: str
    more_bits: str
    fallback: str
    file_type: str  # gguf.LlamaFileType member name


# The twin: small embeddings in Q8_0/Q4_0 (quantized get_rows, the multimodal
# PLE row-0 cast), narrow matrices F16, and its ffn_down matrices (rows of
# 256/512) in Q4_K and Q6_K as in Q4_K_M, so the K-quant matmuls that ggml's
# AMX buffer takes on some CPUs run in every test run.
TWIN_MIX = TypeMix(token_embd="Q8_0", per_layer_token_embd="Q4_0", matrix="Q4_K", more_bits="Q6_K",
                   fallback="F16", file_type="MOSTLY_Q8_0")
# A Q4_K_M file: the tied token embedding gets the output's Q6_K; the
# per-layer table is Q5_K as in the published E2B files (scripts/TWIN.md).
Q4_K_M_MIX = TypeMix(token_embd="Q6_K", per_layer_token_embd="Q5_K", matrix="Q4_K", more_bits="Q6_K",
                     fallback="Q8_0", file_type="MOSTLY_Q4_K_M")


def _use_more_bits(i: int, n: int) -> bool:
    """llama-quant.cpp's use_more_bits: the first and last eighth, and every
    third layer in between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _matrix(mix: TypeMix, name: str, key: str, n_out: int, n_in: int, more_bits: bool = False,
            std: float | None = None) -> TensorSpec:
    """A weight matrix (numpy shape (n_out, n_in) == ggml ne [n_in, n_out])."""
    dtype = mix.fallback if n_in % QK_K else (mix.more_bits if more_bits else mix.matrix)
    return TensorSpec(name, (n_out, n_in), dtype, ("normal", key, std if std is not None else n_in ** -0.5))


def _f32(name: str, key: str, n: int) -> TensorSpec:
    return TensorSpec(name, (n,), "F32", ("norm", key, None))


def text_tensor_specs(hp: TextHP = TEXT, mix: TypeMix = TWIN_MIX) -> list[TensorSpec]:
    """Every tensor of the gemma4 text model, in file order.  Names and shapes
    from src/models/gemma4.cpp load_arch_tensors; the real E2B has no
    output.weight (tied to token_embd)."""
    E, V, P, L = hp.n_embd, hp.n_vocab, hp.n_embd_per_layer, hp.n_layer
    out = [
        TensorSpec("token_embd.weight", (V, E), mix.token_embd, ("normal", "token_embd.weight", 1.0)),
        # per-layer embeddings: [n_embd_per_layer * n_layer, n_vocab]; the largest table
        TensorSpec("per_layer_token_embd.weight", (V, L * P), mix.per_layer_token_embd,
                   ("normal", "per_layer_token_embd.weight", 1.0)),
        TensorSpec("per_layer_model_proj.weight", (L * P, E), "F16",
                   ("normal", "per_layer_model_proj.weight", E ** -0.5)),
        _f32("per_layer_proj_norm.weight", "per_layer_proj_norm.weight", P),
        _f32("output_norm.weight", "output_norm.weight", E),
        TensorSpec("rope_freqs.weight", (hp.head_dim_full // 2,), "F32", ("rope", None, hp.partial_rotary_full)),
    ]
    n_layer_kv = L - hp.n_kv_shared
    for il in range(L):
        b = f"blk.{il}."
        hd, ff = hp.head_dim(il), hp.n_ff_layer(il)
        has_kv = il < n_layer_kv  # shared-KV layers reuse an earlier layer's cache: no K/V weights
        out.append(_f32(b + "attn_norm.weight", b + "attn_norm", E))
        out.append(_matrix(mix, b + "attn_q.weight", b + "attn_q", hp.n_head * hd, E))
        if has_kv:
            out.append(_matrix(mix, b + "attn_k.weight", b + "attn_k", hp.n_head_kv * hd, E))
            # attn_v is counted over the layers that have one (i_attention_wv)
            out.append(_matrix(mix, b + "attn_v.weight", b + "attn_v", hp.n_head_kv * hd, E,
                               more_bits=_use_more_bits(il, n_layer_kv)))
        out.append(_matrix(mix, b + "attn_output.weight", b + "attn_output", E, hp.n_head * hd))
        out.append(_f32(b + "attn_q_norm.weight", b + "attn_q_norm", hd))
        if has_kv:
            out.append(_f32(b + "attn_k_norm.weight", b + "attn_k_norm", hd))
        out.append(_f32(b + "post_attention_norm.weight", b + "post_attention_norm", E))
        out.append(TensorSpec(b + "layer_output_scale.weight", (1,), "F32", ("scale", b + "los", None)))
        out.append(_f32(b + "ffn_norm.weight", b + "ffn_norm", E))
        out.append(_matrix(mix, b + "ffn_gate.weight", b + "ffn_gate", ff, E))
        out.append(_matrix(mix, b + "ffn_up.weight", b + "ffn_up", ff, E))
        out.append(_matrix(mix, b + "ffn_down.weight", b + "ffn_down", E, ff, more_bits=_use_more_bits(il, L)))
        out.append(_f32(b + "post_ffw_norm.weight", b + "post_ffw_norm", E))
        out.append(_matrix(mix, b + "inp_gate.weight", b + "inp_gate", P, E))
        out.append(_matrix(mix, b + "proj.weight", b + "proj", E, P))
        out.append(_f32(b + "post_norm.weight", b + "post_norm", E))
    return out


def _text_writer(tok_kv, hp: TextHP, mix: TypeMix, label: str):
    """A GGUFWriter with the gemma4 metadata, in the order
    convert_hf_to_gguf.py (Gemma4Model) writes it; no tensors yet."""
    import gguf

    arch = "gemma4"
    w = gguf.GGUFWriter(None, arch)
    p = f"{arch}."
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"edge-assistant Gemma 4 E2B {label} (random weights)")
    w.add_description(f"Random-weight stand-in for gemma-4-E2B-it ({label}), made by scripts/make_twin.py")
    w.add_uint32(p + "block_count", hp.n_layer)
    w.add_uint32(p + "context_length", hp.n_ctx_train)
    w.add_uint32(p + "embedding_length", hp.n_embd)
    w.add_key_value(p + "feed_forward_length", [hp.n_ff_layer(i) for i in range(hp.n_layer)],
                    gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT32)
    w.add_uint32(p + "attention.head_count", hp.n_head)
    w.add_uint32(p + "attention.head_count_kv", hp.n_head_kv)
    w.add_float32(p + "rope.freq_base", hp.rope_base)
    w.add_float32(p + "rope.freq_base_swa", hp.rope_base_swa)
    w.add_float32(p + "attention.layer_norm_rms_epsilon", hp.rms_eps)
    w.add_uint32(p + "attention.key_length", hp.head_dim_full)
    w.add_uint32(p + "attention.value_length", hp.head_dim_full)
    w.add_uint32(p + "attention.key_length_swa", hp.head_dim_swa)
    w.add_uint32(p + "attention.value_length_swa", hp.head_dim_swa)
    w.add_float32(p + "final_logit_softcapping", hp.logit_softcap)
    w.add_uint32(p + "attention.sliding_window", hp.sliding_window)
    w.add_uint32(p + "attention.shared_kv_layers", hp.n_kv_shared)
    w.add_uint32(p + "embedding_length_per_layer_input", hp.n_embd_per_layer)
    w.add_key_value(p + "attention.sliding_window_pattern", [hp.is_swa(i) for i in range(hp.n_layer)],
                    gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.BOOL)
    # global layers: full head rotated through rope_freqs (proportional RoPE);
    # sliding layers: partial_rotary_factor 1.0
    w.add_uint32(p + "rope.dimension_count", hp.head_dim_full)
    w.add_uint32(p + "rope.dimension_count_swa", hp.head_dim_swa)
    w.add_uint32("general.file_type", int(gguf.LlamaFileType[mix.file_type]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(w, tok_kv)
    return w


def build_text_model(path: Path, seed: int, tok_kv, hp: TextHP = TEXT, mix: TypeMix = TWIN_MIX,
                     label: str = "twin") -> None:
    """Write the gemma4 text model.  ``hp`` is overridable so tests can build
    deliberately broken variants (e.g. the shared-KV pitfall in TWIN.md)."""
    _write(_text_writer(tok_kv, hp, mix, label), path, text_tensor_specs(hp, mix), seed)


def _lin(name: str, key: str, n_out: int, n_in: int, dtype: str = "F16") -> TensorSpec:
    # numpy shape (n_out, n_in) == ggml ne [n_in, n_out]; std 1/sqrt(n_in) like _linear
    return TensorSpec(name, (n_out, n_in), dtype, ("normal", key, n_in ** -0.5))


def _nrm(name: str, key: str, n: int) -> TensorSpec:
    return TensorSpec(name, (n,), "F32", ("norm", key, None))


CLIP_RANGE = 1.0e4  # ClippableLinear bounds (use_clipped_linears); wide enough to be inert on noise


def _clip(name: str) -> list[TensorSpec]:
    # Gemma4ClippableLinear bounds: one-element F32 tensors (clip.cpp get_scalar)
    return [TensorSpec(f"{name}.{suffix}", (1,), "F32", ("const", None, val))
            for suffix, val in (("input_max", CLIP_RANGE), ("input_min", -CLIP_RANGE),
                                ("output_max", CLIP_RANGE), ("output_min", -CLIP_RANGE))]


def audio_tensor_specs(hp: AudioHP = AUDIO, text_embd: int = TEXT.n_embd) -> list[TensorSpec]:
    """The gemma4a conformer + its embedder (``a.*``, ``mm.a.*``), in file order.
    Shapes from tools/mtmd/models/gemma4a.cpp and clip.cpp load_tensors."""
    E, F = hp.n_embd, hp.n_ff
    c1, c2 = hp.sscp_channels
    out: list[TensorSpec] = []
    # subsampling: two 3x3 stride-2 Conv2D (kernel ne [KW, KH, IC, OC]) + LayerNorm(channels)
    out.append(TensorSpec("a.conv1d.0.weight", (c1, 1, 3, 3), "F32", ("normal", "a.conv1d.0.weight", 1.0 / 3)))
    out.append(_nrm("a.conv1d.0.norm.weight", "a.conv1d.0.norm.weight", c1))
    out.append(TensorSpec("a.conv1d.1.weight", (c2, c1, 3, 3), "F32", ("normal", "a.conv1d.1.weight", (9 * c1) ** -0.5)))
    out.append(_nrm("a.conv1d.1.norm.weight", "a.conv1d.1.norm.weight", c2))
    f_sub = hp.n_mel
    for _ in range(2):
        f_sub = (f_sub - 1) // 2 + 1  # 128 -> 64 -> 32
    out.append(_lin("a.input_projection.weight", "a.input_projection", E, c2 * f_sub))

    d_head = E // hp.n_head
    for il in range(hp.n_layer):
        b = f"a.blk.{il}."
        # FFN 1 (half step)
        out.append(_nrm(b + "ffn_norm.weight", b + "ffn_norm", E))
        out += [_lin(b + "ffn_up.weight", b + "ffn_up", F, E), *_clip(b + "ffn_up")]
        out += [_lin(b + "ffn_down.weight", b + "ffn_down", E, F), *_clip(b + "ffn_down")]
        out.append(_nrm(b + "ffn_post_norm.weight", b + "ffn_post_norm", E))
        # chunked local self-attention with relative positions
        out.append(_nrm(b + "attn_pre_norm.weight", b + "attn_pre_norm", E))
        for t in ("attn_q", "attn_k", "attn_v", "attn_out"):
            out += [_lin(b + t + ".weight", b + t, E, E), *_clip(b + t)]
        out.append(_lin(b + "attn_k_rel.weight", b + "attn_k_rel", E, E))
        # converter stores softplus(per_dim_scale): positive
        out.append(TensorSpec(b + "per_dim_scale.weight", (d_head,), "F32", ("absnorm", b + "per_dim_scale", None)))
        out.append(TensorSpec(b + "per_dim_k_scale.weight", (d_head,), "F32", ("absnorm", b + "per_dim_k_scale", None)))
        out.append(_nrm(b + "attn_post_norm.weight", b + "attn_post_norm", E))
        # light conv module: norm -> pw1 (GLU, 2E) -> causal depthwise conv (k=5) -> norm -> silu -> pw2
        out.append(_nrm(b + "conv_norm.weight", b + "conv_norm", E))  # loaded as norm_conv_w (names swapped upstream)
        out += [_lin(b + "conv_pw1.weight", b + "conv_pw1", 2 * E, E), *_clip(b + "conv_pw1")]
        out.append(TensorSpec(b + "conv_dw.weight", (E, hp.conv_kernel), "F32",
                              ("normal", b + "conv_dw", hp.conv_kernel ** -0.5)))
        out.append(_nrm(b + "norm_conv.weight", b + "norm_conv", E))  # loaded as conv_norm_w
        out += [_lin(b + "conv_pw2.weight", b + "conv_pw2", E, E), *_clip(b + "conv_pw2")]
        # FFN 2 (half step)
        out.append(_nrm(b + "ffn_norm_1.weight", b + "ffn_norm_1", E))
        out += [_lin(b + "ffn_up_1.weight", b + "ffn_up_1", F, E), *_clip(b + "ffn_up_1")]
        out += [_lin(b + "ffn_down_1.weight", b + "ffn_down_1", E, F), *_clip(b + "ffn_down_1")]
        out.append(_nrm(b + "ffn_post_norm_1.weight", b + "ffn_post_norm_1", E))
        out.append(_nrm(b + "ln2.weight", b + "ln2", E))

    # conformer output projection, then the multimodal embedder into the text model
    out.append(_lin("a.pre_encode.out.weight", "a.pre_encode.out", hp.out_proj, E))
    out.append(TensorSpec("a.pre_encode.out.bias", (hp.out_proj,), "F32", ("normal", "a.pre_encode.out.bias", 0.02)))
    out.append(_lin("mm.a.input_projection.weight", "mm.a.input_projection", text_embd, hp.out_proj))
    return out


def vision_tensor_specs(hp: VisionHP = VISION, text_embd: int = TEXT.n_embd) -> list[TensorSpec]:
    """The gemma4v ViT + its embedder (``v.*``, ``mm.input_projection``), in
    file order.  Names: gguf-py tensor_mapping (gemma4 entries) as written by
    conversion/gemma.py Gemma4VisionAudioModel; shapes: clip.cpp load_tensors
    (generic per-layer loop, GEMMA4V case) and tools/mtmd/models/gemma4v.cpp."""
    E, F, p = hp.n_embd, hp.n_ff, hp.patch_size
    d_head = E // hp.n_head
    out: list[TensorSpec] = []
    # HF sorts model.embed_vision.* before model.vision_tower.*
    out.append(_lin("mm.input_projection.weight", "mm.input_projection", text_embd, E))
    for il in range(hp.n_layer):
        b = f"v.blk.{il}."
        out.append(_nrm(b + "ln1.weight", b + "ln1", E))  # input_layernorm
        for t in ("attn_q", "attn_k", "attn_v", "attn_out"):
            out.append(_lin(b + t + ".weight", b + t, E, E))
            if hp.clipped_linears:
                out += _clip(b + t)
        out.append(_nrm(b + "attn_q_norm.weight", b + "attn_q_norm", d_head))  # per head
        out.append(_nrm(b + "attn_k_norm.weight", b + "attn_k_norm", d_head))
        out.append(_nrm(b + "attn_post_norm.weight", b + "attn_post_norm", E))  # post_attention_layernorm
        out.append(_nrm(b + "ln2.weight", b + "ln2", E))  # pre_feedforward_layernorm
        for t, n_out, n_in in (("ffn_gate", F, E), ("ffn_up", F, E), ("ffn_down", E, F)):
            out.append(_lin(b + t + ".weight", b + t, n_out, n_in))
            if hp.clipped_linears:
                out += _clip(b + t)
        out.append(_nrm(b + "ffn_post_norm.weight", b + "ffn_post_norm", E))  # post_feedforward_layernorm
        out.append(TensorSpec(b + "out_scale.weight", (1,), "F32", ("scale", b + "out_scale", None)))  # layer_scalar
    # patch embedding: Conv2D kernel ne [p, p, 3, E], no bias (the converter
    # reshapes the HF [E, p*p*3] linear); F16 in an F16 file (MmprojModel)
    out.append(TensorSpec("v.patch_embd.weight", (E, 3, p, p), "F16", ("normal", "v.patch_embd.weight", (3 * p * p) ** -0.5)))
    # learned 2-D positions: two lookup tables (x, y) of n_pos rows, always F32
    out.append(TensorSpec("v.position_embd.weight", (2, hp.n_pos, E), "F32", ("normal", "v.position_embd.weight", 0.02)))
    if hp.standardize:  # 26B/31B only; E2B has standardize = false
        out.append(TensorSpec("v.std_bias", (E,), "F32", ("normal", "v.std_bias", 0.02)))
        out.append(TensorSpec("v.std_scale", (E,), "F32", ("norm", "v.std_scale", None)))
    return out


def _mmproj_writer(with_vision: bool, audio: AudioHP, vision: VisionHP, text_embd: int, ftype: str = "F16"):
    """A GGUFWriter with the projector metadata, no tensors yet.

    Audio only: the twin's original layout.  With vision: the keys
    MmprojModel + Gemma4VisionAudioModel.set_gguf_parameters write for the
    published E2B files (both ``clip.has_*_encoder`` true, per-modality
    ``clip.{vision,audio}.projector_type``, no global ``clip.projector_type``)."""
    import gguf

    w = gguf.GGUFWriter(None, "clip")
    w.add_type(gguf.GGUFType.MMPROJ)
    file_type = int(gguf.LlamaFileType[f"MOSTLY_{ftype}"])
    if not with_vision:
        w.add_name("edge-assistant Gemma 4 E2B twin audio projector (random weights)")
        w.add_uint32("general.file_type", file_type)
        w.add_bool("clip.has_vision_encoder", False)
    else:
        w.add_name("edge-assistant Gemma 4 E2B twin vision+audio projector (random weights)")
        w.add_uint32("general.file_type", file_type)
        w.add_bool("clip.has_vision_encoder", True)
        w.add_uint32("clip.vision.projection_dim", text_embd)
        w.add_uint32("clip.vision.image_size", vision.image_size)
        w.add_uint32("clip.vision.patch_size", vision.patch_size)
        w.add_uint32("clip.vision.embedding_length", vision.n_embd)
        w.add_uint32("clip.vision.feed_forward_length", vision.n_ff)
        w.add_uint32("clip.vision.block_count", vision.n_layer)
        w.add_uint32("clip.vision.attention.head_count", vision.n_head)
        w.add_array("clip.vision.image_mean", list(vision.image_mean))
        w.add_array("clip.vision.image_std", list(vision.image_std))
    w.add_bool("clip.has_audio_encoder", True)
    w.add_uint32("clip.audio.projection_dim", text_embd)
    w.add_uint32("clip.audio.embedding_length", audio.n_embd)
    w.add_uint32("clip.audio.feed_forward_length", audio.n_ff)
    w.add_uint32("clip.audio.block_count", audio.n_layer)
    w.add_uint32("clip.audio.attention.head_count", audio.n_head)
    if with_vision:
        w.add_string("clip.vision.projector_type", gguf.VisionProjectorType.GEMMA4V)
        w.add_float32("clip.vision.attention.layer_norm_epsilon", vision.eps)
    w.add_string("clip.audio.projector_type", gguf.VisionProjectorType.GEMMA4A)
    w.add_uint32("clip.audio.num_mel_bins", audio.n_mel)
    w.add_float32("clip.audio.attention.layer_norm_epsilon", audio.eps)
    return w


def _projector_specs(audio: AudioHP, vision: VisionHP | None, text_embd: int,
                     ftype: str | None) -> dict[str, list[TensorSpec]]:
    """The projector's tensors per tower; ``ftype`` "F16"/"Q8_0" gives them
    the types the converter gives a real file, None the twin's own."""
    towers = {"audio": audio_tensor_specs(audio, text_embd)}
    if vision is not None:
        towers["vision"] = vision_tensor_specs(vision, text_embd)
    if ftype is None:
        return towers
    return {tower: [dataclasses.replace(spec, dtype=_converter_dtype(spec, ftype)) for spec in specs]
            for tower, specs in towers.items()}


def build_mmproj(path: Path, seed: int, with_vision: bool = False, audio: AudioHP = AUDIO,
                 vision: VisionHP = VISION, text_embd: int = TEXT.n_embd, ftype: str | None = None) -> None:
    """Write the twin projector: the gemma4a audio tower alone (default), or
    with a gemma4v vision tower too, laid out like the published E2B mmproj
    files.  The audio tensors are the same in both.  ``audio``/``vision``
    are overridable for experiments (e.g. how RSS scales with the tower) and
    for the full-size twin, which also sets ``text_embd`` and ``ftype``
    (the converter's types for an "F16" or "Q8_0" file)."""
    towers = _projector_specs(audio, vision if with_vision else None, text_embd, ftype)
    specs = [spec for tower in towers.values() for spec in tower]
    _write(_mmproj_writer(with_vision, audio, vision, text_embd, ftype or "F16"), path, specs, seed)


# --------------------------------------------------------------------------
# The real E2B projector, by arithmetic (no weights needed)
# --------------------------------------------------------------------------
# Hyperparameters of google/gemma-4-E2B-it's towers (config.json
# audio_config / vision_config, as read by conversion/gemma.py).  See
# scripts/TWIN.md for the sources and what is uncertain.
E2B_TEXT_EMBD = 1536
E2B_AUDIO = AudioHP(n_mel=128, n_embd=1024, n_head=8, n_ff=4096, n_layer=12,
                    sscp_channels=(128, 32), conv_kernel=5, out_proj=1536)
E2B_VISION = VisionHP(n_embd=768, n_ff=3072, n_layer=16, n_head=12, n_pos=10240)
E2B_MMPROJ_F16_BYTES = 985_654_080   # unsloth/gemma-4-E2B-it-qat-GGUF mmproj-F16.gguf (REFERENCE.md)
E2B_MMPROJ_Q8_0_BYTES = 557_368_064  # ggml-org/gemma-4-E2B-it-GGUF mmproj-gemma-4-E2B-it-Q8_0.gguf


def _converter_dtype(spec: TensorSpec, ftype: str) -> str:
    """The type convert_hf_to_gguf.py gives a tensor in an F16 or Q8_0 file.

    Where it differs from the twin: the audio subsampling projection is F32
    (Gemma4VisionAudioModel.tensor_force_quant catches "_conv" in its HF name
    subsample_conv_projection.input_proj_linear); in a non-F16 file the patch
    embedding is F32 (MmprojModel.tensor_force_quant); other matrices follow
    the file type; 1-D tensors, norms, biases, clamp scalars and the position
    table stay F32."""
    if spec.name == "a.input_projection.weight":
        return "F32"
    if spec.name == "v.patch_embd.weight":
        return "F16" if ftype == "F16" else "F32"
    if spec.dtype == "F32":
        return "F32"
    return ftype


def projector_layout(audio: AudioHP, vision: VisionHP | None, text_embd: int, ftype: str = "F16",
                     converter_types: bool = True) -> dict:
    """Bytes and parameters of a gemma4 projector of the given shape.

    Returns {"audio": {...}, "vision": {...}, "header_bytes", "file_bytes"}
    where each tower has "params", "tensors" and "bytes" (tensor data,
    without GGUF alignment padding).  ``file_bytes`` is the exact size of a
    file with this script's metadata (32-byte alignment); a converted file
    differs by the size of its extra metadata strings."""
    towers = _projector_specs(audio, vision, text_embd, ftype if converter_types else None)
    out: dict = {tower: {"params": sum(s.n_params for s in specs), "tensors": len(specs),
                         "bytes": sum(s.nbytes for s in specs)} for tower, specs in towers.items()}
    writer = _mmproj_writer(vision is not None, audio, vision or VISION, text_embd, ftype)
    out["header_bytes"], out["file_bytes"] = _layout_bytes(writer, [s for specs in towers.values() for s in specs])
    return out


def e2b_projector_estimate(ftype: str = "F16") -> dict:
    """projector_layout() for the real E2B towers (vision + audio)."""
    return projector_layout(E2B_AUDIO, E2B_VISION, E2B_TEXT_EMBD, ftype)


# --------------------------------------------------------------------------
# The full-size twin: E2B's real shapes and a Q4_K_M type mix (--full-size)
# --------------------------------------------------------------------------
# google/gemma-4-E2B-it's text model (config.json text_config, as
# conversion/gemma.py Gemma4Model writes it): the doubled FFN is on the 20
# shared-KV layers (use_double_wide_mlp: layers >= block_count - num_kv_shared_layers).
E2B_TEXT = TextHP(n_embd=E2B_TEXT_EMBD, n_layer=35, n_kv_shared=20, n_head=8, n_head_kv=1,
                  head_dim_swa=256, head_dim_full=512, n_ff=6144, n_embd_per_layer=256)
E2B_Q4_K_M_BYTES = 3_106_738_272  # unsloth/gemma-4-E2B-it-GGUF gemma-4-E2B-it-Q4_K_M.gguf (REFERENCE.md)
FULL_MODEL_NAME = "e2b-full-size.gguf"
PROJECTOR_TYPES = ("F16", "Q8_0")
FULL_SIZE_LABEL = "full-size twin"


def _check_projector_type(projector_type: str) -> None:
    if projector_type not in PROJECTOR_TYPES:
        raise TwinError(f"projector type must be one of {', '.join(PROJECTOR_TYPES)}, got {projector_type!r}")


def full_mmproj_name(projector_type: str) -> str:
    return f"e2b-full-size-mmproj-{projector_type.lower()}.gguf"


def full_size_plan(projector_type: str = "F16") -> dict[str, list[TensorSpec]]:
    """The full-size twin's tensors: {"model": ..., "mmproj": ...}, in file order,
    with the types they get (no data is made)."""
    towers = _projector_specs(E2B_AUDIO, None, E2B_TEXT.n_embd, projector_type)
    return {"model": text_tensor_specs(E2B_TEXT, Q4_K_M_MIX), "mmproj": towers["audio"]}


def full_size_layout(projector_type: str = "F16") -> dict[str, int]:
    """Exact file sizes of the full-size twin, from its plan and metadata alone."""
    plan = full_size_plan(projector_type)
    _, model = _layout_bytes(_text_writer(load_tokenizer_kv(), E2B_TEXT, Q4_K_M_MIX, FULL_SIZE_LABEL), plan["model"])
    mmproj = projector_layout(E2B_AUDIO, None, E2B_TEXT.n_embd, projector_type)["file_bytes"]
    return {"model": model, "mmproj": mmproj}


def build_full_size(out_dir: Path, seed: int = 0, projector_type: str = "F16") -> tuple[Path, Path]:
    """Write ``out_dir/e2b-full-size.gguf`` (E2B's text model at its real size,
    Q4_K_M mix) and its audio-only projector at real size in
    ``projector_type`` (F16 or Q8_0); returns their paths.  Streams every
    tensor, so memory stays at a few hundred MB."""
    seed = _check_seed(seed)
    _check_projector_type(projector_type)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    model, mmproj = out_dir / FULL_MODEL_NAME, out_dir / full_mmproj_name(projector_type)
    try:
        build_text_model(model, seed, load_tokenizer_kv(), E2B_TEXT, Q4_K_M_MIX, FULL_SIZE_LABEL)
        build_full_size_mmproj(mmproj, seed, projector_type)
    except OSError as e:
        raise TwinError(f"cannot write the full-size twin into {out_dir}: {e.strerror or e}") from e
    return model, mmproj


def build_full_size_mmproj(path: Path, seed: int, projector_type: str) -> None:
    """The real-size E2B audio projector (the published files' audio half)."""
    build_mmproj(path, seed, audio=E2B_AUDIO, text_embd=E2B_TEXT.n_embd, ftype=projector_type)


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------
def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise TwinError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def build_twin(out_dir: Path, seed: int = 0, with_vision: bool = False) -> tuple[Path, Path]:
    """Write ``out_dir/twin-e2b.gguf`` and ``out_dir/twin-e2b-mmproj.gguf``
    (audio-only projector); with ``with_vision`` also
    ``out_dir/twin-e2b-mmproj-av.gguf`` (vision + audio, like the published
    E2B projectors).

    Each file is written under a temporary name in ``out_dir`` and renamed into
    place, so a reader never sees a half-written file under the final name.
    Returns (model_path, projector_path): the vision+audio projector if
    ``with_vision``, else the audio-only one."""
    seed = _check_seed(seed)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    tok_kv = load_tokenizer_kv()
    model = out_dir / MODEL_NAME
    mmproj = out_dir / MMPROJ_NAME
    try:
        build_text_model(model, seed, tok_kv)
        build_mmproj(mmproj, seed)
        if with_vision:
            build_mmproj(out_dir / MMPROJ_AV_NAME, seed, with_vision=True)
    except OSError as e:
        raise TwinError(f"cannot write twin into {out_dir}: {e.strerror or e}") from e
    return model, (out_dir / MMPROJ_AV_NAME if with_vision else mmproj)


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise TwinError(f"--out {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TwinError(f"cannot create output directory {out_dir}: {e.strerror or e}") from e
    if not os.access(out_dir, os.W_OK):
        raise TwinError(f"output directory {out_dir} is not writable")


# --------------------------------------------------------------------------
# Cache (used by the tests' ``twin`` fixture and scripts/bench_once.py)
# --------------------------------------------------------------------------
CACHE_ENV = "EDGE_ASSISTANT_TWIN_CACHE"


def twin_cache_root() -> Path:
    """$EDGE_ASSISTANT_TWIN_CACHE, else ~/.cache/edge-assistant/twin."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edge-assistant" / "twin"


def _cache_root(cache_root: Path | None) -> Path:
    return Path(cache_root).expanduser() if cache_root is not None else twin_cache_root()


def _cached_entry(root: Path, entry: str, names: tuple[str, ...], build: Callable[[Path], object]) -> Path:
    """``root/entry``, holding the files ``names``; if any is missing, ``build``
    writes them all into a fresh temporary directory next to it, which is
    renamed into place only when complete, so an aborted or concurrent run
    never leaves a half-built entry (a concurrent loser keeps the winner's)."""
    final = root / entry

    def complete() -> bool:
        return all((final / name).is_file() for name in names)

    if complete():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry}.tmp-", dir=root))
    try:
        build(tmp)
        if final.exists() and not complete():
            shutil.rmtree(final, ignore_errors=True)  # damaged by hand: replace it
        try:
            os.rename(tmp, final)
        except OSError:
            if not complete():  # lost a race only if the winner is complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not complete():
        raise TwinError(f"twin cache {final} incomplete after build")
    return final


def ensure_twin(seed: int = 0, cache_root: Path | None = None, with_vision: bool = False) -> tuple[Path, Path]:
    """Return the cached twin for ``seed``, building it first if needed:
    (model, audio-only projector), or (model, vision+audio projector) with
    ``with_vision``.

    The cache entry is ``CACHE_ROOT/<twin_fingerprint(seed)>/`` (CACHE_ROOT:
    ``cache_root``, else $EDGE_ASSISTANT_TWIN_CACHE, else
    ~/.cache/edge-assistant/twin), so a changed generator, data file, gguf
    or numpy gets a fresh entry.  Model and audio projector are built
    together (``_cached_entry``).  The vision+audio projector is added to a
    complete entry on first request (written to a temporary name and renamed)."""
    seed = _check_seed(seed)
    root = _cache_root(cache_root)
    try:
        final = _cached_entry(root, twin_fingerprint(seed), (MODEL_NAME, MMPROJ_NAME), lambda tmp: build_twin(tmp, seed))
        if not with_vision:
            return final / MODEL_NAME, final / MMPROJ_NAME
        av = final / MMPROJ_AV_NAME
        if not av.is_file():
            build_mmproj(av, seed, with_vision=True)
        return final / MODEL_NAME, av
    except OSError as e:
        raise TwinError(f"cannot build the twin cache in {root}: {e.strerror or e}") from e


def ensure_full_size_twin(seed: int = 0, cache_root: Path | None = None,
                          projector_type: str = "F16") -> tuple[Path, Path]:
    """Return the cached full-size twin for ``seed`` (model, audio projector of
    ``projector_type``), building it first if needed (~3.4 GB, about a minute).

    Its entry is ``CACHE_ROOT/full-size-<twin_fingerprint(seed)>/``, next to the
    small twin's and built the same way, with the F16 projector; a Q8_0
    projector is added to a complete entry on first request."""
    seed = _check_seed(seed)
    _check_projector_type(projector_type)
    root = _cache_root(cache_root)
    names = (FULL_MODEL_NAME, full_mmproj_name("F16"))
    try:
        final = _cached_entry(root, f"full-size-{twin_fingerprint(seed)}", names,
                              lambda tmp: build_full_size(tmp, seed, "F16"))
        mmproj = final / full_mmproj_name(projector_type)
        if not mmproj.is_file():
            build_full_size_mmproj(mmproj, seed, projector_type)
        return final / FULL_MODEL_NAME, mmproj
    except OSError as e:
        raise TwinError(f"cannot build the full-size twin cache in {root}: {e.strerror or e}") from e


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _seed_arg(text: str) -> int:
    try:
        return _check_seed(int(text, 10))
    except (ValueError, TwinError):
        raise argparse.ArgumentTypeError(f"invalid seed {text!r} (expected an integer >= 0)") from None


def _build(args: argparse.Namespace) -> list[Path]:
    """The files the command line asks for, built; their paths."""
    if args.full_size:
        return list(build_full_size(args.out, args.seed, args.projector_type.upper()))
    model, _ = build_twin(args.out, args.seed, with_vision=args.with_vision)
    return [model.with_name(n) for n in [MODEL_NAME, MMPROJ_NAME] + ([MMPROJ_AV_NAME] if args.with_vision else [])]


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="make_twin", description="Build the tiny random-weight Gemma 4 E2B twin (model + audio projector).")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--seed", type=_seed_arg, default=0, help="random seed (default 0)")
    ap.add_argument("--with-vision", action="store_true",
                    help=f"also write {MMPROJ_AV_NAME}: a projector with a gemma4v vision tower as well as the "
                         "audio tower, laid out like the published E2B mmproj files")
    ap.add_argument("--full-size", action="store_true",
                    help=f"instead write {FULL_MODEL_NAME} (E2B's real shapes, Q4_K_M mix, ~2.8 GB) and its real-size "
                         "audio projector (scripts/TWIN.md)")
    ap.add_argument("--projector-type", choices=[t.lower() for t in PROJECTOR_TYPES],
                    help="with --full-size: the projector's type (default f16)")
    args = ap.parse_args(argv)
    if args.full_size and args.with_vision:
        ap.error("--with-vision is not available with --full-size")
    if args.projector_type and not args.full_size:
        ap.error("--projector-type needs --full-size")
    args.projector_type = args.projector_type or "f16"
    try:
        paths = _build(args)
    except TwinError as e:
        print(f"make_twin: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make_twin: interrupted", file=sys.stderr)
        return 130
    for path in paths:
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
