"""The stateful audio encoder: one 30 s clip encoded step by step, each audio token once.

Gemma 4's audio conformer is causal, so llama.cpp carries its state (each layer's last
keys, values and convolution inputs) from step to step and the embeddings equal those
of encoding the whole clip at once. The API comes from edge-assistant's patch to the
pinned llama.cpp (``patches/``), built by ``scripts/install_llama_cpp.sh``.
"""

from __future__ import annotations

import ctypes

import numpy as np
from llama_cpp import mtmd_cpp

from ..errors import ModelFileError
from .graph_thread import on_graph_thread

SAMPLES_PER_AUDIO_TOKEN = 640  # 16 kHz / 25 tokens per second
ENCODER_BLOCK_TOKENS = 12  # gemma4a's attention block: streamed steps end on one
BLOCK_SAMPLES = ENCODER_BLOCK_TOKENS * SAMPLES_PER_AUDIO_TOKEN


def samples_for_blocks(blocks: int) -> int:
    """The audio a clip needs before its first ``blocks`` encoder blocks are final:
    a token's last mel frame (320-sample window, 160 hop, 160 samples of left
    padding) ends one sample past the token's own 640, as in the patch's
    ``mtmd_audio_stream::final_tokens``."""
    return blocks * BLOCK_SAMPLES + 1 if blocks else 0


def final_blocks(samples: int) -> int:
    """Encoder blocks a clip of ``samples`` makes final (the inverse of
    :func:`samples_for_blocks`)."""
    return max(0, samples - 1) // BLOCK_SAMPLES


PATCH_HINT = "llama-cpp-python was built without edge-assistant's streaming audio patch: run scripts/install_llama_cpp.sh"


def check_streaming_support() -> None:
    """The installed llama.cpp carries the stateful encoder, or one clear error."""
    if not hasattr(mtmd_cpp, "mtmd_audio_stream_init"):
        raise ModelFileError(PATCH_HINT)


class ClipEncoder:
    """One clip's audio, fed as it is heard. :meth:`encode` returns the embeddings
    of the tokens that became final (whole 12-token blocks, which no later audio
    can change), or with ``last`` of every token up to the end of the audio fed;
    those past the last whole block are encoded again after more audio."""

    def __init__(self, mtmd_context: mtmd_cpp.mtmd_context_p, n_embd: int) -> None:
        check_streaming_support()
        self._mtmd = mtmd_context
        self._n_embd = n_embd
        self._stream = mtmd_cpp.mtmd_audio_stream_init(mtmd_context)
        if not self._stream:
            raise ModelFileError("this audio projector's encoder cannot stream (only Gemma 4's gemma4a can)")
        self.samples = 0  # fed so far

    def feed(self, samples: np.ndarray) -> None:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if not len(samples):
            return
        if mtmd_cpp.mtmd_audio_stream_feed(self._stream, samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), len(samples)):
            raise ValueError(f"a clip holds at most 30 s of audio ({self.samples + len(samples)} samples fed)")
        self.samples += len(samples)

    def encode(self, last: bool = False) -> np.ndarray:
        """(n_tokens, n_embd) float32: the tokens final now, or all with ``last``."""
        count = on_graph_thread(lambda: mtmd_cpp.mtmd_audio_stream_encode(self._stream, last))
        if count < 0:
            raise RuntimeError("the audio encoder failed")
        if count == 0:
            return np.zeros((0, self._n_embd), dtype=np.float32)
        output = mtmd_cpp.mtmd_get_output_embd(self._mtmd)
        return np.ctypeslib.as_array(output, shape=(count * self._n_embd,)).reshape(count, self._n_embd).copy()

    def rewind(self, samples: int) -> int:
        """Keep the first ``samples`` fed; returns the tokens still encoded (the
        final ones for those samples): the caller's cache keeps those."""
        kept = on_graph_thread(lambda: mtmd_cpp.mtmd_audio_stream_rewind(self._stream, samples))  # may encode again
        if kept < 0:
            raise RuntimeError("the audio encoder failed while rewinding")
        self.samples = min(self.samples, samples)
        return kept

    @property
    def tokens(self) -> int:
        """Tokens encoded for good (whole blocks)."""
        return mtmd_cpp.mtmd_audio_stream_n_tokens(self._stream)

    def close(self) -> None:
        if self._stream:
            mtmd_cpp.mtmd_audio_stream_free(self._stream)
            self._stream = None
