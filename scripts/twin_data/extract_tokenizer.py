#!/usr/bin/env python3
"""Regenerate ``gemma4_tokenizer.npz.xz`` (the Gemma 4 twin's tokenizer data).

Source: the llama-cpp-python sdist pinned by the project (0.3.36), which vendors
llama.cpp (MIT licence) with

  vendor/llama.cpp/models/ggml-vocab-gemma-4.gguf           (the real Gemma 4 tokenizer)
  vendor/llama.cpp/models/templates/google-gemma-4-31B-it.jinja (current chat template)

Usage::

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/sdist
    tar -xzf /tmp/sdist/llama_cpp_python-0.3.36.tar.gz -C /tmp/sdist
    python scripts/twin_data/extract_tokenizer.py /tmp/sdist/llama_cpp_python-0.3.36

Every ``tokenizer.*`` key of the vocab GGUF is copied with its GGUF value type,
except ``tokenizer.chat_template``, which is taken from the .jinja file (the
newer upstream template; see scripts/TWIN.md).  Reading the vocab GGUF with
gguf.GGUFReader takes 25-45 s; make_twin.py then only reads this file (~1 s).

Output format (no pickle): an xz-compressed .npz whose members are
  meta.json          uint8 blob: JSON list of [key, kind, gguf_type, value]
  <key>.blob/.offs   for string arrays: concatenated UTF-8 + uint64 end offsets
  <key>              for numeric arrays: the array with its GGUF dtype
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "gemma4_tokenizer.npz.xz"
VOCAB_REL = "vendor/llama.cpp/models/ggml-vocab-gemma-4.gguf"
TEMPLATE_REL = "vendor/llama.cpp/models/templates/google-gemma-4-31B-it.jinja"


def extract(sdist: Path, out: Path = OUT) -> Path:
    import gguf  # pinned gguf==0.19.0

    vocab_path = sdist / VOCAB_REL
    template_path = sdist / TEMPLATE_REL
    for p in (vocab_path, template_path):
        if not p.is_file():
            raise SystemExit(f"error: {p} not found (is {sdist} the extracted llama-cpp-python sdist?)")

    reader = gguf.GGUFReader(str(vocab_path))
    meta: list[list] = []
    arrays: dict[str, np.ndarray] = {}
    VT = gguf.GGUFValueType
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        if key == "tokenizer.chat_template":
            continue  # replaced by the .jinja below
        t0 = field.types[0]
        if t0 == VT.ARRAY:
            sub = field.types[1]
            if sub == VT.STRING:
                parts = [bytes(field.parts[i]) for i in field.data]
                offs = np.cumsum([len(b) for b in parts], dtype=np.uint64)
                arrays[key + ".blob"] = np.frombuffer(b"".join(parts), dtype=np.uint8)
                arrays[key + ".offs"] = offs
                meta.append([key, "str_array", sub.name, len(parts)])
            else:
                vals = np.concatenate([np.asarray(field.parts[i]) for i in field.data])
                arrays[key] = vals
                meta.append([key, "num_array", sub.name, int(vals.size)])
        elif t0 == VT.STRING:
            meta.append([key, "scalar", t0.name, bytes(field.parts[field.data[0]]).decode("utf-8")])
        elif t0 == VT.BOOL:
            meta.append([key, "scalar", t0.name, bool(field.parts[field.data[0]][0])])
        elif t0 in (VT.FLOAT32, VT.FLOAT64):
            meta.append([key, "scalar", t0.name, float(field.parts[field.data[0]][0])])
        else:
            meta.append([key, "scalar", t0.name, int(field.parts[field.data[0]][0])])

    template = template_path.read_text(encoding="utf-8")
    meta.append(["tokenizer.chat_template", "scalar", "STRING", template])
    meta.append(["_source", "info", "",
                 {"vocab": VOCAB_REL, "vocab_sha256": hashlib.sha256(vocab_path.read_bytes()).hexdigest(),
                  "template": TEMPLATE_REL,
                  "template_sha256": hashlib.sha256(template.encode()).hexdigest()}])
    arrays["meta.json"] = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)

    buf = io.BytesIO()
    np.savez(buf, **arrays)  # uncompressed zip; xz below compresses far better than deflate
    out.write_bytes(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sdist", type=Path, help="extracted llama_cpp_python-0.3.36 directory")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    out = extract(args.sdist, args.out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
