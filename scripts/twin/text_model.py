"""The gemma4 text model: its hyperparameters (real where it matters, shrunk
elsewhere), its tensors and type mix, its metadata, and the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .tensors import QK_K, TensorSpec, write_gguf
from .tokenizer import add_tokenizer


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



TEXT = TextHP()


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
# A Q4_0 file (the type Google's quantization-aware training targets, and the one
# ggml repacks on x86 and on ARM with dotprod): every matrix and the per-layer
# table Q4_0, the tied token embedding Q8_0 (with Q6_K it would be 97.5 MB, the
# difference, smaller than ggml-org's published Q4_0 E2B; with Q8_0 it matches).
Q4_0_MIX = TypeMix(token_embd="Q8_0", per_layer_token_embd="Q4_0", matrix="Q4_0", more_bits="Q4_0",
                   fallback="Q8_0", file_type="MOSTLY_Q4_0")


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


def text_writer(tok_kv, hp: TextHP, mix: TypeMix, label: str):
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
    add_tokenizer(w, tok_kv)
    return w


def build_text_model(path: Path, seed: int, tok_kv, hp: TextHP = TEXT, mix: TypeMix = TWIN_MIX,
                     label: str = "twin") -> None:
    """Write the gemma4 text model.  ``hp`` is overridable so tests can build
    deliberately broken variants (e.g. the shared-KV pitfall in TWIN.md)."""
    write_gguf(text_writer(tok_kv, hp, mix, label), path, text_tensor_specs(hp, mix), seed)

