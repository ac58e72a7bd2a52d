"""An audio-only copy of a vision+audio projector: llama.cpp loads every encoder
a projector declares, and a 4 GB Pi has no RAM to spare for vision."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_path
from ..errors import ModelFileError
from .manifest import human_size

if TYPE_CHECKING:
    from gguf import GGUFReader

logger = logging.getLogger(__package__)

# Metadata and tensor names from llama.cpp tools/mtmd (clip-impl.h, clip.cpp): the
# loader reads "clip.vision.*" only for the vision encoder and the modality flags
# decide which encoders it builds. The gemma4a audio encoder loads "a.*" tensors and
# its embedder "mm.a.*"; the vision encoder "v.*" and its embedder "mm.*".
_HAS_VISION_KEY = "clip.has_vision_encoder"
_HAS_AUDIO_KEY = "clip.has_audio_encoder"
_VISION_KEY_PREFIX = "clip.vision."


def slim_projector(src: Path, dst: Path, overwrite: bool = False) -> Path:
    """Write an audio-only copy of a vision+audio projector GGUF; return ``dst``.

    The published Gemma 4 projectors carry both encoders and llama.cpp loads every
    encoder a file declares into RAM, so dropping vision saves memory on a 4 GB Pi.
    Written atomically, so ``dst`` is never half written.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise ModelFileError(f"refusing to overwrite {dst}: it already exists")
    reader = _open_gguf(src)
    _require_audio(reader, src)
    try:
        with atomic_path(dst) as temp:
            kept, dropped = _write_audio_only(reader, temp)
    except OSError as e:
        raise ModelFileError(f"cannot write {dst}: {e.strerror or e}") from e
    logger.info(
        "%s: kept %d audio tensors, dropped %d vision tensors (%s -> %s)",
        dst, kept, dropped, human_size(src.stat().st_size), human_size(dst.stat().st_size),
    )
    return dst


def _open_gguf(path: Path) -> GGUFReader:
    # Imported here: only slimming needs gguf (and numpy), not startup or download.
    from gguf import GGUFReader

    try:
        return GGUFReader(path, "r")
    except FileNotFoundError as e:
        raise ModelFileError(f"projector {path} not found") from e
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path} is not a readable GGUF file: {e}") from e


def _require_audio(reader: GGUFReader, src: Path) -> None:
    field = reader.get_field(_HAS_AUDIO_KEY)
    has_audio = field is not None and bool(field.contents())
    if not has_audio or not any(t.name.startswith("a.") for t in reader.tensors):
        raise ModelFileError(f"{src} has no audio encoder; nothing to keep")


def _is_vision_tensor(name: str) -> bool:
    return name.startswith("v.") or (name.startswith("mm.") and not name.startswith("mm.a."))


def _write_audio_only(reader: GGUFReader, path: Path) -> tuple[int, int]:
    """Copy metadata minus vision keys and tensors minus vision ones; return counts."""
    from gguf import GGUFValueType, GGUFWriter, Keys

    arch_field = reader.get_field(Keys.General.ARCHITECTURE)
    arch = arch_field.contents() if arch_field is not None else "clip"
    writer = GGUFWriter(path, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name in (Keys.General.ARCHITECTURE, _HAS_VISION_KEY):
            continue
        if name.startswith(_VISION_KEY_PREFIX):
            continue
        if name == Keys.General.ALIGNMENT:
            writer.add_custom_alignment(int(field.contents()))
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
    writer.add_bool(_HAS_VISION_KEY, False)

    kept = [t for t in reader.tensors if not _is_vision_tensor(t.name)]
    for tensor in kept:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in kept:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return len(kept), len(reader.tensors) - len(kept)
