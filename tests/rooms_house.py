"""Two rooms on 127.0.0.1 for the rooms tests: the real wyoming-satellite 1.0.0
from PyPI (its own venv, ``scripts/wyoming_satellite_venv.sh``) with a
file-backed microphone and speaker, our own satellite in this process with a
paced microphone and a recorded speaker, and the brain (``edge-assistant run``
with the twin and a scripted reply) as a child process.

``python tests/rooms_house.py --reply TEXT -- RUN-ARGS``: the brain itself, its
engine scripted to say TEXT every turn."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Frame  # noqa: E402
from edge_assistant.audio.playback import RecordingPlayback  # noqa: E402
from edge_assistant.audio.sources import EchoSource  # noqa: E402

TICK_SECONDS = 0.064  # one satellite chunk (1024 samples)
SPEAKER_RATE = 22050


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PacedMicrophone:
    """A microphone that hears silence unless told to :meth:`say` something,
    paced in real time."""

    def __init__(self) -> None:
        self._pending: queue.Queue[np.ndarray] = queue.Queue()
        self._stopped = threading.Event()
        self._said_until = 0.0

    def say(self, samples: np.ndarray) -> None:
        self._pending.put(np.asarray(samples, dtype=np.float32))

    def chunks(self, samples: int) -> Iterator[np.ndarray]:
        """``samples`` at a time, in real time: what was said, else silence."""
        buffered = np.zeros(0, dtype=np.float32)
        started = time.monotonic()
        sent = 0
        while not self._stopped.is_set():
            while len(buffered) < samples:
                try:
                    buffered = np.concatenate([buffered, self._pending.get_nowait()])
                except queue.Empty:
                    buffered = np.concatenate([buffered, np.zeros(samples - len(buffered), dtype=np.float32)])
            chunk, buffered = buffered[:samples], buffered[samples:]
            sent += samples
            time.sleep(max(0.0, started + sent / MODEL_SAMPLE_RATE - time.monotonic()))
            yield chunk

    def stop(self) -> None:
        self._stopped.set()


class PacedSource:
    """:class:`PacedMicrophone` as our satellite's audio source."""

    def __init__(self, microphone: PacedMicrophone) -> None:
        self.microphone = microphone

    def frames(self) -> Iterator[Frame]:
        end = 0
        for chunk in self.microphone.chunks(1024):
            end += len(chunk)
            yield Frame(chunk, end)

    def stop(self) -> None:
        self.microphone.stop()


class RealSatellite:
    """wyoming-satellite 1.0.0 (``python -m wyoming_satellite``, always
    streaming): its microphone is ``tail -f`` of a raw file we append to in
    real time, its speaker appends to another (the command is restarted per reply)."""

    def __init__(self, python: str, directory: Path, name: str, port: int | None = None) -> None:
        self.python, self.directory, self.name = python, directory, name
        self.port = port or free_port()
        self.microphone = PacedMicrophone()
        self.mic_path = directory / f"{name}.mic.raw"
        self.speaker_path = directory / f"{name}.speaker.raw"
        self.mic_path.write_bytes(b"")
        self.speaker_path.write_bytes(b"")
        self.process: subprocess.Popen | None = None
        self._feeder = threading.Thread(target=self._feed, name=f"{name}-mic", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        with self.mic_path.open("ab") as mic:
            for chunk in self.microphone.chunks(1024):
                mic.write((np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes())
                mic.flush()

    def start(self) -> RealSatellite:
        self.process = subprocess.Popen(
            [self.python, "-m", "wyoming_satellite", "--name", self.name, "--uri", f"tcp://127.0.0.1:{self.port}",
             "--mic-command", f"tail -c 0 -f {self.mic_path}", "--snd-command", f"sh -c 'cat >> {self.speaker_path}'",
             "--no-zeroconf"],
            stdout=subprocess.DEVNULL, stderr=open(self.directory / f"{self.name}.log", "ab"),  # noqa: SIM115
            start_new_session=True,  # its microphone and speaker commands go with it
        )
        wait_until(lambda: _accepts(self.port), 30, f"wyoming-satellite {self.name} listening")
        return self

    def kill(self) -> None:
        """The satellite and its microphone and speaker commands, at once."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def say(self, samples: np.ndarray) -> None:
        self.microphone.say(samples)

    def heard(self) -> np.ndarray:
        data = self.speaker_path.read_bytes()
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0

    def close(self) -> None:
        self.kill()
        self.microphone.stop()


class OurSatellite:
    """``edge-assistant satellite`` in this process, as its command builds it
    for files: the paced microphone heard beside a recorded speaker."""

    def __init__(self, name: str, port: int | None = None, mute_while_playing: bool = False) -> None:
        from edge_assistant.rooms.satellite import SatelliteOptions, ThinSatellite

        self.name = name
        self.port = port or free_port()
        self.microphone = PacedMicrophone()
        self.speaker = RecordingPlayback(SPEAKER_RATE)
        self.satellite = ThinSatellite(EchoSource(PacedSource(self.microphone), self.speaker), self.speaker,
                                       SatelliteOptions(name, "", mute_while_playing))
        self._thread = threading.Thread(target=lambda: asyncio.run(self.satellite.serve("127.0.0.1", self.port)),
                                        name=f"satellite-{name}", daemon=True)

    def start(self) -> OurSatellite:
        self._thread.start()
        wait_until(lambda: _accepts(self.port), 30, f"our satellite {self.name} listening")
        return self

    def say(self, samples: np.ndarray) -> None:
        self.microphone.say(samples)

    def heard(self) -> np.ndarray:
        return self.speaker.recording()

    def close(self) -> None:
        self.satellite.stop()
        self._thread.join(5)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {seconds:g} s: {what}")
        time.sleep(0.05)


class Brain:
    """``edge-assistant run`` with the rooms' config, its events read as they come."""

    def __init__(self, directory: Path, config_text: str, reply: str, twin, voice: Path, *run_args: str) -> None:  # noqa: ANN001
        """``run_args``: more for ``run`` (the local room's --input-file, --output-file)."""
        self.config_path = directory / "brain.toml"
        self.config_path.write_text(config_text)
        self.log_path = directory / "brain.log"
        self.events: list[dict] = []
        command = [
            sys.executable, str(Path(__file__)), "--reply", reply, "--", "run", "--config", str(self.config_path),
            "--model", str(twin.model), "--mmproj", str(twin.mmproj), "--voice", str(voice), "--events", *run_args,
        ]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(self.log_path, "ab"), text=True, env=environment)  # noqa: SIM115
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def of(self, room: str, kind: str) -> list[dict]:
        return [event for event in list(self.events) if event.get("room") == room and event["event"] == kind]

    def wait_for(self, room: str, kind: str, count: int = 1, seconds: float = 120) -> list[dict]:
        wait_until(lambda: len(self.of(room, kind)) >= count or self.process.poll() is not None, seconds,
                   f"{count} {kind} event(s) in {room}")
        assert self.process.poll() is None, f"the brain exited:\n{self.log()[-3000:]}"
        return self.of(room, kind)

    def connections(self, room: str) -> int:
        """How often the brain has connected to ``room``'s satellite (from its log)."""
        return sum(f"room {room} (" in line and line.endswith("): connected") for line in self.log().splitlines())

    def wait_connected(self, *rooms: str, times: int = 1, seconds: float = 180) -> None:
        for room in rooms:
            wait_until(lambda room=room: self.connections(room) >= times or self.process.poll() is not None,
                       seconds, f"{room} connected {times} time(s)")
            assert self.process.poll() is None, f"the brain exited:\n{self.log()[-3000:]}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def loud_seconds(samples: np.ndarray, rate: int = SPEAKER_RATE) -> float:
    """How long the speaker played something audible."""
    return float(np.count_nonzero(np.abs(samples) > 0.02)) / rate


def main() -> int:
    args = sys.argv[1:]
    reply = args[args.index("--reply") + 1]
    rest = args[args.index("--") + 1 :]
    from scripted import scripted_engine_class

    from edge_assistant import cli
    from edge_assistant.rooms import house

    house.GemmaEngine = scripted_engine_class(reply)
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
