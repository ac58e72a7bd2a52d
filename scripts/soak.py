#!/usr/bin/env python3
"""A soak of the assistant's turn machinery: the daemon's own Assistant, turn
runner, engine (the Gemma 4 twin through llama.cpp, replies scripted), Piper,
tools and recorded speaker, turn after turn, with everything that can happen
between turns mixed in at random:

- questions with scripted replies of random lengths, and follow-ups right after;
- barge-ins (push-to-talk while capturing or while the reply is spoken);
- discards (a short noise), history resets (what SIGUSR2 asks for);
- tool calls (timers set, ringing in the input's time, and cancelled);
- confirmations, answered yes, no and not at all;
- a microphone that stalls (no frame for a second).

After every turn the KV cache is checked against the engine's bookkeeping (on
the turn's own worker, as it returns). The report: turns, peak RSS at turns
100 and 1000, the thread count, the longest gap between two audio-loop frames
and every error event. The input is generated as fast as the loop takes it
and the loop waits for each reply (as ``run --input-file`` does), so runs do
not depend on the machine's speed; its gaps therefore include the turns. Exit 0 when there was no error
event, no cache drift, a constant thread count and, from 1000 turns, a peak
RSS at turn 1000 within 5 % of turn 100.

    python scripts/soak.py --turns 1000
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

STALL_SECONDS = 1.0
WORDS = "the quick brown fox jumps over a lazy dog while seven small birds sing in the old garden".split()
QUESTIONS = ("What is the weather like today?", "Tell me something about Paris.", "How far away is the moon?",
             "What should I cook tonight?")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now_mb() -> float:
    """VmRSS: unlike the peak, it shows whether memory is held or was a one-off."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Soak:
    def __init__(self, turns: int, seed: int, state_dir: Path) -> None:
        os.environ["XDG_STATE_HOME"] = str(state_dir)  # timers.json of this run only
        from scripted import ScriptedEngine
        from speech import VOICE_PATH, speak
        from twin_generator import load_make_twin

        from edge_assistant.allocator import map_large_buffers
        from edge_assistant.audio.playback import RecordingPlayback
        from edge_assistant.config import Config
        from edge_assistant.daemon.assistant import Assistant
        from edge_assistant.daemon.events import EventLog
        from edge_assistant.tools import FunctionTool, ToolResult
        from edge_assistant.tools.setup import build_tools
        from edge_assistant.tts import PiperSpeech
        from edge_assistant.turn import run_turn

        map_large_buffers()  # as `run` does (daemon/service.py) before it loads anything
        self.target = turns
        self.rng = random.Random(seed)
        config = Config()
        config.engine.max_tokens = 120
        config.engine.n_ctx = 2048
        config.earcons.listening = False
        config.tools.alarm_ring_seconds = 3.0
        config.tools.confirm_timeout_seconds = 3.0
        tools = build_tools(config)
        tools.toolbox.add(FunctionTool("unlock_door", "Unlock the front door.", (),
                                       lambda arguments: ToolResult({"door": "unlocked"}), confirm=True))
        model, mmproj = load_make_twin().ensure_twin(0)
        self.model = ScriptedEngine(model, mmproj, "Hello.", config.engine, tools=tools.toolbox.declarations())
        self.voice = PiperSpeech(VOICE_PATH, threads=1)
        self.questions = [speak(text).samples for text in QUESTIONS]
        self.events = EventLog(None)
        emit = self.events.emit
        self.events.emit = lambda kind, at, **fields: (self._on_event(kind, fields), emit(kind, at, **fields))  # type: ignore[method-assign]
        self.turns = self.errors = self.drifts = 0
        self.error_messages: list[str] = []
        self.rss_at: dict[int, float] = {}
        self.threads: list[int] = []
        self.stall_frames = 0
        self.counts: dict[str, int] = {}
        self.playback = RecordingPlayback(self.voice.sample_rate, state_dir / "out.wav")  # on disk as it plays

        def respond(engine, speech, speaker, started, tools=None, interruption=None):  # noqa: ANN001, ANN202
            self.model.say(self._next_reply())
            try:
                return run_turn(engine, speech, speaker, started, tools, interruption)
            finally:
                self.model.say(self.rng.choice(["Yes.", "No, thanks."]))  # heard by a confirmation's yes or no
                self._check_cache()

        self.assistant = Assistant(
            config, self.model.engine, self.voice, self._frames_source(), self.playback, None, self.events,
            wait_for_replies=True, respond=respond, tools=tools,
        )

    # -- what happens --------------------------------------------------------------

    def _next_reply(self) -> str:
        kind = self.rng.choices(["text", "timer", "cancel", "confirm"], [70, 12, 8, 10])[0]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "timer":
            return f"<|tool_call>call:set_timer{{seconds:{self.rng.randint(2, 12)}}}<tool_call|><|tool_response>Timer set."
        if kind == "cancel":
            return "<|tool_call>call:cancel_timer{all:true}<tool_call|><|tool_response>Cancelled."
        if kind == "confirm":
            return "<|tool_call>call:unlock_door{}<tool_call|><|tool_response>"
        sentences = self.rng.randint(1, 4)
        return " ".join(
            " ".join(self.rng.choices(WORDS, k=self.rng.randint(3, 12))).capitalize() + "." for _ in range(sentences)
        )

    def _check_cache(self) -> None:
        try:
            self.model.engine.check_cache()
        except RuntimeError as error:
            self.drifts += 1
            self.error_messages.append(str(error))

    def _on_event(self, kind: str, fields: dict) -> None:
        if kind == "error":
            self.errors += 1
            self.error_messages.append(fields.get("message", ""))
        if kind == "turn":
            self.turns += 1
            self.threads.append(threading.active_count())
            if self.turns in (100, 1000):
                self.rss_at[self.turns] = peak_rss_mb()
            if self.turns % 50 == 0:
                print(f"  {self.turns} turns, peak RSS {peak_rss_mb():.0f} MB, RSS now {rss_now_mb():.0f} MB, "
                      f"{threading.active_count()} threads", flush=True)

    # -- the input -----------------------------------------------------------------

    def _frames_source(self):  # noqa: ANN202
        from edge_assistant.audio.sources import EchoSource

        soak = self

        class Input:
            def frames(self) -> Iterator:
                return soak._frames()

            def stop(self) -> None:
                pass

        return EchoSource(Input(), self.playback)

    def _frames(self) -> Iterator:
        from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Frame
        from edge_assistant.daemon.assistant import State

        frame = MODEL_SAMPLE_RATE * 30 // 1000
        now = 0
        rng = self.rng

        def emit(samples: np.ndarray) -> Iterator:
            nonlocal now
            for start in range(0, len(samples) - frame + 1, frame):
                now += frame
                yield Frame(samples[start : start + frame], now)

        def silence(seconds: float) -> np.ndarray:
            return np.zeros(int(seconds * MODEL_SAMPLE_RATE), dtype=np.float32)

        def until_quiet(limit_seconds: float = 40.0, barge_in_after: int | None = None) -> Iterator:
            """Silence until the reply (and any announcement) is over."""
            speaking = 0
            for _ in range(int(limit_seconds * 1000 / 30)):
                assistant = self.assistant
                if assistant.state is State.SPEAKING:
                    speaking += 1
                    if barge_in_after is not None and speaking == barge_in_after:
                        self.counts["barge-in while speaking"] = self.counts.get("barge-in while speaking", 0) + 1
                        assistant.push_to_talk()
                        return
                if assistant.state in (State.IDLE, State.FOLLOW_UP) and not self.playback.busy and not assistant.reminders.playing:
                    return
                yield from emit(silence(0.03))

        while self.turns < self.target:
            episode = rng.choices(
                ["question", "follow-up", "noise", "reset", "barge-in", "push-to-talk", "stall", "ignore confirmation"],
                [40, 10, 8, 6, 14, 6, 6, 10],
            )[0]
            self.counts[episode] = self.counts.get(episode, 0) + 1
            if episode != "follow-up":
                yield from emit(silence(rng.uniform(0.3, 1.5)))
            if episode == "noise":
                noise = np.random.default_rng(rng.randrange(2**32)).uniform(-0.3, 0.3, int(0.12 * MODEL_SAMPLE_RATE))
                yield from emit(noise.astype(np.float32))
                yield from emit(silence(1.5))
                continue
            if episode == "ignore confirmation":
                yield from emit(silence(4.0))  # a question asked now goes unanswered
                continue
            if episode == "reset":
                self.assistant.request_reset()
            if episode == "push-to-talk":
                self.assistant.push_to_talk()
                yield from emit(silence(rng.uniform(0.1, 1.0)))
            question = rng.choice(self.questions)
            if episode == "barge-in" and rng.random() < 0.3:  # while the question is still being heard
                cut = rng.randrange(frame, len(question))
                yield from emit(question[:cut])
                self.assistant.push_to_talk()
                self.counts["barge-in while capturing"] = self.counts.get("barge-in while capturing", 0) + 1
            yield from emit(np.concatenate([question, silence(1.2)]))
            if episode == "stall":
                time.sleep(STALL_SECONDS)  # the microphone delivers nothing for a while
                self.stall_frames += 1
            yield from until_quiet(barge_in_after=rng.randint(1, 60) if episode == "barge-in" else None)
        yield from emit(silence(1.0))

    # -- the run --------------------------------------------------------------------

    def run(self) -> int:
        started = time.monotonic()
        self.assistant.run()
        timing = self.assistant.loop_timing
        self.model.close()
        threads = sorted(set(self.threads[len(self.threads) // 10 :]))  # after the first tenth: lazily started helpers
        print(f"turns: {self.turns} in {time.monotonic() - started:.0f} s; episodes: "
              + ", ".join(f"{name} {count}" for name, count in sorted(self.counts.items())))
        print("peak RSS: " + ", ".join(f"turn {turn}: {mb:.0f} MB" for turn, mb in sorted(self.rss_at.items()))
              + f"; at the end {peak_rss_mb():.0f} MB")
        print(f"threads as each turn ends (after the first tenth of the turns): "
              f"{threads[0] if threads else '-'}..{threads[-1] if threads else '-'}")
        print(f"longest audio-loop gap: {timing.longest_gap_ms:.0f} ms, {timing.gaps_over_100_ms} gaps over 100 ms "
              f"(file input: the loop waits for each reply, so these include turns; {self.stall_frames} stalls of "
              f"{STALL_SECONDS * 1000:.0f} ms injected)")
        print(f"error events: {self.errors}; cache drifts: {self.drifts}")
        for message in self.error_messages[:10]:
            print(f"  {message}")
        failed = self.errors or self.drifts or self.turns < self.target or len(threads) > 1
        if 100 in self.rss_at and 1000 in self.rss_at and self.rss_at[1000] > 1.05 * self.rss_at[100]:
            print("peak RSS at turn 1000 is more than 5 % above turn 100")
            failed = True
        return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    with tempfile.TemporaryDirectory(prefix="soak-") as state_dir:
        return Soak(args.turns, args.seed, Path(state_dir)).run()


if __name__ == "__main__":
    sys.exit(main())
