"""The multimodal projector: the gemma4a audio tower (and a gemma4v vision tower
for --with-vision), its metadata and file, and the real E2B projector's size."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .tensors import TensorSpec, layout_bytes, write_gguf
from .text_model import TEXT


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



AUDIO = AudioHP()
VISION = VisionHP()


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


def projector_specs(audio: AudioHP, vision: VisionHP | None, text_embd: int,
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
    towers = projector_specs(audio, vision if with_vision else None, text_embd, ftype)
    specs = [spec for tower in towers.values() for spec in tower]
    write_gguf(_mmproj_writer(with_vision, audio, vision, text_embd, ftype or "F16"), path, specs, seed)


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
    towers = projector_specs(audio, vision, text_embd, ftype if converter_types else None)
    out: dict = {tower: {"params": sum(s.n_params for s in specs), "tensors": len(specs),
                         "bytes": sum(s.nbytes for s in specs)} for tower, specs in towers.items()}
    writer = _mmproj_writer(vision is not None, audio, vision or VISION, text_embd, ftype)
    out["header_bytes"], out["file_bytes"] = layout_bytes(writer, [s for specs in towers.values() for s in specs])
    return out


def e2b_projector_estimate(ftype: str = "F16") -> dict:
    """projector_layout() for the real E2B towers (vision + audio)."""
    return projector_layout(E2B_AUDIO, E2B_VISION, E2B_TEXT_EMBD, ftype)

