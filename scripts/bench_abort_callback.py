#!/usr/bin/env python3
"""What the engine's abort callback costs (issue 22, defect 9): ggml calls it
between graph nodes, and as a Python ctypes callback it takes the GIL each
time. Text prefill (256 tokens) and decode (one token at a time) are timed
with and without it, the two alternating round by round so a change in the
machine's load hits both alike; ``--busy`` runs Piper and a 30 ms audio-loop
stand-in on other threads, as the daemon does while it answers.

    python scripts/bench_abort_callback.py               # the test twin
    python scripts/bench_abort_callback.py --full-size   # E2B's real shapes (a quiet machine)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import llama_cpp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchlib import cpu_name, twin_paths  # noqa: E402

from edge_assistant.config import EngineConfig  # noqa: E402
from edge_assistant.llm.engine import GemmaEngine  # noqa: E402


def decode_ms(engine: GemmaEngine, tokens: int) -> float:
    """Milliseconds per token, evaluated one at a time as generation does."""
    engine.reset_history()
    started = time.perf_counter()
    for token in range(1000, 1000 + tokens):
        engine._decode_tokens([token], want_logits=True)  # noqa: SLF001 - the engine's own decode step
    return (time.perf_counter() - started) * 1000 / tokens


def prefill_tok_s(engine: GemmaEngine, tokens: int) -> float:
    engine.reset_history()
    started = time.perf_counter()
    engine._decode_tokens(list(range(1000, 1000 + tokens)), want_logits=False)  # noqa: SLF001
    return tokens / (time.perf_counter() - started)


def busy_neighbours(stop: threading.Event) -> list[threading.Thread]:
    """Piper synthesizing sentence after sentence, and a loop waking every 30 ms."""
    from speech import VOICE_PATH

    from edge_assistant.tts import PiperSpeech

    speech = PiperSpeech(VOICE_PATH, threads=1)

    def piper() -> None:
        while not stop.is_set():
            speech.synthesize("The quick brown fox jumps over the lazy dog.")

    def audio_loop() -> None:
        while not stop.wait(0.03):
            pass

    threads = [threading.Thread(target=piper, daemon=True), threading.Thread(target=audio_loop, daemon=True)]
    for thread in threads:
        thread.start()
    return threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="E2B's real shapes (slow to build, needs a quiet machine)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--busy", action="store_true", help="Piper and an audio-loop stand-in running alongside")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    model, mmproj = twin_paths(args.full_size)
    engine = GemmaEngine(model, mmproj, EngineConfig(n_ctx=1024))
    stop = threading.Event()
    if args.busy:
        busy_neighbours(stop)
    results: dict[bool, dict[str, list[float]]] = {True: {"prefill": [], "decode": []}, False: {"prefill": [], "decode": []}}
    try:
        for _ in range(args.rounds):
            for with_callback in (True, False):
                if with_callback:
                    llama_cpp.llama_set_abort_callback(engine._ctx, engine._abort_check, None)  # noqa: SLF001
                else:
                    llama_cpp.llama_set_abort_callback(engine._ctx, llama_cpp.ggml_abort_callback(0), None)  # noqa: SLF001
                results[with_callback]["prefill"].append(prefill_tok_s(engine, 256))
                results[with_callback]["decode"].append(decode_ms(engine, 32))
    finally:
        stop.set()
        engine.close()
    print(f"CPU: {cpu_name()}; {'full-size' if args.full_size else 'test'} twin; {args.rounds} rounds"
          f"{'; Piper and a 30 ms loop alongside' if args.busy else ''}")
    for name, unit, better in (("prefill", "tok/s", max), ("decode", "ms/token", min)):
        on, off = statistics.median(results[True][name]), statistics.median(results[False][name])
        cost = (off / on - 1) * 100 if name == "prefill" else (on / off - 1) * 100
        print(f"{name:>8}: with the callback {on:8.2f} {unit}, without {off:8.2f} {unit}: costs {cost:+.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
