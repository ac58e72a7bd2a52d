"""The full-size twin (--full-size): E2B's real shapes with random weights in a
Q4_K_M (or Q4_0) type mix, its exact file sizes, and the files."""

from __future__ import annotations

from pathlib import Path

from . import TwinError, check_seed, prepare_out_dir
from .projector import E2B_AUDIO, E2B_TEXT_EMBD, build_mmproj, projector_layout, projector_specs
from .tensors import TensorSpec, layout_bytes
from .text_model import Q4_0_MIX, Q4_K_M_MIX, TextHP, TypeMix, build_text_model, text_tensor_specs, text_writer
from .tokenizer import load_tokenizer_kv

# google/gemma-4-E2B-it's text model (config.json text_config, as
# conversion/gemma.py Gemma4Model writes it): the doubled FFN is on the 20
# shared-KV layers (use_double_wide_mlp: layers >= block_count - num_kv_shared_layers).
E2B_TEXT = TextHP(n_embd=E2B_TEXT_EMBD, n_layer=35, n_kv_shared=20, n_head=8, n_head_kv=1,
                  head_dim_swa=256, head_dim_full=512, n_ff=6144, n_embd_per_layer=256)
E2B_Q4_K_M_BYTES = 3_106_738_272  # unsloth/gemma-4-E2B-it-GGUF gemma-4-E2B-it-Q4_K_M.gguf (REFERENCE.md)
FULL_MODEL_NAME = "e2b-full-size.gguf"
# The text model's type mixes: (mix, file name); Q4_K_M is the default.
MIXES: dict[str, tuple[TypeMix, str]] = {
    "Q4_K_M": (Q4_K_M_MIX, FULL_MODEL_NAME),
    "Q4_0": (Q4_0_MIX, "e2b-full-size-q4_0.gguf"),
}
E2B_Q4_0_BYTES = 2_841_481_184  # ggml-org/gemma-4-E2B-it-GGUF gemma-4-E2B-it-Q4_0.gguf (REFERENCE.md)
PROJECTOR_TYPES = ("F16", "Q8_0")
FULL_SIZE_LABEL = "full-size twin"


def check_projector_type(projector_type: str) -> None:
    if projector_type not in PROJECTOR_TYPES:
        raise TwinError(f"projector type must be one of {', '.join(PROJECTOR_TYPES)}, got {projector_type!r}")


def full_mmproj_name(projector_type: str) -> str:
    return f"e2b-full-size-mmproj-{projector_type.lower()}.gguf"


def check_mix(mix: str) -> None:
    if mix not in MIXES:
        raise TwinError(f"type mix must be one of {', '.join(MIXES)}, got {mix!r}")


def full_size_plan(projector_type: str = "F16", mix: str = "Q4_K_M") -> dict[str, list[TensorSpec]]:
    """The full-size twin's tensors: {"model": ..., "mmproj": ...}, in file order,
    with the types they get (no data is made)."""
    towers = projector_specs(E2B_AUDIO, None, E2B_TEXT.n_embd, projector_type)
    return {"model": text_tensor_specs(E2B_TEXT, MIXES[mix][0]), "mmproj": towers["audio"]}


def full_size_layout(projector_type: str = "F16", mix: str = "Q4_K_M") -> dict[str, int]:
    """Exact file sizes of the full-size twin, from its plan and metadata alone."""
    plan = full_size_plan(projector_type, mix)
    _, model = layout_bytes(text_writer(load_tokenizer_kv(), E2B_TEXT, MIXES[mix][0], FULL_SIZE_LABEL), plan["model"])
    mmproj = projector_layout(E2B_AUDIO, None, E2B_TEXT.n_embd, projector_type)["file_bytes"]
    return {"model": model, "mmproj": mmproj}


def build_full_size(out_dir: Path, seed: int = 0, projector_type: str = "F16", mix: str = "Q4_K_M") -> tuple[Path, Path]:
    """Write ``out_dir/e2b-full-size.gguf`` (E2B's text model at its real size,
    Q4_K_M mix; ``mix`` Q4_0: ``e2b-full-size-q4_0.gguf``) and its audio-only
    projector at real size in ``projector_type`` (F16 or Q8_0); returns their
    paths.  Streams every tensor, so memory stays at a few hundred MB."""
    seed = check_seed(seed)
    check_projector_type(projector_type)
    check_mix(mix)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir)
    type_mix, name = MIXES[mix]
    model, mmproj = out_dir / name, out_dir / full_mmproj_name(projector_type)
    try:
        build_text_model(model, seed, load_tokenizer_kv(), E2B_TEXT, type_mix, FULL_SIZE_LABEL)
        build_full_size_mmproj(mmproj, seed, projector_type)
    except OSError as e:
        raise TwinError(f"cannot write the full-size twin into {out_dir}: {e.strerror or e}") from e
    return model, mmproj


def build_full_size_mmproj(path: Path, seed: int, projector_type: str) -> None:
    """The real-size E2B audio projector (the published files' audio half)."""
    build_mmproj(path, seed, audio=E2B_AUDIO, text_embd=E2B_TEXT.n_embd, ftype=projector_type)

