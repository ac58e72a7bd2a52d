#!/usr/bin/env python3
"""Benchmark one spoken turn: median stage timings, peak RSS, and the tokens
evaluated per turn in a two-turn conversation with and without prefix reuse.

    python scripts/bench_once.py                         # on the Gemma 4 twin (generated)
    python scripts/bench_once.py --model M.gguf --mmproj P.gguf --voice V.onnx

Numbers, not pass/fail: run it on the device you care about. The question is
synthesized with Piper, so the benchmark needs no recordings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Audio
from edge_assistant.audio.playback import RecordingPlayback
from edge_assistant.config import AudioConfig, EndpointConfig, EngineConfig
from edge_assistant.llm.engine import GemmaEngine
from edge_assistant.tts import PiperSpeech, StreamingSpeaker
from edge_assistant.turn import prepare_audio, run_turn

from benchlib import MIB, default_voice, own_memory, spread, twin_paths

QUESTIONS = ("What is the tallest mountain in Europe?", "And how high is it?")
PI5_MS_PER_PROMPT_TOKEN = 1000 / 30  # published llama.cpp E2B figure (REFERENCE.md)


def spoken(voice: PiperSpeech, text: str) -> Audio:
    """The question with half a second of silence before it and a second after."""
    samples = voice.synthesize_16k(text).samples
    padded = np.concatenate([np.zeros(MODEL_SAMPLE_RATE // 2, np.float32), samples, np.zeros(MODEL_SAMPLE_RATE, np.float32)])
    return Audio(padded, MODEL_SAMPLE_RATE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--voice", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--kv-cache-type", default="q8_0", choices=("q8_0", "q4_0", "f16"))
    args = parser.parse_args()
    if (args.model is None) != (args.mmproj is None):
        parser.error("give both --model and --mmproj, or neither (the twin)")
    model, mmproj = (args.model, args.mmproj) if args.model else twin_paths()
    voice = PiperSpeech(args.voice or default_voice())
    settings = EngineConfig(max_tokens=args.max_tokens, kv_cache_type=args.kv_cache_type, seed=1)
    questions = [spoken(voice, text) for text in QUESTIONS]
    print(f"model {model.name} + {mmproj.name}, kv {settings.kv_cache_type}, n_ubatch {settings.n_ubatch}, "
          f"{args.runs} runs, max_tokens {args.max_tokens}")

    samples: dict[str, list[float]] = {}
    for _ in range(args.runs):
        load_started = time.perf_counter()
        engine = GemmaEngine(model, mmproj, settings)
        samples.setdefault("load", []).append((time.perf_counter() - load_started) * 1000)
        with engine:
            started = time.perf_counter()
            speech = prepare_audio(questions[0], AudioConfig(), EndpointConfig().min_speech_ms)
            result = run_turn(engine, speech, StreamingSpeaker(voice, RecordingPlayback(voice.sample_rate)), started)
        for name, value in result.timings_ms.items():
            samples.setdefault(name, []).append(value)
        samples.setdefault("generated_tokens", []).append(result.tokens["generated"])
        samples.setdefault("ms_per_generated_token", []).append(
            result.timings_ms["decode"] / max(1, result.tokens["generated"] - 1)
        )

    print(f"\nmedian (min-max) over {args.runs} runs ({speech.seconds:.2f} s of speech, {result.tokens['audio']} audio tokens):")
    for name, values in samples.items():
        print(f"  {name:24s} {spread(values, 1):>24s}")

    print("\ntwo-turn conversation, tokens evaluated per turn:")
    with GemmaEngine(model, mmproj, settings) as engine:
        engine_rss = own_memory().rss / MIB
        system = engine.system_prompt_tokens
        for number, question in enumerate(questions, start=1):
            stats = engine.respond(prepare_audio(question, AudioConfig(), EndpointConfig().min_speech_ms).samples).stats
            # A stateless call (what llama-cpp-python's chat handler does) clears the
            # KV cache and evaluates the system prompt and the whole history again.
            without_reuse = stats.context_tokens - 2
            print(f"  turn {number}: with prefix reuse {stats.evaluated_this_turn:5d}   "
                  f"without {without_reuse:5d}   (system prompt {system}; "
                  f"~{(without_reuse - stats.evaluated_this_turn) * PI5_MS_PER_PROMPT_TOKEN / 1000:.1f} s saved on a Pi 5)")
    print(f"\nRSS with the engine and the Piper voice loaded: {engine_rss:.0f} MiB; "
          f"peak RSS of the whole run (Piper synthesis included): {own_memory().hwm / MIB:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
