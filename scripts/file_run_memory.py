#!/usr/bin/env python3
"""Issue 22's file-run memory check: ``edge-assistant run --input-file …
--output-file …`` on the twin, 10 turns against 60, peak RSS of each run.
File input is read a block at a time and the recording written as it plays,
so a run six times as long may peak at most 40 MB higher.

    python scripts/file_run_memory.py                  # 10 and 60 turns
    python scripts/file_run_memory.py --turns 10 200   # any lengths; the first is the reference

The real daemon (its CLI, config, engine, Piper) on the Gemma 4 twin, with the
reply scripted (scripts/scripted_daemon.py): every turn then does the same
work, so only the length of the run differs. Peak RSS is the kernel's own
(``ru_maxrss`` of the finished child). Exit 1 when a run's turns are not all
answered or a longer run peaks more than ``--limit-mb`` above the first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

QUESTIONS = ("What is the weather like today?", "Tell me something about Paris.", "How far away is the moon?",
             "What should I cook tonight?", "Who wrote the first novel?")
REPLY = "Here is a short answer. It has two sentences."
SILENCE_AFTER_SECONDS = 6.0  # the endpoint, the reply spoken, and a pause before the next question
LIMIT_MB = 40.0


def write_input(path: Path, turns: int) -> None:
    """``turns`` questions, each followed by enough silence for its reply, written
    question by question so the script itself holds only one at a time."""
    import soundfile

    from edge_assistant.audio.format import MODEL_SAMPLE_RATE
    from speech import silence, speak

    with soundfile.SoundFile(path, "w", MODEL_SAMPLE_RATE, 1, subtype="PCM_16") as file:
        file.write(silence(0.5))
        for turn in range(turns):
            file.write(speak(QUESTIONS[turn % len(QUESTIONS)]).samples)
            file.write(silence(SILENCE_AFTER_SECONDS))


def run(turns: int, workdir: Path) -> tuple[int, float, float]:
    """One daemon run of ``turns`` questions: (turns answered, peak RSS in MB,
    seconds of input)."""
    from edge_assistant.audio.format import MODEL_SAMPLE_RATE
    from speech import VOICE_PATH
    from twin_generator import load_make_twin

    model, mmproj = load_make_twin().ensure_twin(0)
    stream, events = workdir / f"in{turns}.wav", workdir / f"events{turns}.jsonl"
    write_input(stream, turns)
    command = [
        sys.executable, str(ROOT / "scripts" / "scripted_daemon.py"), "--reply", REPLY,
        "run", "--input-file", str(stream), "--output-file", str(workdir / f"out{turns}.wav"), "--events",
        "--model", str(model), "--mmproj", str(mmproj), "--voice", str(VOICE_PATH), "--max-tokens", "60", "--seed", "1",
    ]
    env = {**os.environ, "XDG_CONFIG_HOME": str(workdir / "config"), "XDG_STATE_HOME": str(workdir / "state"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with events.open("w") as out, (workdir / f"log{turns}.txt").open("w") as log:
        process = subprocess.Popen(command, stdout=out, stderr=log, stdin=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"the {turns}-turn run failed (exit {process.returncode}): "
                         f"{(workdir / f'log{turns}.txt').read_text().strip().splitlines()[-1:]}")
    answered = sum(json.loads(line)["event"] == "turn" for line in events.read_text().splitlines())
    import soundfile

    seconds = soundfile.info(stream).frames / MODEL_SAMPLE_RATE
    return answered, usage.ru_maxrss / 1024, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[10, 60], metavar="N",
                        help="run lengths in turns; the first is the reference (default: 10 60)")
    parser.add_argument("--limit-mb", type=float, default=LIMIT_MB, help="allowed peak RSS above the reference run")
    args = parser.parse_args()
    if min(args.turns) < 1 or len(args.turns) < 2:
        parser.error("--turns needs two or more lengths of at least 1")
    from benchlib import cpu_name

    print(f"CPU: {cpu_name()}; the twin, scripted reply {REPLY!r}", flush=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix="file-run-memory-") as scratch:
        reference = None
        for turns in args.turns:
            answered, peak, seconds = run(turns, Path(scratch))
            reference = peak if reference is None else reference
            over = peak - reference
            ok = answered == turns and over <= args.limit_mb
            failed |= not ok
            print(f"{turns:>4} turns ({seconds / 60:.1f} min of input): {answered} answered, peak RSS {peak:.0f} MB"
                  f" ({over:+.0f} MB){'' if ok else '  <-- FAIL'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
