"""Where the assistant's speech and earcons go: a device, or a recording."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import soundfile
import soxr

from ..errors import AudioDeviceError
from .devices import device_name, first_accepted, import_sounddevice
from .files import write_wav_atomic
from .format import MODEL_SAMPLE_RATE

log = logging.getLogger(__name__)


class Playback(Protocol):
    """Where speech and earcons go (``--once``, the daemon, benchmarks): writing
    returns at once, so a reply can be stopped mid-word (barge-in), and the
    playback says whether it is still busy."""

    sample_rate: int
    gain: float  # the volume tool's software gain, applied to what is written

    def write(self, samples: np.ndarray, sample_rate: int) -> None: ...

    def stop(self) -> None: ...

    @property
    def written(self) -> int:
        """Samples written since it opened, at :attr:`sample_rate`: where the next
        write starts, so a speaker can say which sentence is where."""
        ...

    @property
    def playhead(self) -> int:
        """How far into what was written it has played (a stop skips the rest):
        after a barge-in, how much of the reply the user heard."""
        ...

    @property
    def busy(self) -> bool: ...

    def wait(self, input_samples: int) -> None:
        """Let ``input_samples`` of input time (16 kHz) pass while it plays."""

    def drain(self) -> None:
        """Return once everything written has been played."""

    def close(self) -> None: ...


class _Queue:
    """Audio waiting to be played, consumed in pieces of any size."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: deque[np.ndarray] = deque()

    def push(self, samples: np.ndarray) -> None:
        with self._lock:
            self._parts.append(np.asarray(samples, dtype=np.float32))

    def take(self, count: int) -> np.ndarray:
        """``count`` samples, zero-padded once the queue runs dry."""
        out = np.zeros(count, dtype=np.float32)
        filled = 0
        with self._lock:
            while filled < count and self._parts:
                part = self._parts[0]
                used = min(count - filled, len(part))
                out[filled : filled + used] = part[:used]
                filled += used
                if used == len(part):
                    self._parts.popleft()
                else:
                    self._parts[0] = part[used:]
        return out

    def clear(self) -> None:
        with self._lock:
            self._parts.clear()

    def __len__(self) -> int:
        """Samples waiting."""
        with self._lock:
            return sum(len(part) for part in self._parts)


class QueuedPlayback:
    """What every playback shares: audio is queued at once and played later."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.gain = 1.0  # the volume tool's software gain
        self._queue = _Queue()
        self.written = 0

    def write(self, samples: np.ndarray, sample_rate: int) -> None:
        if sample_rate != self.sample_rate:
            samples = soxr.resample(samples, sample_rate, self.sample_rate)
        self._queue.push(samples * self.gain if self.gain != 1.0 else samples)
        self.written += len(samples)

    @property
    def playhead(self) -> int:
        return self.written - len(self._queue)

    def stop(self) -> None:
        self._queue.clear()

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def close(self) -> None:
        pass


class DevicePlayback(QueuedPlayback):
    """Plays on an output device from a callback, so it can be stopped mid-word.

    A device that refuses ``sample_rate`` in mono (HATs and HDMI often take only
    48 or 44.1 kHz stereo) is opened at a rate and channel count it accepts;
    :attr:`sample_rate` is then the device's, what is written at another rate is
    resampled, and mono is copied to every channel.
    """

    DRAIN_MARGIN_SECONDS = 2.0  # beyond the queued audio, before a silent device counts as failed
    STALL_SECONDS = 1.0  # busy with no callback for this long: the device stopped
    FIRST_BACKOFF_SECONDS = 0.5
    MAX_BACKOFF_SECONDS = 30.0

    def __init__(
        self, device: str | int | None, sample_rate: int, on_status: Callable[[str], None] | None = None
    ) -> None:
        """``on_status``: told when the device stops and is reopened (systemd's STATUS=)."""
        self._sounddevice = sounddevice = import_sounddevice()
        self._device = device
        self._on_status = on_status
        try:
            rate, channels = _playback_format(sounddevice, device, sample_rate)
            super().__init__(rate)
            self._channels = channels
            self._playing = False
            self._stream = None
            self._open()
        except (sounddevice.PortAudioError, ValueError) as error:
            raise AudioDeviceError(f"cannot open output device {device_name(device)}: {error}") from None
        self._backoff = self.FIRST_BACKOFF_SECONDS
        self._reopen_at = 0.0
        log.info("playing on %s at %d Hz, %d channel(s)", device_name(device), rate, channels)

    def _open(self) -> None:
        def callback(outdata: np.ndarray, frames: int, _time: object, status: object) -> None:
            self._last_callback = time.monotonic()
            self._playing = bool(self._queue)
            outdata[:] = self._queue.take(frames)[:, None]

        self._last_callback = time.monotonic()
        stream = self._sounddevice.OutputStream(
            device=self._device, channels=self._channels, samplerate=self.sample_rate, dtype="float32", callback=callback
        )
        stream.start()
        self._stream = stream

    @property
    def busy(self) -> bool:
        """Playing or about to. A device whose callback stopped coming is
        declared dead (what was queued is dropped, so the assistant does not
        stay speaking for good) and reopened with backoff, from this poll."""
        if self._stream is None:
            self._queue.clear()
            self._playing = False
            self._try_reopen()
            return False
        busy = bool(self._queue) or self._playing
        if busy and time.monotonic() - self._last_callback > self.STALL_SECONDS:
            self._declare_dead()
            return False
        return busy

    def _report(self, text: str) -> None:
        log.warning("output device %s: %s", device_name(self._device), text)
        if self._on_status is not None:
            self._on_status(f"output device {device_name(self._device)}: {text}")

    def _declare_dead(self) -> None:
        stream, self._stream = self._stream, None
        self._queue.clear()
        self._playing = False
        self._reopen_at = time.monotonic() + self._backoff
        self._report(f"stopped playing (no callback for {self.STALL_SECONDS:g} s); reopening in {self._backoff:g} s")
        try:
            stream.close()
        except Exception as error:  # a dead device may refuse even that
            log.debug("closing the dead output stream: %s", error)

    def _try_reopen(self) -> None:
        if time.monotonic() < self._reopen_at:
            return
        try:
            self._open()
        except (self._sounddevice.PortAudioError, ValueError) as error:
            self._backoff = min(self._backoff * 2, self.MAX_BACKOFF_SECONDS)
            self._reopen_at = time.monotonic() + self._backoff
            self._report(f"cannot reopen ({error}); retrying in {self._backoff:g} s")
            return
        self._backoff = self.FIRST_BACKOFF_SECONDS
        self._report("reopened, playing again")

    def wait(self, input_samples: int) -> None:
        """The device plays in real time: input time passes as the clock's."""
        time.sleep(input_samples / MODEL_SAMPLE_RATE)

    def drain(self) -> None:
        """Wait until everything written has been played (``--once`` before it
        exits); :meth:`close` alone does not wait, so a stop is immediate."""
        deadline = time.monotonic() + len(self._queue) / self.sample_rate + self.DRAIN_MARGIN_SECONDS
        while self.busy:
            if time.monotonic() > deadline:
                raise AudioDeviceError(f"output device {device_name(self._device)} stopped playing")
            time.sleep(0.02)
        if self._stream is None:
            raise AudioDeviceError(f"output device {device_name(self._device)} stopped playing")

    def close(self) -> None:
        if self._stream is None:
            return
        self._stream.stop()  # plays out what PortAudio already holds; close() alone would discard it
        self._stream.close()


def _playback_format(sounddevice, device: str | int | None, preferred_rate: int) -> tuple[int, int]:  # noqa: ANN001
    """(rate, channels): ``preferred_rate``, else the device's default rate, else
    48 or 44.1 kHz; mono, else stereo. Resampling is avoided before duplication."""
    info = sounddevice.query_devices(device, "output")
    channel_counts = range(1, min(2, int(info["max_output_channels"])) + 1)
    if not channel_counts:
        raise ValueError(f"{info['name']} has no output channels")
    rates = dict.fromkeys([preferred_rate, int(info["default_samplerate"]), 48000, 44100])
    candidates = [(rate, channels) for rate in rates for channels in channel_counts]
    return first_accepted(sounddevice, sounddevice.check_output_settings, device, candidates)


class RecordingPlayback(QueuedPlayback):
    """A speaker that records instead of playing, clocked by the input: each
    input frame (:class:`~edge_assistant.audio.sources.EchoSource` calls
    :meth:`play` for it, the daemon :meth:`wait` once the input has ended) plays
    the same duration of queued audio, or silence, into the recording, so the
    recording lines up with the input, pauses included. :meth:`drain` plays out
    what is queued at once (``--once --out``).

    With ``path`` (``run --output-file``) the recording is written to a file
    beside it as it plays, so memory does not grow with the run's length, and
    :meth:`save` to that path moves it into place; without, it is kept in memory."""

    def __init__(self, sample_rate: int, path: Path | None = None) -> None:
        super().__init__(sample_rate)
        self._recorded: list[np.ndarray] = []
        self._input_samples = 0
        self._output_samples = 0
        self._path = Path(path) if path is not None else None
        self._file: soundfile.SoundFile | None = None
        if self._path is not None:
            self._partial = self._path.with_name(f".{self._path.name}.{os.getpid()}.partial")
            self._file = soundfile.SoundFile(self._partial, "w", sample_rate, 1, subtype="PCM_16", format="WAV")

    def _record(self, samples: np.ndarray) -> None:
        if self._file is not None:
            self._file.write(samples)
        else:
            self._recorded.append(samples)

    def play(self, input_samples: int) -> np.ndarray:
        """Play for ``input_samples`` of input time; return what was played,
        resampled to the input rate (for echo)."""
        self._input_samples += input_samples
        target = self._input_samples * self.sample_rate // MODEL_SAMPLE_RATE
        played = self._queue.take(max(0, target - self._output_samples))
        self._output_samples = max(self._output_samples, target)
        self._record(played)
        if not played.any():
            return np.zeros(input_samples, dtype=np.float32)
        echo = soxr.resample(played, self.sample_rate, MODEL_SAMPLE_RATE)
        return np.resize(echo, input_samples).astype(np.float32)

    def wait(self, input_samples: int) -> None:
        self.play(input_samples)

    def drain(self) -> None:
        queued = len(self._queue)
        self._record(self._queue.take(queued))
        self._output_samples += queued

    def recording(self) -> np.ndarray:
        """What was recorded (read back from the file when it is written as it plays)."""
        if self._file is not None:
            self._file.flush()
            return soundfile.read(self._partial, dtype="float32")[0]
        return np.concatenate(self._recorded) if self._recorded else np.zeros(0, dtype=np.float32)

    def save(self, path: Path) -> None:
        """Write the recording as a WAV (an empty one if nothing was said, so a
        successful run always leaves the file); written as it played, it is
        moved into place whole."""
        if self._file is not None and Path(path) == self._path:
            self._file.close()
            self._file = None
            os.replace(self._partial, path)
            return
        write_wav_atomic(path, self.recording(), self.sample_rate)

    def abandon(self) -> None:
        """A failed run: the partial recording is removed."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._partial.unlink(missing_ok=True)
