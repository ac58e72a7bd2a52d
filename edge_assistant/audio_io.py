"""Audio in and out: files as people have them, 16 kHz mono float32 for the model,
and sinks that play or record what the assistant says.

Reading goes through libsndfile (the ``soundfile`` wheel), which handles every WAV
sample format (8/16/24/32-bit integer, 32/64-bit float), FLAC, OGG and MP3, and
resampling through soxr, a band-limited resampler: naive decimation would alias
the 8 kHz-and-up band of 44.1/48 kHz recordings into the speech band.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import soundfile
import soxr

from .errors import AudioDeviceError, AudioInputError, UsageError

log = logging.getLogger(__name__)

MODEL_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] at ``sample_rate``."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def read_audio(path: str | os.PathLike[str]) -> Audio:
    """Read an audio file and return it as 16 kHz mono float32.

    Every problem with the file becomes an :class:`AudioInputError` naming it.
    """
    path = Path(path)
    if not path.exists():
        raise AudioInputError(f"audio file not found: {path}")
    if not path.is_file():
        raise AudioInputError(f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise AudioInputError(f"audio file is not readable (permission denied): {path}")
    if path.stat().st_size == 0:
        raise AudioInputError(f"audio file is empty (0 bytes): {path}")
    _check_wav_not_truncated(path)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, OSError) as error:
        detail = str(error).split("\n")[0]
        raise AudioInputError(f"cannot decode audio file {path}: {detail}") from None
    if samples.shape[0] == 0:
        raise AudioInputError(f"audio file holds no samples (zero length): {path}")
    if not np.isfinite(samples).all():
        raise AudioInputError(f"audio file holds invalid samples (NaN or infinity): {path}")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return to_model_rate(Audio(np.ascontiguousarray(mono), int(rate)))


def to_model_rate(audio: Audio) -> Audio:
    """Resample to the 16 kHz the model and webrtcvad expect."""
    if audio.sample_rate == MODEL_SAMPLE_RATE:
        return audio
    resampled = soxr.resample(audio.samples, audio.sample_rate, MODEL_SAMPLE_RATE, quality="HQ")
    return Audio(np.clip(resampled, -1.0, 1.0).astype(np.float32), MODEL_SAMPLE_RATE)


def _check_wav_not_truncated(path: Path) -> None:
    """libsndfile quietly reads what is there when a WAV's data chunk is cut short;
    a cut-off question is worse than an error, so compare the declared size.

    Streaming recorders write 0 or 0xFFFFFFFF as the size while recording; those
    are accepted as "unknown length".
    """
    with path.open("rb") as file:
        header = file.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return  # not a WAV: libsndfile judges it
        file_size = path.stat().st_size
        while True:
            chunk_header = file.read(8)
            if len(chunk_header) < 8:
                raise AudioInputError(f"truncated WAV file (no data chunk): {path}")
            chunk_id, chunk_size = chunk_header[:4], struct.unpack("<I", chunk_header[4:])[0]
            if chunk_id == b"data":
                available = file_size - file.tell()
                if chunk_size not in (0, 0xFFFFFFFF) and available < chunk_size:
                    raise AudioInputError(
                        f"truncated WAV file: header declares {chunk_size} bytes of audio, "
                        f"only {available} present: {path}"
                    )
                return
            file.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)


def write_wav_atomic(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM under a temporary name, then rename: an existing file is
    replaced only by a complete new one, never left half-written."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(handle)
    try:
        soundfile.write(temp_name, samples, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def check_output_path(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Fail before any work is done if the output cannot be written there;
    ``option`` names the flag in the message."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{option} is a directory: {path}")
    if not directory.is_dir():
        raise UsageError(f"{option} directory does not exist: {directory}")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{option} directory is not writable: {directory}")
    return path


class AudioSink(Protocol):
    """Where spoken audio goes: a speaker, a file, or nowhere."""

    def write(self, samples: np.ndarray, sample_rate: int) -> None: ...

    @property
    def written(self) -> int:
        """Samples written so far (at the sink's rate): where the next write
        starts, so a speaker can say which sentence is where."""
        ...

    def close(self) -> None: ...


class WavFileSink:
    """Collects everything spoken and writes one WAV on :meth:`close` (an empty
    WAV if nothing was said, so a successful run always leaves the file)."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self._parts: list[np.ndarray] = [np.zeros(0, dtype=np.float32)]
        self.written = 0

    def write(self, samples: np.ndarray, sample_rate: int) -> None:
        if sample_rate != self.sample_rate:
            raise ValueError(f"{self.path}: expected {self.sample_rate} Hz audio, got {sample_rate} Hz")
        self._parts.append(samples)
        self.written += len(samples)

    def close(self) -> None:
        write_wav_atomic(self.path, np.concatenate(self._parts), self.sample_rate)


class NullSink:
    """For ``--no-speak``: text only."""

    written = 0

    def write(self, samples: np.ndarray, sample_rate: int) -> None:
        pass

    def close(self) -> None:
        pass


def parse_device(name: str) -> str | int | None:
    """A sounddevice device given as an index ("2") or a name substring."""
    if not name:
        return None
    return int(name) if name.isdigit() else name


# -- live streams for the daemon ---------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """``frame_ms`` of 16 kHz mono float32; ``end_sample`` is the input time (in
    samples since the stream began) just after its last sample."""

    samples: np.ndarray
    end_sample: int

    @property
    def seconds(self) -> float:
        return self.end_sample / MODEL_SAMPLE_RATE


class AudioSource(Protocol):
    """Frames from a microphone or a file, until the input ends or ``stop()``."""

    def frames(self) -> Iterator[Frame]: ...

    def stop(self) -> None: ...


def _framed(chunks: Iterator[np.ndarray], frame_samples: int) -> Iterator[Frame]:
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
        self.audio = read_audio(path)
        self.frame_samples = MODEL_SAMPLE_RATE * frame_ms // 1000
        self.realtime = realtime
        self._stopped = threading.Event()

    def frames(self) -> Iterator[Frame]:
        started = time.monotonic()
        for frame in _framed(iter([self.audio.samples]), self.frame_samples):
            if self._stopped.is_set():
                return
            if self.realtime:
                self._stopped.wait(max(0.0, started + frame.seconds - time.monotonic()))
            yield frame

    def stop(self) -> None:
        self._stopped.set()


class MicrophoneSource:
    """Capture from an input device through PortAudio, at 16 kHz or, if the device
    cannot, at its native rate resampled with soxr. A device that refuses mono
    (microphone HATs offer 2 or 4 channels) is opened with the fewest channels it
    takes, and one of them (``channel``) is used: mixing would add playback-loopback
    references and comb-filter non-coincident microphones. A device that errors or
    goes silent (no callbacks) is reopened with exponential backoff, without a
    restart; ``on_status`` hears about it (systemd's STATUS=).
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
    ) -> None:
        self.sounddevice = import_sounddevice()
        self.device = device
        self.channel = channel
        self.frame_samples = MODEL_SAMPLE_RATE * frame_ms // 1000
        self.on_idle = on_idle  # called while waiting (e.g. the systemd watchdog)
        self.on_status = on_status
        self._stopped = threading.Event()
        self.dropped_chunks = 0
        self._drops_reported = 0
        self._drops_reported_at = -float("inf")
        try:
            self._device_info()  # a wrong input.channel fails now, not after the models have loaded
        except (self.sounddevice.PortAudioError, ValueError):
            pass  # a missing device is waited for when frames are read

    def stop(self) -> None:
        self._stopped.set()

    def frames(self) -> Iterator[Frame]:
        return _framed(self._chunks(), self.frame_samples)

    def _chunks(self) -> Iterator[np.ndarray]:
        backoff = 0.5
        failed = False
        while not self._stopped.is_set():
            try:
                for chunk in self._stream_once(recovered=failed):
                    backoff, failed = 0.5, False
                    yield chunk
                if self._stopped.is_set():
                    return
                problem = f"microphone silent: no audio for {self.STALL_SECONDS:g} s"
            except (self.sounddevice.PortAudioError, ValueError) as error:
                problem = f"microphone missing: {error}"
            failed = True
            log.warning("input device %s: %s; retrying in %.1f s", _device_name(self.device), problem, backoff)
            self._status(f"{problem}; retrying in {backoff:g} s")
            self._wait(backoff)
            backoff = min(backoff * 2, self.MAX_BACKOFF_SECONDS)

    def _status(self, text: str) -> None:
        if self.on_status:
            self.on_status(text)

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopped.is_set() and time.monotonic() < deadline:
            if self.on_idle:
                self.on_idle()
            self._stopped.wait(min(0.5, deadline - time.monotonic()))

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
            log.info("listening on %s at %d Hz, channel %d of %d", _device_name(self.device), rate, self.channel, channels)
            if recovered:
                self._status("listening")
            while not self._stopped.is_set():
                try:
                    block = blocks.get(timeout=self.STALL_SECONDS)
                except queue.Empty:
                    return  # the device went quiet: the caller reopens it
                self._report_drops(rate)
                yield resampler.resample_chunk(block) if resampler else block

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
        return _first_accepted(self.sounddevice, self.sounddevice.check_input_settings, self.device, candidates)


def _first_accepted(
    sounddevice, check: Callable[..., None], device: str | int | None, candidates: list[tuple[int, int]]  # noqa: ANN001
) -> tuple[int, int]:
    """The first (rate, channels) PortAudio accepts for ``device``, else its
    refusal (PortAudioError or ValueError) of the last one."""
    for rate, channels in candidates[:-1]:
        try:
            check(device=device, channels=channels, samplerate=rate, dtype="float32")
            return rate, channels
        except (sounddevice.PortAudioError, ValueError):
            continue
    rate, channels = candidates[-1]
    check(device=device, channels=channels, samplerate=rate, dtype="float32")
    return rate, channels


def _device_name(device: str | int | None) -> str:
    return "(default)" if device is None else str(device)


def import_sounddevice():  # noqa: ANN201 - the module
    """sounddevice needs the PortAudio library; say how to get it."""
    try:
        import sounddevice
    except OSError as error:
        raise AudioDeviceError(f"PortAudio is missing ({error}); install it: sudo apt install libportaudio2") from None
    return sounddevice


def list_devices() -> str:
    """PortAudio's device table (``>`` marks the default input, ``<`` the output)."""
    sounddevice = import_sounddevice()
    try:
        devices = sounddevice.query_devices()
    except sounddevice.PortAudioError as error:
        raise AudioDeviceError(f"cannot list audio devices: {error}") from None
    if not len(devices):
        raise AudioDeviceError("no audio devices found (is a sound card or USB microphone connected? `arecord -l` lists ALSA's)")
    return str(devices)


class Playback(Protocol):
    """Where the daemon's speech and earcons go; unlike an :class:`AudioSink` it
    returns at once, can be stopped (barge-in) and says whether it is busy."""

    sample_rate: int

    def write(self, samples: np.ndarray, sample_rate: int) -> None: ...

    def stop(self) -> None: ...

    @property
    def written(self) -> int:
        """Samples written since it opened, at :attr:`sample_rate`."""
        ...

    @property
    def playhead(self) -> int:
        """How far into what was written it has played (a stop skips the rest):
        after a barge-in, how much of the reply the user heard."""
        ...

    @property
    def busy(self) -> bool: ...

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


class _QueuedPlayback:
    """What both playbacks share: audio is queued at once and played later."""

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


class DevicePlayback(_QueuedPlayback):
    """Plays on an output device from a callback, so it can be stopped mid-word.

    A device that refuses ``sample_rate`` in mono (HATs and HDMI often take only
    48 or 44.1 kHz stereo) is opened at a rate and channel count it accepts;
    :attr:`sample_rate` is then the device's, what is written at another rate is
    resampled, and mono is copied to every channel.
    """

    DRAIN_MARGIN_SECONDS = 2.0  # beyond the queued audio, before a silent device counts as failed

    def __init__(self, device: str | int | None, sample_rate: int) -> None:
        sounddevice = import_sounddevice()
        self._device = device
        try:
            rate, channels = _playback_format(sounddevice, device, sample_rate)
            super().__init__(rate)
            self._playing = False

            def callback(outdata: np.ndarray, frames: int, _time: object, status: object) -> None:
                self._playing = bool(self._queue)
                outdata[:] = self._queue.take(frames)[:, None]

            self._stream = sounddevice.OutputStream(
                device=device, channels=channels, samplerate=rate, dtype="float32", callback=callback
            )
            self._stream.start()
        except (sounddevice.PortAudioError, ValueError) as error:
            raise AudioDeviceError(f"cannot open output device {_device_name(device)}: {error}") from None
        log.info("playing on %s at %d Hz, %d channel(s)", _device_name(device), rate, channels)

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._playing

    def drain(self) -> None:
        """Wait until everything written has been played (``--once`` before it
        exits); :meth:`close` alone does not wait, so a stop is immediate."""
        deadline = time.monotonic() + len(self._queue) / self.sample_rate + self.DRAIN_MARGIN_SECONDS
        while self.busy:
            if time.monotonic() > deadline:
                raise AudioDeviceError(f"output device {_device_name(self._device)} stopped playing")
            time.sleep(0.02)

    def close(self) -> None:
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
    return _first_accepted(sounddevice, sounddevice.check_output_settings, device, candidates)


class VirtualPlayback(_QueuedPlayback):
    """A speaker clocked by the input stream, for ``--output-file`` and tests:
    every input frame plays the same duration of queued audio (or silence) into a
    recording, so the recording lines up with the input, pauses included. What it
    plays can be fed back into the input (``echo``), as a speaker next to a
    microphone would."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._recorded: list[np.ndarray] = []
        self._input_samples = 0
        self._output_samples = 0

    def advance(self, input_samples: int) -> np.ndarray:
        """Play for ``input_samples`` of input time; return what was played,
        resampled to the input rate (for echo)."""
        self._input_samples += input_samples
        target = self._input_samples * self.sample_rate // MODEL_SAMPLE_RATE
        played = self._queue.take(target - self._output_samples)
        self._output_samples = target
        self._recorded.append(played)
        if not played.any():
            return np.zeros(input_samples, dtype=np.float32)
        echo = soxr.resample(played, self.sample_rate, MODEL_SAMPLE_RATE)
        return np.resize(echo, input_samples).astype(np.float32)

    def recording(self) -> np.ndarray:
        return np.concatenate(self._recorded) if self._recorded else np.zeros(0, dtype=np.float32)
