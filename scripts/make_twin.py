#!/usr/bin/env python3
"""Build the "Gemma 4 E2B twin": a tiny random-weight gemma4 text model plus a
tiny ``gemma4a`` audio projector that the real llama.cpp (vendored by
llama-cpp-python 0.3.36) loads and runs, so tests exercise the real audio path.

    python scripts/make_twin.py --out DIR [--seed N]

writes ``DIR/twin-e2b.gguf`` and ``DIR/twin-e2b-mmproj.gguf``.  ``ensure_twin()``
keeps a fingerprint-keyed cache of the twin for the tests and
scripts/bench_once.py.  Same seed (and
same generator source, data, gguf and numpy) -> byte-identical files.  The
weights are noise: the twin produces gibberish, but with the real Gemma 4
tokenizer, chat template, layer layout (sliding/global pattern, shared KV,
per-layer embeddings, soft-capping, proportional RoPE) and the real conformer
graph.  See scripts/TWIN.md for which hyperparameters are real and which are
shrunk, and where in llama.cpp the tensor names and shapes come from.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "twin_data"
TOKENIZER_DATA = DATA_DIR / "gemma4_tokenizer.npz.xz"

MODEL_NAME = "twin-e2b.gguf"
MMPROJ_NAME = "twin-e2b-mmproj.gguf"


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


TEXT = TextHP()
AUDIO = AudioHP()


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


def _linear(seed: int, name: str, n_out: int, n_in: int, std: float | None = None) -> np.ndarray:
    # numpy shape (n_out, n_in) == ggml ne [n_in, n_out]
    return _normal(seed, name, (n_out, n_in), std if std is not None else n_in ** -0.5)


# --------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------
def _tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def _write(writer, final: Path) -> None:
    tmp = _tmp_path(final)
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, final)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


def _add_tokenizer(writer, tok_kv) -> None:
    import gguf

    VT = gguf.GGUFValueType
    for key, kind, gtype, value in tok_kv:
        if kind in ("str_array", "num_array"):
            writer.add_key_value(key, value, VT.ARRAY, sub_type=VT[gtype])
        else:
            writer.add_key_value(key, value, VT[gtype])


def build_text_model(path: Path, seed: int, tok_kv, hp: TextHP = TEXT) -> None:
    """Write the gemma4 text model.  ``hp`` is overridable so tests can build
    deliberately broken variants (e.g. the shared-KV pitfall in TWIN.md)."""
    import gguf
    from gguf.quants import quantize

    Q = gguf.GGMLQuantizationType
    arch = "gemma4"
    w = gguf.GGUFWriter(None, arch)
    p = f"{arch}."

    # --- metadata, in the order convert_hf_to_gguf.py (Gemma4Model) writes it
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name("edge-assistant Gemma 4 E2B twin (random weights)")
    w.add_description("Tiny random-weight stand-in for gemma-4-E2B-it, made by scripts/make_twin.py")
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
    w.add_uint32("general.file_type", int(gguf.LlamaFileType.MOSTLY_Q8_0))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(w, tok_kv)

    # --- tensors (shapes from src/models/gemma4.cpp load_arch_tensors)
    def add(name: str, arr: np.ndarray, qtype=None) -> None:
        if qtype is None or qtype == Q.F32:
            w.add_tensor(name, arr.astype(np.float32))
        elif qtype == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, quantize(arr, qtype), raw_dtype=qtype)

    E, V, P, L = hp.n_embd, hp.n_vocab, hp.n_embd_per_layer, hp.n_layer
    # token embeddings (tied with the output head, as in the real model)
    add("token_embd.weight", _normal(seed, "token_embd.weight", (V, E), 1.0), Q.Q8_0)
    # per-layer embeddings: [n_embd_per_layer * n_layer, n_vocab]; the largest table
    add("per_layer_token_embd.weight", _normal(seed, "per_layer_token_embd.weight", (V, L * P), 1.0), Q.Q4_0)
    add("per_layer_model_proj.weight", _linear(seed, "per_layer_model_proj.weight", L * P, E), Q.F16)
    add("per_layer_proj_norm.weight", _norm_weight(seed, "per_layer_proj_norm.weight", P))
    add("output_norm.weight", _norm_weight(seed, "output_norm.weight", E))
    # proportional RoPE for global layers: rotate the first partial_rotary_full
    # of the dims, freeze the rest (freq factor 1e30), as Gemma4Model.generate_extra_tensors
    n_rot = int(hp.head_dim_full * hp.partial_rotary_full / 2)
    rope = np.array([1.0] * n_rot + [1e30] * (hp.head_dim_full // 2 - n_rot), dtype=np.float32)
    add("rope_freqs.weight", rope)

    n_layer_kv = L - hp.n_kv_shared
    for il in range(L):
        b = f"blk.{il}."
        hd = hp.head_dim(il)
        ff = hp.n_ff_layer(il)
        has_kv = il < n_layer_kv
        add(b + "attn_norm.weight", _norm_weight(seed, b + "attn_norm", E))
        add(b + "attn_q.weight", _linear(seed, b + "attn_q", hp.n_head * hd, E), Q.F16)
        if has_kv:  # shared-KV layers reuse an earlier layer's cache: no K/V weights needed
            add(b + "attn_k.weight", _linear(seed, b + "attn_k", hp.n_head_kv * hd, E), Q.F16)
            add(b + "attn_v.weight", _linear(seed, b + "attn_v", hp.n_head_kv * hd, E), Q.F16)
        add(b + "attn_output.weight", _linear(seed, b + "attn_output", E, hp.n_head * hd), Q.F16)
        add(b + "attn_q_norm.weight", _norm_weight(seed, b + "attn_q_norm", hd))
        if has_kv:
            add(b + "attn_k_norm.weight", _norm_weight(seed, b + "attn_k_norm", hd))
        add(b + "post_attention_norm.weight", _norm_weight(seed, b + "post_attention_norm", E))
        add(b + "layer_output_scale.weight", np.array([0.5 + 0.5 * _rng(seed, b + "los").random()], np.float32))
        add(b + "ffn_norm.weight", _norm_weight(seed, b + "ffn_norm", E))
        add(b + "ffn_gate.weight", _linear(seed, b + "ffn_gate", ff, E), Q.F16)
        add(b + "ffn_up.weight", _linear(seed, b + "ffn_up", ff, E), Q.F16)
        add(b + "ffn_down.weight", _linear(seed, b + "ffn_down", E, ff), Q.F16)
        add(b + "post_ffw_norm.weight", _norm_weight(seed, b + "post_ffw_norm", E))
        add(b + "inp_gate.weight", _linear(seed, b + "inp_gate", P, E), Q.F16)
        add(b + "proj.weight", _linear(seed, b + "proj", E, P), Q.F16)
        add(b + "post_norm.weight", _norm_weight(seed, b + "post_norm", E))

    _write(w, path)


def build_mmproj(path: Path, seed: int) -> None:
    import gguf

    hp = AUDIO
    text_embd = TEXT.n_embd
    w = gguf.GGUFWriter(None, "clip")
    Q = gguf.GGMLQuantizationType

    # --- metadata (MmprojModel + Gemma4VisionAudioModel.set_gguf_parameters,
    # audio part only; tools/mtmd/clip.cpp load_hparams reads these)
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_name("edge-assistant Gemma 4 E2B twin audio projector (random weights)")
    w.add_uint32("general.file_type", int(gguf.LlamaFileType.MOSTLY_F16))
    w.add_bool("clip.has_vision_encoder", False)
    w.add_bool("clip.has_audio_encoder", True)
    w.add_uint32("clip.audio.projection_dim", text_embd)
    w.add_uint32("clip.audio.embedding_length", hp.n_embd)
    w.add_uint32("clip.audio.feed_forward_length", hp.n_ff)
    w.add_uint32("clip.audio.block_count", hp.n_layer)
    w.add_uint32("clip.audio.attention.head_count", hp.n_head)
    w.add_string("clip.audio.projector_type", gguf.VisionProjectorType.GEMMA4A)
    w.add_uint32("clip.audio.num_mel_bins", hp.n_mel)
    w.add_float32("clip.audio.attention.layer_norm_epsilon", hp.eps)

    def add(name: str, arr: np.ndarray, qtype=None) -> None:
        w.add_tensor(name, arr.astype(np.float16 if qtype == Q.F16 else np.float32))

    clip_range = 1.0e4  # ClippableLinear bounds (use_clipped_linears); wide enough to be inert on noise

    def add_clip(name: str) -> None:
        for suffix, val in (("input_max", clip_range), ("input_min", -clip_range),
                            ("output_max", clip_range), ("output_min", -clip_range)):
            add(f"{name}.{suffix}", np.array([val], np.float32))

    E, F = hp.n_embd, hp.n_ff
    c1, c2 = hp.sscp_channels
    # subsampling: two 3x3 stride-2 Conv2D (kernel ne [KW, KH, IC, OC]) + LayerNorm(channels)
    add("a.conv1d.0.weight", _normal(seed, "a.conv1d.0.weight", (c1, 1, 3, 3), 1.0 / 3))
    add("a.conv1d.0.norm.weight", _norm_weight(seed, "a.conv1d.0.norm.weight", c1))
    add("a.conv1d.1.weight", _normal(seed, "a.conv1d.1.weight", (c2, c1, 3, 3), (9 * c1) ** -0.5))
    add("a.conv1d.1.norm.weight", _norm_weight(seed, "a.conv1d.1.norm.weight", c2))
    f_sub = hp.n_mel
    for _ in range(2):
        f_sub = (f_sub - 1) // 2 + 1  # 128 -> 64 -> 32
    add("a.input_projection.weight", _linear(seed, "a.input_projection", E, c2 * f_sub), Q.F16)

    d_head = E // hp.n_head
    for il in range(hp.n_layer):
        b = f"a.blk.{il}."
        # FFN 1 (half step)
        add(b + "ffn_norm.weight", _norm_weight(seed, b + "ffn_norm", E))
        add(b + "ffn_up.weight", _linear(seed, b + "ffn_up", F, E), Q.F16)
        add_clip(b + "ffn_up")
        add(b + "ffn_down.weight", _linear(seed, b + "ffn_down", E, F), Q.F16)
        add_clip(b + "ffn_down")
        add(b + "ffn_post_norm.weight", _norm_weight(seed, b + "ffn_post_norm", E))
        # chunked local self-attention with relative positions
        add(b + "attn_pre_norm.weight", _norm_weight(seed, b + "attn_pre_norm", E))
        for t in ("attn_q", "attn_k", "attn_v", "attn_out"):
            add(b + t + ".weight", _linear(seed, b + t, E, E), Q.F16)
            add_clip(b + t)
        add(b + "attn_k_rel.weight", _linear(seed, b + "attn_k_rel", E, E), Q.F16)
        # converter stores softplus(per_dim_scale): positive
        add(b + "per_dim_scale.weight", np.abs(_norm_weight(seed, b + "per_dim_scale", d_head)))
        add(b + "per_dim_k_scale.weight", np.abs(_norm_weight(seed, b + "per_dim_k_scale", d_head)))
        add(b + "attn_post_norm.weight", _norm_weight(seed, b + "attn_post_norm", E))
        # light conv module: norm -> pw1 (GLU, 2E) -> causal depthwise conv (k=5) -> norm -> silu -> pw2
        add(b + "conv_norm.weight", _norm_weight(seed, b + "conv_norm", E))  # loaded as norm_conv_w (names swapped upstream)
        add(b + "conv_pw1.weight", _linear(seed, b + "conv_pw1", 2 * E, E), Q.F16)
        add_clip(b + "conv_pw1")
        add(b + "conv_dw.weight", _normal(seed, b + "conv_dw", (E, hp.conv_kernel), hp.conv_kernel ** -0.5))
        add(b + "norm_conv.weight", _norm_weight(seed, b + "norm_conv", E))  # loaded as conv_norm_w
        add(b + "conv_pw2.weight", _linear(seed, b + "conv_pw2", E, E), Q.F16)
        add_clip(b + "conv_pw2")
        # FFN 2 (half step)
        add(b + "ffn_norm_1.weight", _norm_weight(seed, b + "ffn_norm_1", E))
        add(b + "ffn_up_1.weight", _linear(seed, b + "ffn_up_1", F, E), Q.F16)
        add_clip(b + "ffn_up_1")
        add(b + "ffn_down_1.weight", _linear(seed, b + "ffn_down_1", E, F), Q.F16)
        add_clip(b + "ffn_down_1")
        add(b + "ffn_post_norm_1.weight", _norm_weight(seed, b + "ffn_post_norm_1", E))
        add(b + "ln2.weight", _norm_weight(seed, b + "ln2", E))

    # conformer output projection, then the multimodal embedder into the text model
    add("a.pre_encode.out.weight", _linear(seed, "a.pre_encode.out", hp.out_proj, E), Q.F16)
    add("a.pre_encode.out.bias", _normal(seed, "a.pre_encode.out.bias", (hp.out_proj,), 0.02))
    add("mm.a.input_projection.weight", _linear(seed, "mm.a.input_projection", text_embd, hp.out_proj), Q.F16)

    _write(w, path)


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------
def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise TwinError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def build_twin(out_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``out_dir/twin-e2b.gguf`` and ``out_dir/twin-e2b-mmproj.gguf``.

    Each file is written under a temporary name in ``out_dir`` and renamed into
    place, so a reader never sees a half-written file under the final name.
    Returns (model_path, mmproj_path)."""
    seed = _check_seed(seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TwinError(f"--out {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TwinError(f"cannot create output directory {out_dir}: {e.strerror or e}") from e
    if not os.access(out_dir, os.W_OK):
        raise TwinError(f"output directory {out_dir} is not writable")

    tok_kv = load_tokenizer_kv()
    model = out_dir / MODEL_NAME
    mmproj = out_dir / MMPROJ_NAME
    try:
        build_text_model(model, seed, tok_kv)
        build_mmproj(mmproj, seed)
    except OSError as e:
        raise TwinError(f"cannot write twin into {out_dir}: {e.strerror or e}") from e
    return model, mmproj


# --------------------------------------------------------------------------
# Cache (used by the tests' ``twin`` fixture and scripts/bench_once.py)
# --------------------------------------------------------------------------
CACHE_ENV = "EDGE_ASSISTANT_TWIN_CACHE"


def twin_cache_root() -> Path:
    """$EDGE_ASSISTANT_TWIN_CACHE, else ~/.cache/edge-assistant/twin."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edge-assistant" / "twin"


def ensure_twin(seed: int = 0, cache_root: Path | None = None) -> tuple[Path, Path]:
    """Return the cached twin for ``seed``, building it first if needed:
    (model, audio projector).

    The cache entry is ``CACHE_ROOT/<twin_fingerprint(seed)>/`` (CACHE_ROOT:
    ``cache_root``, else $EDGE_ASSISTANT_TWIN_CACHE, else
    ~/.cache/edge-assistant/twin), so a changed generator, data file, gguf
    or numpy gets a fresh entry.  Model and audio projector are built into
    a fresh temporary directory next to it and renamed into place only
    when both are complete, so an aborted or concurrent run never leaves a
    half-built entry."""
    seed = _check_seed(seed)
    fp = twin_fingerprint(seed)
    root = Path(cache_root).expanduser() if cache_root is not None else twin_cache_root()
    final = root / fp
    model, mmproj = final / MODEL_NAME, final / MMPROJ_NAME

    def complete() -> bool:
        return model.is_file() and mmproj.is_file()

    try:
        if not complete():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{fp}.tmp-", dir=root))
            try:
                build_twin(tmp, seed)
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
        return model, mmproj
    except OSError as e:
        raise TwinError(f"cannot build the twin cache in {root}: {e.strerror or e}") from e


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _seed_arg(text: str) -> int:
    try:
        return _check_seed(int(text, 10))
    except (ValueError, TwinError):
        raise argparse.ArgumentTypeError(f"invalid seed {text!r} (expected an integer >= 0)") from None


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="make_twin", description="Build the tiny random-weight Gemma 4 E2B twin (model + audio projector).")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--seed", type=_seed_arg, default=0, help="random seed (default 0)")
    args = ap.parse_args(argv)
    try:
        model, mmproj = build_twin(args.out, args.seed)
    except TwinError as e:
        print(f"make_twin: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make_twin: interrupted", file=sys.stderr)
        return 130
    for path in (model, mmproj):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
