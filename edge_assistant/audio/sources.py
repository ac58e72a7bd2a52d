"""Where input frames come from: the microphone, a file, or a file heard next to
a recorded speaker (echo)."""

from __future__ import annotations

import logging
import os
import queue
import time
from typing import Callable, Iterator, Protocol

import numpy as np
import soxr

from ..errors import AudioDeviceError
from .devices import device_name, first_accepted, import_sounddevice
from .files import stream_audio
from .format import MODEL_SAMPLE_RATE, Frame
from .playback import RecordingPlayback

log = logging.getLogger(__name__)


class AudioSource(Protocol):
    """Frames from a microphone or a file, until the input ends or ``stop()``."""

    def frames(self) -> Iterator[Frame]: ...

    def stop(self) -> None: ...


def framed(chunks: Iterator[np.ndarray], frame_samples: int) -> Iterator[Frame]:
    """Re-cut arbitrary chunks into exact frames, counting input time."""
    pending = np.zeros(0, dtype=np.float32)
    produced = 0
    for chunk in chunks:
        pending = np.concatenate([pending, chunk]) if len(pending) else chunk
        while len(pending) >= frame_samples:
            produced += frame_samples
            yield Frame(pending[:frame_samples], produced)
            pending = pending[frame_samples:]


class FileSource:
    """A recording played as if it were the microphone: as fast as the pipeline
    takes it, or paced in real time with ``realtime``."""

    def __init__(self, path: str | os.PathLike[str], frame_ms: int, realtime: bool = False) -> None:
        self._chunks = stream_audio(path)  # checked now, read frame by frame as it plays
        self.frame_samples = MODEL_SAMPLE_RATE * frame_ms // 1000
        self.realtime = realtime
        self._stopped = False  # a plain flag: stop() is called from a signal handler

    def frames(self) -> Iterator[Frame]:
        started = time.monotonic()
        for frame in framed(self._chunks, self.frame_samples):
            if self._stopped:
                return
            if self.realtime:
                _sleep_unless(lambda: self._stopped, started + frame.seconds)
            yield frame

    def stop(self) -> None:
        """Only sets a flag (safe in a signal handler); the reader ends at its next poll."""
        self._stopped = True


POLL_SECONDS = 0.05  # how often a waiting source looks at its stop flag


def _sleep_unless(stopped: Callable[[], bool], deadline: float) -> None:
    """Sleep until ``deadline`` (monotonic) or until ``stopped()``."""
    while not stopped() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(POLL_SECONDS, left))


class EchoSource:
    """The input as heard next to a recorded speaker (``run --input-file ...
    --output-file``, tests): each frame first plays the speaker for the frame's
    duration, so the recording lines up with the input, and what it played is
    mixed into the frame at ``gain``, as a speaker beside a microphone would be
    heard (0: not heard at all)."""

    def __init__(self, source: AudioSource, speaker: RecordingPlayback, gain: float = 0.0) -> None:
        self.source = source
        self.speaker = speaker
        self.gain = gain

    def frames(self) -> Iterator[Frame]:
        for frame in self.source.frames():
            echo = self.speaker.play(len(frame.samples))
            yield Frame(frame.samples + echo * self.gain, frame.end_sample) if self.gain else frame

    def stop(self) -> None:
        self.source.stop()


class MicrophoneSource:
    """Capture from an input device through PortAudio, at 16 kHz or, if the device
    cannot, at its native rate resampled with soxr. A device that refuses mono
    (microphone HATs offer 2 or 4 channels) is opened with the fewest channels it
    takes, and one of them (``channel``) is used: mixing would add playback-loopback
    references and comb-filter non-coincident microphones. A device that errors or
    goes silent (no callbacks) is reopened with exponential backoff, without a
    restart; ``on_status`` hears about it (systemd's STATUS=). A device missing at
    the start is waited for too (a USB microphone plugged in after boot), unless
    ``wait_for_device`` is off, as for an interactive command.
    """

    QUEUE_SECONDS = 10  # bounded: a stalled consumer drops the oldest audio, never grows memory
    STALL_SECONDS = 2.0
    MAX_BACKOFF_SECONDS = 30.0
    BLOCK_FRAMES = 1024
    DROP_REPORT_SECONDS = 5.0  # dropped blocks are logged at most this often

    def __init__(
        self,
        device: str | int | None,
        frame_ms: int,
        on_idle: Callable[[], None] | None = None,
        channel: int = 0,
        on_status: Callable[[str], None] | None = None,
        wait_for_device: bool = True,
    ) -> None:
        self.sounddevice = import_sounddevice()
        self.device = device
        self.channel = channel
        self.frame_samples = MODEL_SAMPLE_RATE * frame_ms // 1000
        self.on_idle = on_idle  # called while waiting (e.g. the systemd watchdog)
        self.on_status = on_status
        self._stopped = False  # a plain flag: stop() is called from a signal handler
        self.dropped_chunks = 0
        self._drops_reported = 0
        self._drops_reported_at = -float("inf")
        try:
            self._device_info()  # a wrong input.channel fails now, not after the models have loaded
            if not wait_for_device:
                self._capture_format()
        except (self.sounddevice.PortAudioError, ValueError) as error:
            if not wait_for_device:
                raise AudioDeviceError(f"cannot open the microphone {device_name(device)}: {error}") from None
            # a missing device is waited for when frames are read

    def stop(self) -> None:
        """Only sets a flag (safe in a signal handler); a read in progress, even
        of a stalled device, ends within :data:`POLL_SECONDS`."""
        self._stopped = True

    def frames(self) -> Iterator[Frame]:
        return framed(self._chunks(), self.frame_samples)

    def _chunks(self) -> Iterator[np.ndarray]:
        backoff = 0.5
        failed = False
        while not self._stopped:
            try:
                for chunk in self._stream_once(recovered=failed):
                    backoff, failed = 0.5, False
                    yield chunk
                if self._stopped:
                    return
                problem = f"microphone silent: no audio for {self.STALL_SECONDS:g} s"
            except (self.sounddevice.PortAudioError, ValueError) as error:
                problem = f"microphone missing: {error}"
            failed = True
            log.warning("input device %s: %s; retrying in %.1f s", device_name(self.device), problem, backoff)
            self._status(f"{problem}; retrying in {backoff:g} s")
            self._wait(backoff)
            backoff = min(backoff * 2, self.MAX_BACKOFF_SECONDS)

    def _status(self, text: str) -> None:
        if self.on_status:
            self.on_status(text)

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopped and time.monotonic() < deadline:
            if self.on_idle:
                self.on_idle()
            _sleep_unless(lambda: self._stopped, min(deadline, time.monotonic() + 0.5))

    def _stream_once(self, recovered: bool) -> Iterator[np.ndarray]:
        rate, channels = self._capture_format()
        blocks: queue.Queue[np.ndarray] = queue.Queue(maxsize=int(self.QUEUE_SECONDS * rate / self.BLOCK_FRAMES) + 1)

        def callback(indata: np.ndarray, frames: int, _time: object, status: object) -> None:
            if status:
                log.debug("input status: %s", status)
            try:
                blocks.put_nowait(indata[:, self.channel].copy())
            except queue.Full:
                self.dropped_chunks += 1

        resampler = soxr.ResampleStream(rate, MODEL_SAMPLE_RATE, 1, dtype="float32") if rate != MODEL_SAMPLE_RATE else None
        with self.sounddevice.InputStream(
            device=self.device, channels=channels, samplerate=rate, dtype="float32",
            blocksize=self.BLOCK_FRAMES, callback=callback,
        ):
            log.info("listening on %s at %d Hz, channel %d of %d", device_name(self.device), rate, self.channel, channels)
            if recovered:
                self._status("listening")
            while not self._stopped:
                block = self._next_block(blocks)
                if block is None:
                    return  # stopped, or the device went quiet: the caller reopens it
                self._report_drops(rate)
                yield resampler.resample_chunk(block) if resampler else block

    def _next_block(self, blocks: queue.Queue[np.ndarray]) -> np.ndarray | None:
        """The next block; None when stopped or after :attr:`STALL_SECONDS` of
        nothing. Polls the stop flag while it waits."""
        deadline = time.monotonic() + self.STALL_SECONDS
        while not self._stopped:
            try:
                return blocks.get(timeout=min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None
        return None

    def _report_drops(self, rate: int) -> None:
        """Dropped blocks mean the wake word or an utterance may have been cut:
        say so, but not once per block."""
        now = time.monotonic()
        dropped = self.dropped_chunks
        if dropped == self._drops_reported or now - self._drops_reported_at < self.DROP_REPORT_SECONDS:
            return
        new = dropped - self._drops_reported
        log.warning(
            "dropped %d capture blocks (%.2f s of audio; %d in total): the pipeline fell behind",
            new, new * self.BLOCK_FRAMES / rate, dropped,
        )
        self._drops_reported, self._drops_reported_at = dropped, now

    def _device_info(self) -> dict:
        """PortAudio's description of the input device; ``channel`` must be one of its channels."""
        info = self.sounddevice.query_devices(self.device, "input")
        available = int(info["max_input_channels"])
        if self.channel >= available:
            raise AudioDeviceError(
                f"input.channel = {self.channel} is out of range: input device {info['name']} "
                f"has {available} channel(s), numbered from 0"
            )
        return info

    def _capture_format(self) -> tuple[int, int]:
        """(rate, channels): 16 kHz, else the device's default rate; the fewest
        channels the device accepts that include ``channel``."""
        info = self._device_info()
        rates = dict.fromkeys([MODEL_SAMPLE_RATE, int(info["default_samplerate"])])
        channel_counts = range(self.channel + 1, int(info["max_input_channels"]) + 1)
        candidates = [(rate, channels) for channels in channel_counts for rate in rates]
        return first_accepted(self.sounddevice, self.sounddevice.check_input_settings, self.device, candidates)


