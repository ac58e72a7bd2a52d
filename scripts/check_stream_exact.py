#!/usr/bin/env python3
"""Check the stateful audio encoder at E2B's real size: streamed embeddings against
llama.cpp's own encoding of the whole clip (mtmd_tokenize + mtmd_encode_chunk), for
several clip lengths and steps, and how much the model's first-token logits move
when one audio token's embedding changes by 0.1 %.

    python scripts/check_stream_exact.py                 # the full-size twin (built once)
    python scripts/check_stream_exact.py --model M.gguf --mmproj P.gguf

Why the second part: on the random-weight full-size twin a 0.1 % change of one
token moves the logits across their whole range (the untrained 35-layer network
amplifies any difference), so logits there cannot tell an exact stream from one
rounded in another order; the embeddings can. The small twin's logits are checked
in the tests (tests/test_engine.py, tests/test_clip_encoder.py).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import numpy as np

from benchlib import cpu_name, twin_paths

from edge_assistant.config import EngineConfig
from edge_assistant.llm.engine import GemmaEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from speech import silence, speak  # noqa: E402
from test_clip_encoder import streamed, whole_clip  # noqa: E402

RATE = 16000
CASES = ((2.0, (0.48, 0.96)), (5.3, (0.48, 0.96, 2.5)), (15.0, (0.96, 10.0)), (30.0, (1.92,)))


def logits_after(engine: GemmaEngine, embeddings: np.ndarray) -> np.ndarray:
    """First-token logits with ``embeddings`` as the question's audio (rolled back)."""
    import llama_cpp

    turn = engine.begin_turn(len(embeddings) / 25)
    try:
        engine._decode_embeddings(embeddings, threading.Event())  # noqa: SLF001 - the turn's audio prefill
        engine._decode_tokens(engine._audio_suffix_tokens, want_logits=True)  # noqa: SLF001
        n_vocab = llama_cpp.llama_vocab_n_tokens(engine._vocab)  # noqa: SLF001
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(engine._ctx, -1), shape=(n_vocab,)).copy()  # noqa: SLF001
    finally:
        turn.rollback()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    args = parser.parse_args()
    model, mmproj = (args.model, args.mmproj) if args.model else twin_paths(full_size=True)
    sentence = np.concatenate([speak("What is the tallest mountain in Europe and how high is it?").samples, silence(0.3)])
    talk = np.resize(sentence, 30 * RATE).astype(np.float32)
    with GemmaEngine(model, mmproj, EngineConfig(seed=1)) as engine:
        print(f"streamed against the whole clip ({model.name}, {cpu_name()}):")
        for seconds, steps in CASES:
            audio = talk[: int(seconds * RATE)]
            expected = whole_clip(engine, audio)
            for step in steps:
                encoder = engine.clip_encoder()
                try:
                    got = streamed(encoder, audio, int(step * RATE))
                finally:
                    encoder.close()
                off = np.abs(got - expected).max(axis=1) / np.abs(expected).max()
                print(f"  {seconds:4.1f} s in steps of {step:5.2f} s: {len(expected)} tokens, "
                      f"{int((off == 0).sum())} bit-identical, worst {off.max():.2g} of the largest value")
        embeddings = whole_clip(engine, talk[: int(5.3 * RATE)])
        reference = logits_after(engine, embeddings)
        changed = embeddings.copy()
        changed[len(changed) // 2] *= 1.001
        moved = np.abs(logits_after(engine, changed) - reference).max()
        print(f"first-token logits when one audio token is scaled by 1.001: max change {moved:.3g} "
              f"(the logits span {reference.min():.3g} to {reference.max():.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
