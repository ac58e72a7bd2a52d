#!/usr/bin/env python3
"""How long ``edge-assistant run`` takes to exit on SIGTERM, and with what
code, in each state the issue lists: idle, capturing, streaming, answering
ahead, speaking, ringing, confirming, microphone stalled.

    python scripts/sigterm_states.py            # every state, on the twin
    python scripts/sigterm_states.py speaking ringing

The real daemon (its CLI, config, engine, Piper) on the Gemma 4 twin with
scripted replies (scripts/scripted_daemon.py's way), fed a file in real time;
"microphone stalled" uses tests/fake_sounddevice.py's microphone, which
delivers under a second and then nothing. Each state is reached from the
daemon's own events, then SIGTERM is sent and the time to exit measured. The
goal is under 2 s with code 0 in every state. A report, not a timed test: the
figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

TIMER_REPLY = '<|tool_call>call:set_timer{seconds:2}<tool_call|><|tool_response>Your timer is set.'
CONFIRM_REPLY = '<|tool_call>call:unlock_door{}<tool_call|><|tool_response>'
SPOKEN_REPLY = "Here is a long answer. " * 8
QUESTION_AT, LIMIT_SECONDS = 1.5, 2.0


class Daemon:
    """One ``run`` in a child process: its events and log lines as they come."""

    def __init__(self, state: str, reply: str, workdir: Path) -> None:
        from edge_assistant.audio.files import write_wav_atomic
        from edge_assistant.audio.format import MODEL_SAMPLE_RATE
        from speech import VOICE_PATH, concat, silence, speak
        from twin_generator import load_make_twin

        model, mmproj = load_make_twin().ensure_twin(0)
        question = speak("What is the weather like in Paris today, and tomorrow?")
        self.question_end = QUESTION_AT + question.seconds
        stream = workdir / f"{state}.wav"
        write_wav_atomic(stream, concat(silence(QUESTION_AT), question, silence(60.0)).samples, MODEL_SAMPLE_RATE)
        source = [] if state == "microphone stalled" else ["--input-file", str(stream)]
        command = [
            sys.executable, __file__, "--child", state, "--reply", reply, "run", *source, "--realtime", "--events",
            "--model", str(model), "--mmproj", str(mmproj), "--voice", str(VOICE_PATH), "--max-tokens", "120",
            "--output-file", str(workdir / f"{state}.out.wav"),
        ]
        env = {**os.environ, "XDG_CONFIG_HOME": str(workdir / "config"), "XDG_STATE_HOME": str(workdir / state)}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.events: queue.Queue[dict] = queue.Queue()
        self.ready = threading.Event()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_events, daemon=True).start()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_events(self) -> None:
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)
            if "ready:" in line:
                self.ready.set()

    def wait_for(self, kind: str, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.05)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if event["event"] == kind:
                return event
        raise RuntimeError(f"no {kind} event; log: {''.join(self.stderr[-5:])}")

    def terminate(self) -> tuple[float, int]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        return time.monotonic() - started, code


def reach(state: str, daemon: Daemon) -> None:
    """Drive the daemon into ``state``."""
    if not daemon.ready.wait(300):
        raise RuntimeError(f"the daemon never became ready: {''.join(daemon.stderr[-5:])}")
    if state == "idle":
        time.sleep(0.5)
    elif state == "capturing":
        daemon.process.send_signal(signal.SIGUSR1)  # push-to-talk: listening for a question
        daemon.wait_for("wake")
    elif state == "streaming":
        daemon.wait_for("speech_start")
        time.sleep(1.0)  # mid-question: its audio is being fed to the model
    elif state == "answering ahead":
        start = daemon.wait_for("speech_start")
        time.sleep(max(0.0, daemon.question_end - start["t"] + 0.35))  # in the pause, before the endpoint decides
    elif state == "speaking":
        daemon.wait_for("speak_start")
        time.sleep(0.3)
    elif state in ("ringing", "confirming"):
        daemon.wait_for("announce", timeout=180)
        time.sleep(0.3)
    elif state == "microphone stalled":
        time.sleep(3.0)  # the fake microphone went quiet after its first second


STATES: dict[str, str] = {
    "idle": SPOKEN_REPLY, "capturing": SPOKEN_REPLY, "streaming": SPOKEN_REPLY, "answering ahead": SPOKEN_REPLY,
    "speaking": SPOKEN_REPLY, "ringing": TIMER_REPLY, "confirming": CONFIRM_REPLY, "microphone stalled": SPOKEN_REPLY,
}


def child(state: str, reply: str, rest: Sequence[str]) -> int:
    """The daemon itself, with the scripted sampler and, per state, a fake
    microphone or a tool that asks for confirmation."""
    from scripted import scripted_engine_class

    from edge_assistant import cli
    from edge_assistant.daemon import service
    from edge_assistant.tools import FunctionTool, ToolResult
    from edge_assistant.tools import setup as tool_setup

    service.GemmaEngine = scripted_engine_class(reply)
    if state == "confirming":
        build = tool_setup.build_tools

        def with_a_confirm_tool(config):  # noqa: ANN001, ANN202
            tools = build(config)
            tools.toolbox.add(FunctionTool("unlock_door", "Unlock the front door.", (),
                                           lambda arguments: ToolResult({"door": "unlocked"}), confirm=True))
            return tools

        service.build_tools = with_a_confirm_tool
    if state == "microphone stalled":
        from fake_sounddevice import fake_input

        from edge_assistant.audio import sources

        sources.import_sounddevice = lambda: fake_input(["audio"])
        sources.MicrophoneSource.STALL_SECONDS = 600.0  # stalled for the whole measurement
    return cli.main(list(rest))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"] and argv[2:3] == ["--reply"]:  # the daemon this script starts
        return child(argv[1], argv[3], argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("states", nargs="*", metavar="STATE", help=f"default: all ({', '.join(STATES)})")
    args = parser.parse_args(argv)
    unknown = [state for state in args.states if state not in STATES]
    if unknown:
        print(f"sigterm_states.py: unknown state: {', '.join(unknown)} (states: {', '.join(STATES)})", file=sys.stderr)
        return 2
    failures = 0
    with tempfile.TemporaryDirectory(prefix="sigterm-") as scratch:
        for state in args.states or list(STATES):
            daemon = Daemon(state, STATES[state], Path(scratch))
            try:
                reach(state, daemon)
                seconds, code = daemon.terminate()
            except RuntimeError as error:
                daemon.process.kill()
                print(f"{state:>20}: not reached: {error}".rstrip(), flush=True)
                failures += 1
                continue
            ok = seconds < LIMIT_SECONDS and code == 0
            failures += not ok
            print(f"{state:>20}: exit {code} after {seconds:.2f} s{'' if ok else '  <-- over 2 s or non-zero'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
