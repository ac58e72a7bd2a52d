"""Random tensors and GGUF files: what each tensor is (TensorSpec), its random
values or K-quant blocks, and files written streamed and atomically."""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_assistant.atomic import atomic_path


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
    without making its data (``full_size.full_size_plan``)."""
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


# K-quants and Q4_0 are written as random blocks, never quantized from floats:
# the full-size model has ~4.6 G weights, and quantizing floats that are noise
# anyway would only cost time and memory.  gguf 0.19 cannot quantize K-quants.
QK_K = 256
QK4_0 = 32
RANDOM_BLOCK_TYPES = {"Q4_0": QK4_0, "Q4_K": QK_K, "Q5_K": QK_K, "Q6_K": QK_K}  # written as random blocks
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
    """``n`` random blocks of a K-quant (or Q4_0) whose values have mean 0 and standard
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
    elif dtype == "Q4_0":  # 32 values a block: d, then 4-bit quants, value = d * (q - 8), q in 1..15 (centred)
        q = rng.integers(1, 16, (n, QK4_0), dtype=np.uint8)
        parts = [f16(std / _uniform_std(15)), q[:, : QK4_0 // 2] | (q[:, QK4_0 // 2 :] << 4)]
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

    if spec.dtype in RANDOM_BLOCK_TYPES:
        kind, key, std = spec.init
        assert kind == "normal", spec
        rng = _rng(seed, key)
        n_blocks = spec.n_params // RANDOM_BLOCK_TYPES[spec.dtype]
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


def write_gguf(writer, final: Path, specs: Sequence[TensorSpec] = (), seed: int = 0) -> None:
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


def layout_bytes(writer, specs: Sequence[TensorSpec]) -> tuple[int, int]:
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

