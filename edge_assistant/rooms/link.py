"""The brain's connection to one Wyoming satellite, as Home Assistant makes it:
connect, send ``run-satellite``, then read its microphone's endless
``audio-chunk`` stream and send replies back as ``audio-start``, chunks,
``audio-stop``. Wake word and endpointing run here, per room, in the room's own
audio loop; this module only moves audio. All links run on one asyncio thread,
and none of them ever waits for the room's loop or the engine."""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import threading
import time
from typing import Callable, Iterator

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.asr import Transcript
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.satellite import RunSatellite
from wyoming.wake import Detection

from ..audio.format import MODEL_SAMPLE_RATE, Frame
from ..audio.playback import QueuedPlayback
from ..audio.sources import framed
from ..config import SatelliteConfig
from .pcm import CHUNK_SAMPLES, SAMPLE_WIDTH, ChunkReader, chunk_of

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5.0
STABLE_SECONDS = 10.0  # a connection that lasted this long resets the backoff
SEND_INTERVAL_SECONDS = 0.02


class SatelliteSource:
    """A satellite's microphone as a room's :class:`~edge_assistant.audio.sources.AudioSource`.
    Its input time runs on while the satellite is away or quiet (silence for
    the time that passed), so the room's loop keeps its clocks: timeouts,
    the turn watchdog, timers. A loop that falls behind loses the oldest audio
    (logged), never memory."""

    QUEUE_SECONDS = 10
    GAP_SECONDS = 0.25  # no audio for this long: silence stands in for it
    POLL_SECONDS = 0.05
    DROP_REPORT_SECONDS = 5.0

    def __init__(self, name: str, frame_ms: int) -> None:
        self.name = name
        self.frame_samples = MODEL_SAMPLE_RATE * frame_ms // 1000
        self._chunks: queue.Queue[np.ndarray] = queue.Queue(maxsize=self.QUEUE_SECONDS * MODEL_SAMPLE_RATE // CHUNK_SAMPLES)
        self._stopped = False  # a plain flag: stop() is called from a signal handler
        self.dropped_chunks = 0
        self._drops_reported_at = -float("inf")

    def push(self, samples: np.ndarray) -> None:
        """From the link's thread: never blocks."""
        while True:
            try:
                self._chunks.put_nowait(samples)
                return
            except queue.Full:
                try:
                    self._chunks.get_nowait()
                except queue.Empty:
                    pass
                self.dropped_chunks += 1
                now = time.monotonic()
                if now - self._drops_reported_at >= self.DROP_REPORT_SECONDS:
                    self._drops_reported_at = now
                    log.warning("room %s: dropped the oldest satellite audio (%d chunks so far): the room's loop fell behind",
                                self.name, self.dropped_chunks)

    def frames(self) -> Iterator[Frame]:
        return framed(self._chunks_or_silence(), self.frame_samples)

    def _chunks_or_silence(self) -> Iterator[np.ndarray]:
        last = time.monotonic()
        while not self._stopped:
            try:
                chunk = self._chunks.get(timeout=self.POLL_SECONDS)
            except queue.Empty:
                gap = time.monotonic() - last
                if gap >= self.GAP_SECONDS:
                    last += gap
                    yield np.zeros(int(gap * MODEL_SAMPLE_RATE), dtype=np.float32)
                continue
            last = time.monotonic()
            yield chunk

    def stop(self) -> None:
        self._stopped = True


class SatellitePlayback(QueuedPlayback):
    """A satellite's speaker as a room's :class:`~edge_assistant.audio.playback.Playback`:
    audio is sent paced by the clock, at most :attr:`LEAD_SECONDS` ahead of what
    has played, so a barge-in (:meth:`stop`) silences it within that lead. While
    the satellite is away what is written is dropped, so the room does not stay
    speaking."""

    LEAD_SECONDS = 0.3

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._sent_until = 0.0  # monotonic time at which the audio sent so far has played
        self.connected = False

    def write(self, samples: np.ndarray, sample_rate: int) -> None:
        if self.connected:
            super().write(samples, sample_rate)

    @property
    def busy(self) -> bool:
        return bool(self._queue) or time.monotonic() < self._sent_until

    @property
    def playhead(self) -> int:
        unplayed = max(0.0, self._sent_until - time.monotonic()) * self.sample_rate
        return max(0, self.written - len(self._queue) - int(unplayed))

    def take_due(self) -> np.ndarray:
        """From the link: the audio to send now to stay :attr:`LEAD_SECONDS` ahead."""
        now = time.monotonic()
        start = max(now, self._sent_until)
        room = int((now + self.LEAD_SECONDS - start) * self.sample_rate)
        count = min(room, len(self._queue))
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        self._sent_until = start + count / self.sample_rate
        return self._queue.take(count)

    def disconnected(self) -> None:
        self.connected = False
        self._queue.clear()
        self._sent_until = 0.0

    def wait(self, input_samples: int) -> None:
        time.sleep(input_samples / MODEL_SAMPLE_RATE)

    def drain(self) -> None:
        while self.busy:
            time.sleep(SEND_INTERVAL_SECONDS)


class SatelliteLink:
    """One satellite: connected to by its configured address, reconnected with
    backoff (0.5 s doubling to 30 s, again from 0.5 s after a connection that
    lasted) whenever it goes away. ``on_status`` hears
    "connected" or why not; ``on_wake`` is called when a satellite that runs its
    own wake word says it heard it."""

    def __init__(self, satellite: SatelliteConfig, frame_ms: int, sample_rate: int) -> None:
        self.satellite = satellite
        self.source = SatelliteSource(satellite.name, frame_ms)
        self.playback = SatellitePlayback(sample_rate)
        self.on_status: Callable[[str, str], None] = lambda name, text: None
        self.on_wake: Callable[[], None] = lambda: None
        self.status = "connecting"
        self._client: AsyncTcpClient | None = None
        self._woken = False  # a satellite-side wake word started this streaming: end it with a transcript
        self._loop: asyncio.AbstractEventLoop | None = None

    def _report(self, text: str) -> None:
        if text != self.status:
            self.status = text
            log.info("room %s (%s): %s", self.satellite.name, self.satellite.uri, text)
            self.on_status(self.satellite.name, text)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF_SECONDS
        host, port = self.satellite.address
        while True:
            client = AsyncTcpClient(host, port)
            try:
                await asyncio.wait_for(client.connect(), CONNECT_TIMEOUT_SECONDS)
            except (OSError, asyncio.TimeoutError) as error:
                self._report(f"not connected ({error or 'timed out'}); retrying in {backoff:g} s")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            connected_at = time.monotonic()
            try:
                await self._serve(client)
                why = "the satellite closed the connection"
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                why = f"connection lost ({error or type(error).__name__})"
            except Exception as error:  # a link never dies: the room would be deaf for good
                log.exception("room %s: unexpected error on the satellite's connection", self.satellite.name)
                why = f"connection dropped ({type(error).__name__})"
            self.playback.disconnected()
            self._client = None
            try:
                await client.disconnect()
            except OSError:
                pass  # already gone
            # A satellite that drops every connection at once is not hammered.
            backoff = FIRST_BACKOFF_SECONDS if time.monotonic() - connected_at > STABLE_SECONDS else min(backoff * 2, MAX_BACKOFF_SECONDS)
            self._report(f"{why}; reconnecting in {backoff:g} s")
            await asyncio.sleep(backoff)

    async def _serve(self, client: AsyncTcpClient) -> None:
        """One connection: take the satellite, stream its microphone in and the
        room's speech out until it goes away."""
        _keep_alive(client)
        await client.write_event(RunSatellite().event())
        self._client = client
        self.playback.connected = True
        self._report("connected")
        reader = ChunkReader()
        sender = asyncio.create_task(self._send_speech(client))
        try:
            while True:
                event = await client.read_event()
                if event is None:
                    return
                if AudioChunk.is_type(event.type):
                    self.source.push(reader.samples(AudioChunk.from_event(event)))
                elif Ping.is_type(event.type):
                    await client.write_event(Pong(text=Ping.from_event(event).text).event())
                elif _woke_up(event):
                    self._woken = True
                    self.on_wake()
                else:
                    log.debug("room %s: %s from the satellite", self.satellite.name, event.type)
        finally:
            sender.cancel()

    async def _send_speech(self, client: AsyncTcpClient) -> None:
        playback, replying = self.playback, False
        while True:
            await asyncio.sleep(SEND_INTERVAL_SECONDS)
            samples = playback.take_due()
            if len(samples):
                if not replying:
                    await client.write_event(AudioStart(rate=playback.sample_rate, width=SAMPLE_WIDTH, channels=1).event())
                    replying = True
                for start in range(0, len(samples), CHUNK_SAMPLES):
                    await client.write_event(chunk_of(samples[start : start + CHUNK_SAMPLES], playback.sample_rate).event())
            elif replying and not playback.busy:
                await client.write_event(AudioStop().event())
                replying = False

    def turn_over(self) -> None:
        """From the room's loop, back to idle: a satellite that woke on its own
        wake word is told the turn is over (``transcript``), so it listens for
        its wake word again."""
        if self._woken and self._loop is not None and self._client is not None:
            self._woken = False
            client = self._client
            asyncio.run_coroutine_threadsafe(_quietly(client.write_event(Transcript(text="").event())), self._loop)


def _woke_up(event: Event) -> bool:
    """The satellite heard its own wake word: wyoming-satellite 1.0.0 then asks
    for a pipeline from speech recognition on (an always-streaming one asks
    from the wake stage, once); newer ones may send the ``detection`` itself."""
    if RunPipeline.is_type(event.type):
        return RunPipeline.from_event(event).start_stage != PipelineStage.WAKE
    return Detection.is_type(event.type)


async def _quietly(write) -> None:  # noqa: ANN001
    try:
        await write
    except OSError as error:
        log.debug("satellite write failed: %s", error)


def _keep_alive(client: AsyncTcpClient) -> None:
    """A satellite unplugged without closing the connection is noticed in
    about 20 s, not the kernel's two hours."""
    writer = getattr(client, "_writer", None)
    sock = writer.get_extra_info("socket") if writer is not None else None
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 2)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class Links:
    """Every satellite link on one asyncio thread."""

    def __init__(self, links: list[SatelliteLink]) -> None:
        self.links = links
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="satellites", daemon=True)
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._tasks = [self._loop.create_task(link.run()) for link in self.links]
        try:
            self._loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
        finally:
            self._loop.close()

    def stop(self, timeout: float = 1.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(lambda: [task.cancel() for task in self._tasks])
            self._thread.join(timeout)
