"""The real Gemma 4 tokenizer's GGUF keys, from the extraction in twin_data/
(scripts/twin_data/extract_tokenizer.py), and written into a model file."""

from __future__ import annotations

import io
import json
import lzma
from pathlib import Path

import numpy as np

from . import TwinError

DATA_DIR = Path(__file__).resolve().parents[1] / "twin_data"
TOKENIZER_DATA = DATA_DIR / "gemma4_tokenizer.npz.xz"


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



def add_tokenizer(writer, tok_kv) -> None:
    import gguf

    VT = gguf.GGUFValueType
    for key, kind, gtype, value in tok_kv:
        if kind in ("str_array", "num_array"):
            writer.add_key_value(key, value, VT.ARRAY, sub_type=VT[gtype])
        else:
            writer.add_key_value(key, value, VT[gtype])
