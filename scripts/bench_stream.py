#!/usr/bin/env python3
"""Streaming's two levers at E2B's real size: what a prefill step of N audio tokens
costs, and the stateful audio encoder streamed in steps against the whole clip.

    python scripts/bench_stream.py [--runs 3]              # the full-size twin (built once)
    python scripts/bench_stream.py --model M.gguf --mmproj P.gguf
    python scripts/bench_stream.py --cpu-quota 0.64        # inside a cgroup CPU quota (root)

Numbers, not pass/fail: medians of --runs (min-max), in one process, with the CPU
named. Compute time depends on shapes and types, not on the weights' values, so
the random-weight full-size twin measures what E2B costs.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchlib import BenchError, CpuQuota, cpu_name, default_voice, spread, twin_paths, underlined

from edge_assistant.config import EngineConfig
from edge_assistant.llm.engine import GemmaEngine
from edge_assistant.turn import STEP_BLOCKS, next_step_end

BATCHES = (12, 24, 48, 96, 128, 256)
QUESTION = "My sister is flying in from Lisbon tomorrow evening, so what time should we leave for the airport?"
RATE = 16000


def prefill_by_batch(engine: GemmaEngine, runs: int) -> str:
    """Audio embeddings evaluated after the system prompt in batches of N tokens
    (about 200 tokens each time, 96 and more in whole batches): tokens/s."""
    embeddings = np.random.default_rng(0).standard_normal((256, engine._n_embd)).astype(np.float32)  # noqa: SLF001
    never = threading.Event()
    lines = [underlined(f"{'batch':>6s}  {'prefill tokens/s':>22s}")]
    for batch in BATCHES:
        count = max(1, 192 // batch)
        rates = []
        for _ in range(runs):
            engine.reset_history()
            started = time.perf_counter()
            for _ in range(count):
                engine._decode_embeddings(embeddings[:batch], never)  # noqa: SLF001 - the turn's audio prefill, timed alone
            rates.append(count * batch / (time.perf_counter() - started))
        lines.append(f"{batch:6d}  {spread(rates, 1):>22s}")
    engine.reset_history()
    return "\n".join(lines)


def steps_of(blocks: int, length: int) -> list[int]:
    """The step sizes (samples) of a question of ``length`` samples fed each time
    ``blocks`` more encoder blocks are final (turn.next_step_end), the last step
    to its end, as a worker that keeps up feeds it."""
    steps, taken = [], 0
    while taken < length:
        steps.append(min(length, next_step_end(taken, blocks)) - taken)
        taken += steps[-1]
    return steps


def encode_ms(engine: GemmaEngine, audio: np.ndarray, steps: list[int]) -> float:
    """The clip through the stateful encoder in ``steps`` (sample counts), as a
    turn feeds it: each step encodes the tokens it made final, the last all the
    rest (one step: the whole clip at once)."""
    encoder = engine.clip_encoder()
    try:
        started = time.perf_counter()
        start = 0
        for index, step in enumerate(steps):
            encoder.feed(audio[start : start + step])
            start += step
            encoder.encode(last=index == len(steps) - 1)
        return (time.perf_counter() - started) * 1000
    finally:
        encoder.close()


def encoder_streamed(engine: GemmaEngine, runs: int) -> str:
    from edge_assistant.tts import PiperSpeech

    speech = PiperSpeech(default_voice()).synthesize_16k(QUESTION).samples
    steps = {f"{blocks * 0.48:.2f} s" + (" (the daemon's)" if blocks == STEP_BLOCKS else ""): blocks for blocks in (1, 2, 4)}
    header = f"{'question':>9s}  {'whole clip ms':>20s}" + "".join(f"  {'steps of ' + name:>34s}" for name in steps)
    lines = [underlined(header)]
    encode_ms(engine, speech[: 2 * RATE], [2 * RATE])  # the encoder's buffers, reserved once
    for seconds in (2, 5, 15):
        audio = np.resize(speech, seconds * RATE)
        whole = [encode_ms(engine, audio, [len(audio)]) for _ in range(runs)]
        row = f"{seconds:8d}s  {spread(whole, 0):>20s}"
        for blocks in steps.values():
            streamed = [encode_ms(engine, audio, steps_of(blocks, len(audio))) for _ in range(runs)]
            ratio = sorted(streamed)[len(streamed) // 2] / sorted(whole)[len(whole) // 2]
            row += f"  {spread(streamed, 0) + f' = {ratio:.2f}x':>34s}"
        lines.append(row)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu-quota", type=float, help="CPUs' worth of time this process may use (cgroup quota)")
    args = parser.parse_args()
    quota = None
    try:
        if args.cpu_quota:
            quota = CpuQuota()
            quota.set(args.cpu_quota)
        model, mmproj = (args.model, args.mmproj) if args.model else twin_paths(full_size=True)
        with GemmaEngine(model, mmproj, EngineConfig(seed=1)) as engine:
            where = f"{model.name}, {cpu_name()}, {engine.threads} threads" + (
                f", CPU quota {args.cpu_quota:g}" if args.cpu_quota else "")
            print(f"prefill of audio tokens after the system prompt, by batch ({where}):")
            print(prefill_by_batch(engine, args.runs))
            print(f"\naudio encoder, streamed against the whole clip ({where}):")
            print(encoder_streamed(engine, args.runs))
    except BenchError as error:
        print(f"bench_stream: error: {error}", file=sys.stderr)
        return 1
    finally:
        if quota:
            quota.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
