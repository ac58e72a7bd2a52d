"""A prompt with audio as mtmd tokenizes it: the text pieces around the audio,
exactly as llama.cpp's multimodal library splits and marks them."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
from llama_cpp import mtmd_cpp


@dataclass
class AudioChunks:
    """mtmd's chunks for one prompt and the bitmap they were made from."""

    chunks: mtmd_cpp.mtmd_input_chunks_p
    bitmap: mtmd_cpp.mtmd_bitmap_p

    def free(self) -> None:
        mtmd_cpp.mtmd_input_chunks_free(self.chunks)
        mtmd_cpp.mtmd_bitmap_free(self.bitmap)


def tokenize_with_audio(mtmd: mtmd_cpp.mtmd_context_p, samples: np.ndarray, text: str) -> AudioChunks:
    """mtmd's chunks for ``text`` with ``samples`` in place of its marker (freed by the caller)."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    bitmap = mtmd_cpp.mtmd_bitmap_init_from_audio(len(samples), samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    chunks = mtmd_cpp.mtmd_input_chunks_init()
    result = AudioChunks(chunks, bitmap)
    prompt = mtmd_cpp.mtmd_input_text()
    encoded = text.encode("utf-8")
    prompt.text, prompt.text_len = encoded, len(encoded)
    prompt.add_special, prompt.parse_special = False, True
    bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
    status = mtmd_cpp.mtmd_tokenize(mtmd, chunks, ctypes.byref(prompt), bitmaps, 1)
    if status != 0:
        result.free()
        raise RuntimeError(f"mtmd_tokenize failed with status {status}")
    return result


def text_pieces(mtmd: mtmd_cpp.mtmd_context_p, samples: np.ndarray, text: str) -> list[list[int]]:
    """The text tokens of ``text`` around its audio, piece by piece, the audio's
    begin and end markers included."""
    chunks = tokenize_with_audio(mtmd, samples, text)
    try:
        pieces = []
        for index in range(mtmd_cpp.mtmd_input_chunks_size(chunks.chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks.chunks, index)
            if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t()
                tokens = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                pieces.append([tokens[i] for i in range(count.value)])
        return pieces
    finally:
        chunks.free()
