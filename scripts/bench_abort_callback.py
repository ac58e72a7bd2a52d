#!/usr/bin/env python3
"""What the engine's abort callback costs (issue 22, defect 9): ggml calls it
after every graph node, and as a Python ctypes callback it takes the GIL each
time. Text prefill (256 tokens) and decode (one token at a time) are timed
with and without it, with Piper synthesizing and an audio loop running the
daemon's per-frame work (voice activity, and the wake word with
``--wake-model``) on other threads, as while the daemon answers.

Each measurement is a fresh process (its own load, page faults and thread
placement), with and without the callback alternating in ABBA order, so a
change in a shared machine's load falls on both alike. Each pair gives one
cost; the spread of the pairs is the noise, and the verdict says whether it
is small enough to tell the cost from the issue's 3 % limit.

    python scripts/bench_abort_callback.py --pairs 6               # the test twin
    python scripts/bench_abort_callback.py --full-size --pairs 6   # E2B's real shapes (a quiet machine)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchlib import ROOT, cpu_name, twin_paths  # noqa: E402

LIMIT_PERCENT = 3.0
PREFILL_TOKENS, DECODE_TOKENS = 256, 32
RESULT = "result: "  # the child's line the parent reads
COUNTED_PREFILL_TOKENS = 64  # where the callback's calls are counted
FRAME_SECONDS = 0.03


# -- one measurement (a child process) ---------------------------------------------------


def decode_ms(engine, tokens: int) -> float:  # noqa: ANN001
    """Milliseconds per token, evaluated one at a time as generation does."""
    engine.reset_history()
    started = time.perf_counter()
    for token in range(1000, 1000 + tokens):
        engine._decode_tokens([token], want_logits=True)  # noqa: SLF001 - the engine's own decode step
    return (time.perf_counter() - started) * 1000 / tokens


def prefill_tok_s(engine, tokens: int) -> float:  # noqa: ANN001
    engine.reset_history()
    started = time.perf_counter()
    engine._decode_tokens(list(range(1000, 1000 + tokens)), want_logits=False)  # noqa: SLF001
    return tokens / (time.perf_counter() - started)


def busy_neighbours(stop: threading.Event, wake_model: Path | None) -> None:
    """Piper synthesizing sentence after sentence, and an audio loop judging a
    quiet room's 30 ms frames as the daemon's does while it answers."""
    import numpy as np
    from speech import VOICE_PATH, noise

    from edge_assistant.config import Config
    from edge_assistant.tts import PiperSpeech
    from edge_assistant.vad import FRAME_SAMPLES, VoiceActivity

    speech = PiperSpeech(VOICE_PATH, threads=1)
    voice = VoiceActivity(Config().audio.vad_aggressiveness, 30)
    wake = None
    if wake_model is not None:
        from edge_assistant.wake.detector import WakeWordDetector

        wake = WakeWordDetector([wake_model], 0.5)
    room = noise(10.0, 0.003)

    def piper() -> None:
        while not stop.is_set():
            speech.synthesize("The quick brown fox jumps over the lazy dog.")

    def audio_loop() -> None:
        start = 0
        next_at = time.monotonic()
        while not stop.is_set():
            samples = np.ascontiguousarray(room[start : start + FRAME_SAMPLES])
            voice.push(samples)
            if wake is not None:
                wake.process(samples)
            start = (start + FRAME_SAMPLES) % (len(room) - FRAME_SAMPLES)
            next_at += FRAME_SECONDS
            stop.wait(max(0.0, next_at - time.monotonic()))

    for target in (piper, audio_loop):
        threading.Thread(target=target, daemon=True).start()


def measure(with_callback: bool, full_size: bool, rounds: int, busy: bool, wake_model: Path | None) -> dict[str, float]:
    """Load the engine, optionally take its abort callback away, warm up, and
    return the median prefill (tok/s) and decode (ms/token) of ``rounds``."""
    import llama_cpp

    from edge_assistant.config import EngineConfig
    from edge_assistant.llm.engine import GemmaEngine

    model, mmproj = twin_paths(full_size)
    engine = GemmaEngine(model, mmproj, EngineConfig(n_ctx=1024))
    if not with_callback:
        llama_cpp.llama_set_abort_callback(engine._ctx, llama_cpp.ggml_abort_callback(0), None)  # noqa: SLF001
    stop = threading.Event()
    if busy:
        busy_neighbours(stop, wake_model)
    try:
        prefill_tok_s(engine, 32), decode_ms(engine, 4)  # buffers sized, pages touched
        prefill = [prefill_tok_s(engine, PREFILL_TOKENS) for _ in range(rounds)]
        decode = [decode_ms(engine, DECODE_TOKENS) for _ in range(rounds)]
        calls = calls_per_step(engine) if with_callback else {}
    finally:
        stop.set()
        engine.close()
    return {"prefill": statistics.median(prefill), "decode": statistics.median(decode), **calls}


def calls_per_step(engine) -> dict[str, float]:  # noqa: ANN001
    """How often ggml calls the callback: per decoded token, and per prefilled
    token (the cost scales with these, times the GIL's wait)."""
    import llama_cpp

    count = 0

    def counting(_data: object) -> bool:
        nonlocal count
        count += 1
        return False

    callback = llama_cpp.ggml_abort_callback(counting)
    llama_cpp.llama_set_abort_callback(engine._ctx, callback, None)  # noqa: SLF001
    decode_ms(engine, 1)
    per_token = count
    count = 0
    prefill_tok_s(engine, COUNTED_PREFILL_TOKENS)
    llama_cpp.llama_set_abort_callback(engine._ctx, engine._abort_check, None)  # noqa: SLF001
    return {"calls_per_decoded_token": per_token, "calls_per_prefilled_token": count / COUNTED_PREFILL_TOKENS}


# -- the pairs (the parent) ----------------------------------------------------------------


def child_run(with_callback: bool, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", "with" if with_callback else "without", "--rounds", str(args.rounds)]
    command += ["--full-size"] * args.full_size + ["--quiet-neighbours"] * (not args.busy)
    command += ["--wake-model", str(args.wake_model)] if args.wake_model else []
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"a measurement failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT)]  # llama.cpp may print too
    if not lines:
        raise SystemExit(f"a measurement printed no result: {result.stdout.strip()[-200:]}")
    return json.loads(lines[-1][len(RESULT):])


def cost_percent(name: str, with_it: float, without: float) -> float:
    """How much slower with the callback: tok/s falls for prefill, ms rise for decode."""
    return (without / with_it - 1) * 100 if name == "prefill" else (with_it / without - 1) * 100


def verdict(costs: list[float]) -> str:
    """The median cost, give or take half the pairs' range (the noise): within or
    over the limit only when that whole band is on one side of it."""
    if len(costs) < 2:
        return "no verdict: one pair shows nothing of the noise"
    middle, noise = statistics.median(costs), (max(costs) - min(costs)) / 2
    band = f"{middle:+.1f} ± {noise:.1f} %"
    if middle + noise <= LIMIT_PERCENT:
        return f"{band}: within {LIMIT_PERCENT:.0f} %"
    if middle - noise > LIMIT_PERCENT:
        return f"{band}: over {LIMIT_PERCENT:.0f} %"
    return f"{band}: no verdict, the noise spans {LIMIT_PERCENT:.0f} %"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="E2B's real shapes (slow to build, needs a quiet machine)")
    parser.add_argument("--pairs", type=int, default=4, help="fresh runs with and without the callback")
    parser.add_argument("--rounds", type=int, default=2, help="prefills and decodes per run (its median counts)")
    parser.add_argument("--quiet-neighbours", dest="busy", action="store_false",
                        help="no Piper and no audio loop alongside")
    parser.add_argument("--wake-model", type=Path, help="an openWakeWord .onnx the audio loop also runs")
    parser.add_argument("--child", choices=["with", "without"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pairs < 1 or args.rounds < 1:
        parser.error("--pairs and --rounds must be at least 1")
    if args.wake_model and not args.wake_model.is_file():
        parser.error(f"no such wake model: {args.wake_model}")
    if args.child:
        print(RESULT + json.dumps(measure(args.child == "with", args.full_size, args.rounds, args.busy, args.wake_model)))
        return 0
    neighbours = "Piper and an audio loop" + (" with the wake word" if args.wake_model else "") if args.busy else "nothing"
    print(f"CPU: {cpu_name()}; {'full-size' if args.full_size else 'test'} twin; {args.pairs} pairs of fresh runs "
          f"(ABBA), median of {args.rounds} rounds each; alongside: {neighbours}", flush=True)
    pairs: list[dict[bool, dict[str, float]]] = []
    for index in range(args.pairs):
        order = (True, False) if index % 2 == 0 else (False, True)
        pair = {with_callback: child_run(with_callback, args) for with_callback in order}
        pairs.append(pair)
        print(f"  pair {index + 1}: prefill {pair[True]['prefill']:.1f} / {pair[False]['prefill']:.1f} tok/s, "
              f"decode {pair[True]['decode']:.1f} / {pair[False]['decode']:.1f} ms/token (with / without)", flush=True)
    calls = [pair[True] for pair in pairs if "calls_per_decoded_token" in pair[True]][0]
    print(f"ggml calls the callback {calls['calls_per_decoded_token']:.0f} times per decoded token, "
          f"{calls['calls_per_prefilled_token']:.1f} per prefilled token")
    for name, unit in (("prefill", "tok/s"), ("decode", "ms/token")):
        costs = [cost_percent(name, pair[True][name], pair[False][name]) for pair in pairs]
        with_it = statistics.median(pair[True][name] for pair in pairs)
        without = statistics.median(pair[False][name] for pair in pairs)
        print(f"{name:>8}: with {with_it:.2f} {unit}, without {without:.2f} {unit}; cost per pair "
              f"{', '.join(f'{cost:+.1f}' for cost in costs)} %; {verdict(costs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
