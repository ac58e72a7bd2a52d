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
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Fail before any work is done if the reply cannot be written there."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"--out is a directory: {path}")
    if not directory.is_dir():
        raise UsageError(f"--out directory does not exist: {directory}")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"--out directory is not writable: {directory}")
    return path


class AudioSink(Protocol):
    """Where spoken audio goes: a speaker, a file, or nowhere."""

    def write(self, samples: np.ndarray, sample_rate: int) -> None: ...

    def close(self) -> None: ...


class WavFileSink:
    """Collects everything spoken and writes one WAV on :meth:`close` (an empty
    WAV if nothing was said, so a successful run always leaves the file)."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self._parts: list[np.ndarray] = [np.zeros(0, dtype=np.float32)]

    def write(self, samples: np.ndarray, sample_rate: int) -> None:
        if sample_rate != self.sample_rate:
            raise ValueError(f"{self.path}: expected {self.sample_rate} Hz audio, got {sample_rate} Hz")
        self._parts.append(samples)

    def close(self) -> None:
        write_wav_atomic(self.path, np.concatenate(self._parts), self.sample_rate)


class SpeakerSink:
    """Plays on an output device through PortAudio, blocking per sentence so the
    next sentence is synthesized while this one plays."""

    def __init__(self, device: str | int | None = None) -> None:
        import sounddevice  # PortAudio is loaded only when something is played

        self._sounddevice = sounddevice
        self._device = device

    def write(self, samples: np.ndarray, sample_rate: int) -> None:
        try:
            self._sounddevice.play(samples, sample_rate, device=self._device, blocking=True)
        except (self._sounddevice.PortAudioError, ValueError) as error:
            raise AudioDeviceError(f"cannot play on output device {self._device or '(default)'}: {error}") from None

    def close(self) -> None:
        self._sounddevice.stop()


class NullSink:
    """For ``--no-speak``: text only."""

    def write(self, samples: np.ndarray, sample_rate: int) -> None:
        pass

    def close(self) -> None:
        pass


def parse_device(name: str) -> str | int | None:
    """A sounddevice device given as an index ("2") or a name substring."""
    if not name:
        return None
    return int(name) if name.isdigit() else name
