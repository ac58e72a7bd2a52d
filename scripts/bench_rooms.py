"""Benchmark what each room costs the brain (README "Rooms").

Per satellite: the listening stages every room runs on its own audio (its wake
word detector and endpointer), as a fraction of one core over a household's
audio, and the memory one more detector takes. With ``--house``, also the whole
brain's CPU (``edge-assistant run``: links, per-room loops, wake words,
endpointers) with 1 and 3 of our satellites streaming household audio to it,
each satellite a separate process, and what one more satellite adds. Per conversation: the KV cache a
room's ``engine.n_ctx`` needs (from the engine's own sequence state size) and
the resident memory of an engine holding 1 and N conversations, each loaded in a
fresh process.

    python scripts/bench_rooms.py [--wake MODEL.onnx] [--minutes 2] [--rooms 4] [--full-size | --model GGUF --mmproj GGUF]
                                  [--house [--seconds 60]]

``--full-size``: E2B's real shapes (random weights, scripts/make_twin.py
--full-size); without, the small twin; ``--model``/``--mmproj``: those files. CPU figures name the CPU and the load
average: the wake stage's share of a core moves with what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_daemon import household_stream, idle_costs  # noqa: E402
from benchlib import cpu_name, default_voice, own_memory, twin_paths, underlined  # noqa: E402

from edge_assistant.audio.files import write_wav_atomic  # noqa: E402
from edge_assistant.audio.format import MODEL_SAMPLE_RATE  # noqa: E402
from edge_assistant.config import Config, EngineConfig  # noqa: E402
from edge_assistant.tts import PiperSpeech  # noqa: E402

MIB = 2**20
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def engine_child(conversations: int, files: list[str], n_ctx: int) -> int:
    """Load an engine with ``conversations`` rooms; print its KV per token and RSS."""
    from edge_assistant.llm.engine import GemmaEngine

    model, mmproj = (Path(files[0]), Path(files[1]))
    engine = GemmaEngine(model, mmproj, EngineConfig(n_ctx=n_ctx), conversations=conversations)
    memory = own_memory()
    print(json.dumps({"kv_bytes_per_token": engine.kv_bytes_per_token(), "rss": memory.rss, "anon": memory.anon}))
    engine.close()
    return 0


def engine_memory(conversations: int, files: tuple[Path, Path], n_ctx: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--engine-child", str(conversations), "--n-ctx", str(n_ctx),
         "--model", str(files[0]), "--mmproj", str(files[1])],
        capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def house_cpu(satellites: int, wake: list[Path], household: Path, seconds: float, workdir: Path) -> float:
    """The brain's CPU share (one core = 1.00) while ``satellites`` of ours stream to it and nobody speaks to it."""
    from rooms_house import free_port, wait_until

    model, mmproj = twin_paths(False)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    ports = [free_port() for _ in range(satellites)]
    children = [
        subprocess.Popen([sys.executable, "-m", "edge_assistant", "satellite", "--uri", f"tcp://127.0.0.1:{port}",
                          "--input-file", str(household), "--realtime", "--output-file", str(workdir / f"speaker-{port}.wav"),
                          "--quiet"], env=env)
        for port in ports
    ]
    config = workdir / f"house-{satellites}.toml"
    config.write_text(
        f'[input]\nenabled = false\n[wake]\nmodel = "{",".join(str(path) for path in wake) or "none"}"\n'
        f'[tools]\nstate_dir = "{workdir}"\n'
        + "".join(f'[[satellite]]\nname = "room{index}"\nuri = "tcp://127.0.0.1:{port}"\n' for index, port in enumerate(ports))
    )
    log = workdir / f"house-{satellites}.log"
    with log.open("w") as errors:
        brain = subprocess.Popen([sys.executable, "-m", "edge_assistant", "run", "--config", str(config), "--model", str(model),
                                  "--mmproj", str(mmproj), "--voice", str(default_voice())], env=env, stderr=errors)
    try:
        wait_until(lambda: log.read_text().count("): connected") >= satellites or brain.poll() is not None, 300,
                   "every satellite connected")
        if brain.poll() is not None:
            raise SystemExit(f"the brain exited: {log.read_text()[-2000:]}")
        time.sleep(5.0)  # past the start-up
        started, cpu = time.monotonic(), process_cpu_seconds(brain.pid)
        time.sleep(seconds)
        return (process_cpu_seconds(brain.pid) - cpu) / (time.monotonic() - started)
    finally:
        for child in [brain, *children]:
            child.terminate()
            child.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wake", type=Path, action="append", default=[], help="wake model .onnx (repeatable)")
    parser.add_argument("--minutes", type=float, default=2.0, help="household audio per detector")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--n-ctx", type=int, default=EngineConfig().n_ctx)
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--model", type=Path, help="GGUF model (default: the twin); with --mmproj")
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--house", action="store_true", help="also the whole brain's CPU with 1 and 3 satellites")
    parser.add_argument("--seconds", type=float, default=60.0, help="--house: how long each is measured")
    parser.add_argument("--engine-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_child:
        return engine_child(args.engine_child, [args.model, args.mmproj], args.n_ctx)
    files = (args.model, args.mmproj) if args.model and args.mmproj else twin_paths(args.full_size)

    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; load average at start "
          f"{', '.join(f'{value:.1f}' for value in os.getloadavg())}")
    print(underlined("Listening, per satellite (one core = 1.00)"))
    if args.wake:  # first, in a process that has loaded no detector yet
        from edge_assistant.wake.detector import WakeWordDetector

        before = own_memory().rss
        first = WakeWordDetector(args.wake)
        first.process(np.zeros(16000, dtype=np.float32))  # every session run once, as in a listening room
        loaded = own_memory().rss
        rooms = [first.sibling() for _ in range(args.rooms - 1)]  # what the brain gives the other rooms
        for detector in rooms:
            detector.process(np.zeros(16000, dtype=np.float32))
        print(f"  memory: the models {(loaded - before) / MIB:.1f} MiB RSS once (onnxruntime's start-up included), "
              f"then {(own_memory().rss - loaded) / max(1, args.rooms - 1) / MIB:.2f} MiB per room")
    stream = household_stream(PiperSpeech(default_voice()), args.minutes)
    for stage, cost in idle_costs(Config(), stream, args.wake).items():
        print(f"  {stage}: {cost:.3f} of a core")

    print(underlined(f"Conversations, engine.n_ctx {args.n_ctx} ({files[0].name})"))
    started = time.perf_counter()
    one, many = engine_memory(1, files, args.n_ctx), engine_memory(args.rooms, files, args.n_ctx)
    per_room = one["kv_bytes_per_token"] * args.n_ctx
    print(f"  KV cache per room (sequence state size x n_ctx): {per_room / MIB:.1f} MiB")
    print(f"  RSS, 1 conversation: {one['rss'] / MIB:.0f} MiB; {args.rooms}: {many['rss'] / MIB:.0f} MiB "
          f"(+{(many['rss'] - one['rss']) / (args.rooms - 1) / MIB:.1f} MiB per extra room, anonymous "
          f"+{(many['anon'] - one['anon']) / (args.rooms - 1) / MIB:.1f})")
    print(f"  ({time.perf_counter() - started:.0f} s to load both)")
    if args.house:
        print(underlined(f"The brain listening to N satellites (small twin, {args.seconds:g} s each, nobody speaking to it)"))
        with tempfile.TemporaryDirectory(prefix="bench-rooms-") as scratch:
            household = Path(scratch) / "household.wav"
            write_wav_atomic(household, household_stream(PiperSpeech(default_voice()), args.seconds / 60 + 1), MODEL_SAMPLE_RATE)
            one = house_cpu(1, args.wake, household, args.seconds, Path(scratch))
            three = house_cpu(3, args.wake, household, args.seconds, Path(scratch))
        print(f"  1 satellite: {one:.3f} of a core; 3 satellites: {three:.3f}; each one more: {(three - one) / 2:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
