#!/usr/bin/env python3
"""Benchmark the always-listening daemon: the CPU cost of idle listening (wake
word + voice activity) as a real-time factor, and the latency from the end of
speech to the first reply audio, per turn, split by stage.

    python scripts/bench_daemon.py [--wake MODEL.onnx] [--minutes 5] [--idle-only]
    python scripts/bench_daemon.py --model M.gguf --mmproj P.gguf --voice V.onnx
    python scripts/bench_daemon.py --full-size        # E2B's real shapes (scripts/make_twin.py --full-size)
    python scripts/bench_daemon.py --full-size --realtime   # wall-clock turns, loop gaps, SIGTERM
    python scripts/bench_daemon.py --full-size --realtime --cpu-quota pi5   # on a Pi 5's share of this CPU (root)

Without --model it runs on the Gemma 4 twin; without --wake the wake-word cost is
not measured. Speech is synthesized with Piper; numbers, not pass/fail. The
reply is scripted English (tests/scripted.py: every token is still evaluated by
the model, only the choice of token is fixed), so the first sentence has a real
reply's length and Piper speaks words, not the random-weight twin's noise in a
dozen scripts, which would make "first audio" measure Piper spelling gibberish.

By default the questions are read from a file that waits for the engine: the
turns are timed as if this machine kept up with the speech. ``--realtime`` plays
them at the speed of speech instead, as a microphone would: the latencies then
include any backlog, and it also reports the audio loop's longest gap between two
frames and how long the daemon takes to exit on SIGTERM in the middle of a prefill.
``--cpu-quota`` shows a slower machine: the whole benchmark runs inside a cgroup
CPU quota, ``pi5`` the one at which the model prefills text as fast as a
Raspberry Pi 5 does E2B by llama.cpp's published figure (32 tokens/s).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_assistant.audio.files import write_wav_atomic
from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.audio.playback import RecordingPlayback
from edge_assistant.audio.sources import EchoSource, FileSource
from edge_assistant.config import Config
from edge_assistant.daemon.assistant import Assistant
from edge_assistant.daemon.events import EventLog
from edge_assistant.llm.engine import GemmaEngine
from edge_assistant.tts import PiperSpeech
from edge_assistant.endpoint import Endpointer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import CpuQuota, cpu_name, default_voice, pi5_like_quota, text_prefill_tok_s, twin_paths, underlined  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scripted import ScriptedEngine  # noqa: E402

SENTENCES = (
    "The kitchen timer is still running.",
    "Could you pass me the salt, please?",
    "We will leave for the station at eight.",
    "That film was much longer than I expected.",
)
QUESTIONS = (
    "What is the tallest mountain in Europe?",
    "How far away is the moon?",
    # About 5 s: long enough for streaming to matter.
    "My sister is flying in from Lisbon tomorrow evening, so what time should we leave for the airport?",
)
REPLY = "Leave at about half past six. The evening traffic to the airport is heavy, so give yourselves an hour."


def household_stream(voice: PiperSpeech, minutes: float) -> np.ndarray:
    """Mostly quiet room with conversation, noise and music: what a day sounds like."""
    rng = np.random.default_rng(0)
    speech = [voice.synthesize_16k(text).samples for text in SENTENCES]
    parts, total = [], 0
    while total < minutes * 60 * MODEL_SAMPLE_RATE:
        kind = rng.choice(["quiet", "speech", "noise", "music"], p=[0.5, 0.3, 0.1, 0.1])
        if kind == "speech":
            part = speech[rng.integers(len(speech))]
        else:
            length = int(rng.uniform(1, 5) * MODEL_SAMPLE_RATE)
            t = np.arange(length) / MODEL_SAMPLE_RATE
            level = {"quiet": 0.002, "noise": 0.03, "music": 0.0}[kind]
            part = rng.standard_normal(length) * level
            if kind == "music":
                part = 0.2 * np.sin(2 * np.pi * 220 * 2 ** (rng.integers(12) / 12) * t) * np.hanning(length)
        parts.append(part.astype(np.float32))
        total += len(part)
    return np.concatenate(parts)


def cpu_real_time_factor(process, samples: np.ndarray, frame_samples: int) -> float:
    started = time.process_time()
    for start in range(0, len(samples) - frame_samples + 1, frame_samples):
        process(samples[start : start + frame_samples], start + frame_samples)
    return (time.process_time() - started) / (len(samples) / MODEL_SAMPLE_RATE)


def idle_costs(config: Config, stream: np.ndarray, wake_models: list[Path]) -> dict[str, float]:
    frame_samples = MODEL_SAMPLE_RATE * config.input.frame_ms // 1000
    endpointer = Endpointer(
        config.endpoint, config.audio.vad_aggressiveness, config.input.frame_ms, config.audio.speech_padding_ms
    )
    costs = {"voice activity (webrtcvad endpointer)": cpu_real_time_factor(endpointer.push, stream, frame_samples)}
    if wake_models:
        from edge_assistant.wake.detector import WakeWordDetector

        detector = WakeWordDetector(wake_models)
        costs[f"wake word ({', '.join(path.stem for path in wake_models)})"] = cpu_real_time_factor(
            lambda frame, _end: detector.process(frame), stream, frame_samples
        )
    return costs


def questions_file(voice: PiperSpeech, workdir: Path, reply_room_seconds: float) -> Path:
    """The questions, each after 1 s of silence and followed by room for its reply."""
    questions = [voice.synthesize_16k(text).samples for text in QUESTIONS]
    gap = np.zeros(int(MODEL_SAMPLE_RATE * reply_room_seconds), dtype=np.float32)
    stream = np.concatenate([part for question in questions for part in (gap[: MODEL_SAMPLE_RATE], question, gap)])
    path = workdir / "questions.wav"
    write_wav_atomic(path, stream, MODEL_SAMPLE_RATE)
    return path


def turn_latencies(
    config: Config, engine: GemmaEngine, voice: PiperSpeech, workdir: Path, realtime: bool
) -> tuple[list[dict], Assistant]:
    """The daemon on a file of questions. Without ``realtime`` the file waits for
    the engine, so a streamed question is fed as if the machine kept up with the
    speech (the 'engine load' column says whether it does)."""
    path = questions_file(voice, workdir, 20.0 if realtime else 40.0)
    events_path = workdir / "events.jsonl"
    with events_path.open("w") as events:
        playback = RecordingPlayback(voice.sample_rate)
        assistant = Assistant(
            config, engine, voice, EchoSource(FileSource(path, config.input.frame_ms, realtime=realtime), playback),
            playback, None, EventLog(events), wait_for_replies=not realtime,
        )
        assistant.run()
    turns = [event for event in map(json.loads, events_path.read_text().splitlines()) if event["event"] == "turn"]
    return turns, assistant


def sigterm_during_prefill(
    model: Path, mmproj: Path, voice_path: Path, voice: PiperSpeech, workdir: Path
) -> tuple[float, int]:
    """(seconds from SIGTERM to exit, exit code) for ``edge-assistant run`` sent
    SIGTERM 3 s into a long streamed question, while its prefill runs."""
    question = np.concatenate([voice.synthesize_16k(QUESTIONS[2]).samples] * 3)  # about 15 s
    path = workdir / "long_question.wav"
    write_wav_atomic(path, np.concatenate([np.zeros(MODEL_SAMPLE_RATE, dtype=np.float32), question]), MODEL_SAMPLE_RATE)
    settings = workdir / "sigterm.toml"
    settings.write_text('[wake]\nmodel = "none"\n')  # voice activity alone starts the turn
    command = [
        sys.executable, "-m", "edge_assistant", "run", "--input-file", str(path), "--realtime", "--events",
        "--output-file", str(workdir / "out.wav"), "--model", str(model), "--mmproj", str(mmproj),
        "--voice", str(voice_path), "--config", str(settings),
    ]
    log_path = workdir / "sigterm.log"
    with log_path.open("w") as log_file:
        daemon = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file, text=True)
    assert daemon.stdout is not None
    for line in daemon.stdout:  # the model is loaded and listening once events flow
        if json.loads(line)["event"] == "speech_start":
            break
    else:
        raise SystemExit(f"the daemon ended before the question started: {log_path.read_text().strip()[-500:]}")
    time.sleep(3.0)
    sent = time.perf_counter()
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(30)
    return time.perf_counter() - sent, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wake", type=Path, action="append", default=[], help="wake model(s) to measure")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the idle stream")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--voice", type=Path)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--idle-only", action="store_true", help="only the idle cost: no model, no turns")
    parser.add_argument("--full-size", action="store_true", help="the full-size random-weight E2B twin (about 3.4 GB, built once)")
    parser.add_argument("--realtime", action="store_true", help="questions at the speed of speech; loop gaps; SIGTERM")
    parser.add_argument("--cpu-quota", metavar="CPUS|pi5", type=quota_argument,
                        help="run inside a cgroup CPU quota (root): CPUs' worth of time, or pi5 for the quota at which "
                             "the model prefills text at a Raspberry Pi 5's published 32 tokens/s")
    args = parser.parse_args()
    quota = CpuQuota() if args.cpu_quota else None
    try:
        return run(args, quota)
    finally:
        if quota:
            quota.close()


def quota_argument(text: str) -> str:
    if text != "pi5":
        try:
            cpus = float(text)
        except ValueError:
            cpus = 0.0
        if not 0.01 <= cpus <= (os.cpu_count() or 1):
            raise argparse.ArgumentTypeError(f"{text!r} is neither pi5 nor a number of CPUs from 0.01 to {os.cpu_count()}")
    return text


def run(args: argparse.Namespace, quota: CpuQuota | None) -> int:
    config = Config()
    config.engine.max_tokens = args.max_tokens
    config.engine.seed = 1
    config.earcons.listening = False
    voice = PiperSpeech(args.voice or default_voice())

    stream = household_stream(voice, args.minutes)
    print(f"idle listening, {len(stream) / MODEL_SAMPLE_RATE / 60:.1f} min of household audio, "
          f"{config.input.frame_ms} ms frames, CPU seconds per second of audio (one core = 1.0):")
    for name, factor in idle_costs(config, stream, args.wake).items():
        print(f"  {name:50s} {factor:.4f}  ({factor * 100:.2f}% of a core)")
    if args.idle_only:
        return 0

    model, mmproj = (args.model, args.mmproj) if args.model else twin_paths(full_size=args.full_size)
    with tempfile.TemporaryDirectory() as workdir:
        scripted = ScriptedEngine(model, mmproj, REPLY, config.engine)
        with scripted.engine as engine:
            print(f"\n{cpu_name()}, {engine.threads} threads, {model.name}")
            if quota:
                if args.cpu_quota == "pi5":
                    cpus, prefill = pi5_like_quota(engine, quota)
                    print(f"Pi 5-like: CPU quota {cpus:.2f} CPUs, text prefill {prefill:.1f} tokens/s")
                else:
                    quota.set(float(args.cpu_quota))
                    print(f"CPU quota {quota.cpus:g} CPUs: text prefill {text_prefill_tok_s(engine):.1f} tokens/s")
            # The encoder's buffers are reserved at its first clip: do it now, so neither
            # mode (streamed runs first) pays for it in its first turn.
            warm_up = engine.clip_encoder()
            warm_up.feed(np.zeros(MODEL_SAMPLE_RATE, dtype=np.float32))
            warm_up.encode(last=True)
            warm_up.close()
            by_mode = {}
            for stream_audio in (True, False):
                config.conversation.stream_audio = stream_audio
                engine.reset_history()
                turns, assistant = turn_latencies(config, engine, voice, Path(workdir), args.realtime)
                by_mode[stream_audio] = turns
                how = "streamed while spoken" if stream_audio else "evaluated after the speech ended"
                print_latencies(turns, model, how + (", in real time" if args.realtime else ""))
                if args.realtime:
                    timing = assistant.loop_timing
                    print(f"  audio loop: {timing.frames} frames of {config.input.frame_ms} ms, longest gap between "
                          f"two {timing.longest_gap_ms:.0f} ms, {timing.gaps_over_100_ms} gaps over 100 ms")
            print_ratios(by_mode[True], by_mode[False])
        if args.realtime:
            seconds, code = sigterm_during_prefill(model, mmproj, args.voice or default_voice(), voice, Path(workdir))
            print(f"\nSIGTERM 3 s into a 15 s streamed question: exited after {seconds:.2f} s with code {code}")
    return 0


def print_latencies(turns: list[dict], model: Path, how: str) -> None:
    print(f"\nlatency after the endpoint fired ({model.name}, question {how}), ms:")
    stages = ("encode", "prefill", "first_token", "tts_first_audio")
    print(underlined("  turn  speech s  " + "  ".join(f"{stage:>15s}" for stage in stages)
                     + "  steps  tokens after end  reply tokens ahead  engine load"))
    for number, turn in enumerate(turns, start=1):
        timings, tokens = turn["timings_ms"], turn["tokens"]
        speech_seconds = tokens["audio"] / 25
        # Engine work on the question per second of it: above 1.0 a live stream falls behind.
        load = (timings["encode"] + timings["prefill"]) / 1000 / speech_seconds
        print(f"  {number:4d}  {speech_seconds:8.2f}  " + "  ".join(f"{timings.get(stage, float('nan')):15.1f}" for stage in stages)
              + f"  {len(turn['audio_steps']):5d}  {tokens['after_speech_end']:16d}  {tokens['generated_ahead']:18d}  {load:11.2f}")
    if turns:
        median = statistics.median(turn["timings_ms"]["first_token"] for turn in turns)
        print(f"  median endpoint→first token: {median:.0f} ms (plus endpoint.end_silence_ms = "
              f"{turns[0]['timings_ms']['endpoint_silence']:.0f} ms of waiting for silence before it)")


def print_ratios(streamed: list[dict], one_shot: list[dict]) -> None:
    """Streamed against one-shot, turn by turn (the same audio): the issue's goal
    is <= 25 % for the 5 s question."""
    print("\nstreamed / evaluated after the speech ended, same audio:")
    for number, (ours, theirs) in enumerate(zip(streamed, one_shot), start=1):
        seconds = theirs["tokens"]["audio"] / 25
        work = [(turn["timings_ms"]["encode"], turn["timings_ms"]["encode"] + turn["timings_ms"]["prefill"]) for turn in (ours, theirs)]
        parts = [f"encoder {work[0][0]:.0f} / {work[1][0]:.0f} ms = {work[0][0] / work[1][0]:.2f}x",
                 f"engine work {work[0][1]:.0f} / {work[1][1]:.0f} ms = {work[0][1] / work[1][1]:.2f}x"]
        for stage in ("first_token", "tts_first_audio"):
            mine, base = ours["timings_ms"].get(stage), theirs["timings_ms"].get(stage)
            if mine is not None and base:
                parts.append(f"{stage} {mine:.0f} / {base:.0f} ms = {mine / base:.0%}")
        print(f"  turn {number} ({seconds:.1f} s): " + "; ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
