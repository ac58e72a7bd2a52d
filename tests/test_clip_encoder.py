"""The stateful audio encoder on the twin: streamed embeddings against llama.cpp's
own encoding of the whole clip (mtmd_tokenize + mtmd_encode_chunk), for steps from
30 ms to 10 s, clips up to the 30 s limit, cut-backs and audio after a clip's end.

Tolerance: ggml's CPU matmul runs tinyBLAS for batches of 2 tokens and more (8 for
F16 on ARM) and its own dot products below that, which sum in another order. A
token encoded in a step of its own (the clip's last, when one token follows the
last whole block) therefore differs in the rounding, and the twin's random weights
amplify that through the conformer: measured at most 4.2e-4 of the largest value,
in that token only; every other token here is bit-identical. 1e-3 of the largest
value still fails on any real error (a wrong mask, state or frame offset changes
whole tokens by tens of percent).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_assistant.config import EngineConfig
from edge_assistant.llm.clip_encoder import ClipEncoder, final_blocks, samples_for_blocks
from edge_assistant.llm.engine import GemmaEngine
from edge_assistant.llm.graph_thread import on_graph_thread

from speech import silence, speak

pytestmark = pytest.mark.slow
RATE = 16000
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def engine(twin):
    with GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=4, seed=1)) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def talk() -> np.ndarray:
    """30 s of speech and the pauses of a talker."""
    sentence = np.concatenate([speak("What is the tallest mountain in Europe and how high is it?").samples, silence(0.3)])
    return np.resize(sentence, 30 * RATE).astype(np.float32)


def whole_clip(engine: GemmaEngine, samples: np.ndarray) -> np.ndarray:
    """llama.cpp's own path: the clip tokenized by mtmd and encoded at once."""
    from llama_cpp import mtmd_cpp

    from edge_assistant.llm.mtmd_prompt import tokenize_with_audio

    chunks = tokenize_with_audio(engine._mtmd, samples, engine._marker)
    try:
        for index in range(mtmd_cpp.mtmd_input_chunks_size(chunks.chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks.chunks, index)
            if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_AUDIO:
                n_tokens = mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)
                assert on_graph_thread(lambda: mtmd_cpp.mtmd_encode_chunk(engine._mtmd, chunk)) == 0  # as the engine's graphs run
                output = mtmd_cpp.mtmd_get_output_embd(engine._mtmd)
                n_embd = engine._n_embd
                return np.ctypeslib.as_array(output, shape=(n_tokens * n_embd,)).reshape(n_tokens, n_embd).copy()
    finally:
        chunks.free()
    raise AssertionError("no audio chunk")


def streamed(encoder: ClipEncoder, samples: np.ndarray, step: int) -> np.ndarray:
    parts = []
    for start in range(0, len(samples), step):
        encoder.feed(samples[start : start + step])
        parts.append(encoder.encode())
    parts.append(encoder.encode(last=True))
    return np.concatenate(parts)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE * np.abs(expected).max())


@pytest.mark.parametrize(
    ("seconds", "steps"),
    [(2.0, (0.03, 0.3, 0.48, 1.0)), (5.3, (0.3, 0.48, 2.5)), (14.7, (0.48, 1.0, 10.0)), (30.0, (1.0, 2.5, 10.0))],
    ids=["2s", "5.3s", "14.7s", "30s"],
)
def test_streamed_embeddings_equal_the_whole_clip(
    engine: GemmaEngine, talk: np.ndarray, seconds: float, steps: tuple[float, ...]
) -> None:
    audio = talk[: int(seconds * RATE)]
    expected = whole_clip(engine, audio)
    for step_seconds in steps:
        encoder = engine.clip_encoder()
        try:
            assert_same(streamed(encoder, audio, int(step_seconds * RATE)), expected)
            assert encoder.tokens % 12 == 0 and encoder.tokens <= len(expected)
        finally:
            encoder.close()


def test_a_step_returns_whole_blocks_once_their_audio_is_complete(engine: GemmaEngine, talk: np.ndarray) -> None:
    """Token t reads mel frames up to 4t+3, which need 640t + 641 samples: the 12
    tokens of the first block are final at 7681 samples and not before."""
    encoder = engine.clip_encoder()
    try:
        encoder.feed(talk[:7680])
        assert len(encoder.encode()) == 0
        encoder.feed(talk[7680:7681])
        assert len(encoder.encode()) == 12 and encoder.tokens == 12
        assert len(encoder.encode()) == 0  # nothing new: nothing encoded twice
    finally:
        encoder.close()


def test_the_streams_block_arithmetic_is_the_encoders(engine: GemmaEngine, talk: np.ndarray) -> None:
    """The speech stream times its steps with samples_for_blocks and final_blocks:
    they must agree with what the patched encoder makes final, or every step
    would wait for audio it cannot use (a step of exactly 2 x 7680 samples
    makes 1 block final, not 2)."""
    for blocks in (1, 2, 3, 5):
        encoder = engine.clip_encoder()
        try:
            encoder.feed(talk[: samples_for_blocks(blocks) - 1])
            assert len(encoder.encode()) == 12 * (blocks - 1) == 12 * final_blocks(samples_for_blocks(blocks) - 1)
            encoder.feed(talk[samples_for_blocks(blocks) - 1 : samples_for_blocks(blocks)])
            assert len(encoder.encode()) == 12
            assert encoder.tokens == 12 * blocks == 12 * final_blocks(samples_for_blocks(blocks))
        finally:
            encoder.close()


def test_audio_after_the_end_encodes_the_tail_again(engine: GemmaEngine, talk: np.ndarray) -> None:
    """A pause ended the clip early (encode(last)); the speaker went on: the
    tokens after the last whole block are encoded again with the audio that
    followed, and the clip equals the longer one at once."""
    encoder = engine.clip_encoder()
    try:
        encoder.feed(talk[:50000])
        kept = encoder.encode()
        tail = encoder.encode(last=True)
        assert_same(np.concatenate([kept, tail]), whole_clip(engine, talk[:50000]))
        rest = streamed(encoder, talk[50000:90000], 8000)
        assert_same(np.concatenate([kept, rest]), whole_clip(engine, talk[:90000]))
    finally:
        encoder.close()


@pytest.mark.parametrize("step_seconds", [0.5, 3.0])
@pytest.mark.parametrize("cut", [71000, 70400, 20000, 5000])
def test_rewind_gives_the_shorter_clip(engine: GemmaEngine, talk: np.ndarray, step_seconds: float, cut: int) -> None:
    """The endpointer puts the end before audio already fed: the encoder keeps
    the whole blocks of the shorter clip (from a recent state, or from the clip's
    start when the cut is further back than the states it keeps) and goes on
    as if the extra audio had never been fed."""
    audio = talk[: 15 * RATE]
    expected = whole_clip(engine, audio[:cut])
    encoder = engine.clip_encoder()
    try:
        step = int(step_seconds * RATE)
        fed = []
        for start in range(0, len(audio), step):
            encoder.feed(audio[start : start + step])
            fed.append(encoder.encode())
        fed = np.concatenate(fed)
        kept = encoder.rewind(cut)
        assert kept == min(len(fed), (cut - 1) // 640 // 12 * 12)
        assert encoder.samples == cut
        assert_same(np.concatenate([fed[:kept], encoder.encode(last=True)]), expected)
    finally:
        encoder.close()


def test_a_clip_holds_at_most_30_seconds(engine: GemmaEngine, talk: np.ndarray) -> None:
    encoder = engine.clip_encoder()
    try:
        encoder.feed(talk)
        with pytest.raises(ValueError, match="at most 30 s"):
            encoder.feed(talk[:1])
        assert encoder.samples == len(talk)
    finally:
        encoder.close()


def test_without_the_patch_the_engine_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, twin) -> None:
    from llama_cpp import mtmd_cpp

    from edge_assistant.errors import ModelFileError

    monkeypatch.delattr(mtmd_cpp, "mtmd_audio_stream_init")
    with pytest.raises(ModelFileError, match="scripts/install_llama_cpp.sh"):
        GemmaEngine(twin.model, twin.mmproj, EngineConfig())


def test_the_bindings_take_numpy_samples(engine: GemmaEngine) -> None:
    """float64 and non-contiguous input are converted, not misread as float32."""
    encoder = engine.clip_encoder()
    try:
        audio = np.sin(np.arange(2 * 9000) / 7.0)[::2]  # float64, strided
        encoder.feed(audio)
        assert encoder.samples == 9000
        reference = engine.clip_encoder()
        try:
            reference.feed(np.ascontiguousarray(audio, dtype=np.float32))
            assert_same(encoder.encode(last=True), reference.encode(last=True))
        finally:
            reference.close()
    finally:
        encoder.close()
