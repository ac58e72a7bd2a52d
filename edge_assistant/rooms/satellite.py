"""``edge-assistant satellite``: our own thin Wyoming satellite for a Pi Zero 2
W or an old phone, with no model: the microphone streamed to whoever runs it
(the brain, Home Assistant), the audio it is sent played, ``ping`` answered.

Like wyoming-satellite's always-streaming mode it sends ``run-pipeline`` (from
the wake stage) after ``run-satellite`` and then endless 16 kHz ``audio-chunk``s
of 1024 samples;
the controller does the wake word and the endpointing. Differences that
matter on a LAN:

- While it plays, each chunk is marked (``"playing": true`` in its data) or,
  with ``--mute-while-playing``, replaced by silence, so the brain hears less of
  its own reply.
- A controller that stops reading never blocks the microphone: the oldest
  unsent audio is dropped (and logged), the newest kept.
- A new controller's ``run-satellite`` takes the stream over (a restarted brain
  gets it back at once, even while its old connection is still half open).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, Satellite
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.satellite import PauseSatellite, RunSatellite
from wyoming.server import AsyncEventHandler, AsyncTcpServer

from .. import __version__
from ..audio.format import MODEL_SAMPLE_RATE
from ..audio.playback import Playback
from ..audio.sources import AudioSource
from ..config import Config
from ..errors import UsageError
from .pcm import CHUNK_SAMPLES, chunk_of, pcm16_samples

log = logging.getLogger(__name__)

FRAME_MS = CHUNK_SAMPLES * 1000 // MODEL_SAMPLE_RATE  # 64 ms: one frame is one chunk
BACKLOG_SECONDS = 2.0  # unsent microphone audio kept for a slow controller; older is dropped
DROP_REPORT_SECONDS = 5.0
SPEAKER_RATE = 22050  # Piper's rate: what the brain sends, played without resampling


@dataclass
class SatelliteOptions:
    name: str = "edge-assistant-satellite"
    area: str = ""
    mute_while_playing: bool = False


class MicrophoneStream:
    """The microphone's chunks waiting for the controller: appended from the
    microphone thread without ever blocking it, the oldest dropped (and
    counted) when the controller stops reading."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._chunks: deque[Event] = deque(maxlen=int(BACKLOG_SECONDS * MODEL_SAMPLE_RATE / CHUNK_SAMPLES))
        self._ready = asyncio.Event()
        self.dropped = 0
        self._reported_at = -float("inf")

    def put(self, event: Event) -> None:
        """From the microphone thread."""
        self._loop.call_soon_threadsafe(self._append, event)

    def _append(self, event: Event) -> None:
        if len(self._chunks) == self._chunks.maxlen:
            self.dropped += 1
            now = time.monotonic()
            if now - self._reported_at >= DROP_REPORT_SECONDS:
                self._reported_at = now
                log.warning("the controller is not reading: dropped the oldest microphone audio (%d chunks so far)", self.dropped)
        self._chunks.append(event)
        self._ready.set()

    async def get(self) -> Event:
        while not self._chunks:
            self._ready.clear()
            await self._ready.wait()
        return self._chunks.popleft()


class ThinSatellite:
    """The satellite's state: the microphone thread, the controller streaming
    it (one at a time), and the speaker."""

    def __init__(self, source: AudioSource, playback: Playback, options: SatelliteOptions) -> None:
        self.source = source
        self.playback = playback
        self.options = options
        self.controller: SatelliteHandler | None = None
        self.frames_read = 0  # microphone frames taken (they keep coming whatever the controller does)
        self.on_status: Callable[[str], None] = lambda text: None
        self.on_frame: Callable[[], None] = lambda: None  # the systemd watchdog
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mic_thread: threading.Thread | None = None
        self._sent = 0  # samples sent since streaming began, for chunk timestamps

    def info(self) -> Info:
        attribution = Attribution(name="edge-assistant", url="https://github.com/")
        satellite = Satellite(
            name=self.options.name, attribution=attribution, installed=True,
            description="edge-assistant thin satellite", version=__version__, area=self.options.area or None,
        )
        return Info(satellite=satellite)

    async def serve(self, host: str, port: int, started: Callable[[], None] = lambda: None) -> None:
        self._loop = asyncio.get_running_loop()
        server = AsyncTcpServer(host, port)
        await server.start(lambda reader, writer: SatelliteHandler(self, reader, writer))
        self._mic_thread = threading.Thread(target=self._read_microphone, name="microphone", daemon=True)
        self._mic_thread.start()
        log.info("satellite %s listening on tcp://%s:%d", self.options.name, host, port)
        self.on_status("waiting for a controller")
        started()
        try:
            while self._mic_thread.is_alive():
                await asyncio.sleep(0.2)
        finally:
            await server.stop()

    def stop(self) -> None:
        self.source.stop()

    def _read_microphone(self) -> None:
        """Every frame is taken as it comes, whatever the controller does."""
        for frame in self.source.frames():
            self.frames_read += 1
            self.on_frame()
            controller = self.controller
            if controller is None:
                continue
            samples, playing = frame.samples, self.playback.busy
            if playing and self.options.mute_while_playing:
                samples = np.zeros_like(samples)
            event = chunk_of(samples, MODEL_SAMPLE_RATE, timestamp=self._sent * 1000 // MODEL_SAMPLE_RATE).event()
            self._sent += len(samples)
            if playing:
                event.data["playing"] = True
            controller.stream.put(event)

    def take(self, handler: SatelliteHandler) -> None:
        previous, self.controller = self.controller, handler
        if previous is not None and previous is not handler:
            log.info("a new controller took the satellite over")
            previous.streaming = False
        self._sent = 0
        self.on_status(f"streaming to {handler.peer}")

    def release(self, handler: SatelliteHandler) -> None:
        if self.controller is handler:
            self.controller = None
            self.on_status("waiting for a controller")


class SatelliteHandler(AsyncEventHandler):
    """One controller's connection."""

    def __init__(self, satellite: ThinSatellite, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.satellite = satellite
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.stream = MicrophoneStream(asyncio.get_running_loop())
        self.streaming = False
        self._sender: asyncio.Task | None = None
        log.info("controller connected from %s", self.peer)

    async def run(self) -> None:
        """Until the controller goes; one that vanishes (reset) is an ordinary end."""
        try:
            await super().run()
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            log.info("controller %s: connection lost (%s)", self.peer, error)

    async def handle_event(self, event: Event) -> bool:
        satellite = self.satellite
        if Describe.is_type(event.type):
            await self.write_event(satellite.info().event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif RunSatellite.is_type(event.type):
            satellite.take(self)
            self.streaming = True
            # As wyoming-satellite without a local wake word: the controller listens for it.
            await self.write_event(RunPipeline(start_stage=PipelineStage.WAKE, end_stage=PipelineStage.TTS, restart_on_end=True).event())
            if self._sender is None:
                self._sender = asyncio.create_task(self._send_microphone())
        elif PauseSatellite.is_type(event.type):
            self.streaming = False
            satellite.release(self)
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            satellite.playback.write(pcm16_samples(chunk), chunk.rate)
        elif not (AudioStart.is_type(event.type) or AudioStop.is_type(event.type)):
            log.debug("%s from the controller", event.type)
        return True

    async def _send_microphone(self) -> None:
        while True:
            event = await self.stream.get()
            if self.streaming:
                await self.write_event(event)

    async def disconnect(self) -> None:
        log.info("controller %s disconnected", self.peer)
        if self._sender is not None:
            self._sender.cancel()
        self.satellite.release(self)


# -- the command ---------------------------------------------------------------


def add_command(commands, common) -> None:  # noqa: ANN001
    satellite = commands.add_parser(
        "satellite", help="a thin Wyoming satellite: this microphone and speaker for a brain elsewhere", parents=[common]
    )
    satellite.add_argument("--uri", default="tcp://0.0.0.0:10700", help="where to listen (default tcp://0.0.0.0:10700)")
    satellite.add_argument("--name", default="edge-assistant-satellite", help="what it calls itself (describe)")
    satellite.add_argument("--area", default="", help="the area it tells a controller (Home Assistant)")
    satellite.add_argument("--mute-while-playing", action="store_true", help="send silence instead of the microphone while it plays")
    satellite.add_argument("--input-file", metavar="WAV", help="this recording instead of the microphone")
    satellite.add_argument("--realtime", action="store_true", help="pace --input-file in real time")
    satellite.add_argument("--output-file", metavar="WAV", help="record what it is sent instead of playing it")


def listen_address(uri: str) -> tuple[str, int]:
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or parts.hostname is None or not port:
        raise UsageError(f"--uri {uri!r} is invalid: must be tcp://HOST:PORT, like tcp://0.0.0.0:10700")
    return parts.hostname, port


def run(args, config: Config) -> int:  # noqa: ANN001
    """``edge-assistant satellite``: serve until SIGTERM or SIGINT."""
    from ..audio.devices import parse_device
    from ..audio.files import check_output_path
    from ..audio.playback import DevicePlayback, RecordingPlayback
    from ..audio.sources import EchoSource, FileSource, MicrophoneSource
    from ..systemd import Notifier

    host, port = listen_address(args.uri)
    notifier = Notifier()
    output_path = check_output_path(args.output_file, "--output-file") if args.output_file else None
    source: AudioSource = (
        FileSource(args.input_file, FRAME_MS, args.realtime) if args.input_file
        else MicrophoneSource(parse_device(config.input.device), FRAME_MS, on_idle=notifier.watchdog,
                              channel=config.input.channel, on_status=notifier.status)
    )
    recording = RecordingPlayback(SPEAKER_RATE, output_path) if output_path else None
    playback: Playback = recording or DevicePlayback(parse_device(config.tts.output_device), SPEAKER_RATE, on_status=notifier.status)
    if recording is not None:
        source = EchoSource(source, recording)
    satellite = ThinSatellite(source, playback, SatelliteOptions(args.name, args.area, args.mute_while_playing))
    satellite.on_status = notifier.status
    satellite.on_frame = _every_second(notifier.watchdog)
    signal.signal(signal.SIGTERM, lambda *_: satellite.stop())
    signal.signal(signal.SIGINT, lambda *_: satellite.stop())
    try:
        asyncio.run(satellite.serve(host, port, started=lambda: notifier.ready("waiting for a controller")))
    except OSError as error:
        raise UsageError(f"cannot listen on {args.uri}: {error.strerror or error}") from None
    finally:
        notifier.stopping()
        playback.close()
    if recording is not None and output_path is not None:
        recording.save(output_path)
    return 0


def _every_second(call: Callable[[], None]) -> Callable[[], None]:
    """``call``, at most once a second (a frame comes every 64 ms)."""
    last = [-1.0]

    def throttled() -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            call()

    return throttled
