"""Audio files as people have them, read as 16 kHz mono float32, and WAV files
written whole or not at all.

Reading goes through libsndfile (the ``soundfile`` wheel), which handles every WAV
sample format (8/16/24/32-bit integer, 32/64-bit float), FLAC, OGG and MP3, and
resampling through soxr, a band-limited resampler: naive decimation would alias
the 8 kHz-and-up band of 44.1/48 kHz recordings into the speech band.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import soxr

from ..atomic import atomic_path
from ..errors import AudioInputError, UsageError
from .format import MODEL_SAMPLE_RATE, Audio


def read_audio(path: str | os.PathLike[str]) -> Audio:
    """Read an audio file and return it as 16 kHz mono float32.

    Every problem with the file becomes an :class:`AudioInputError` naming it.
    """
    path = check_audio_path(path)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, OSError) as error:
        raise _decode_error(path, error) from None
    if samples.shape[0] == 0:
        raise AudioInputError(f"audio file holds no samples (zero length): {path}")
    _check_finite(samples, path)
    return to_model_rate(Audio(np.ascontiguousarray(_mono(samples)), int(rate)))


def stream_audio(path: str | os.PathLike[str], block_seconds: float = 1.0) -> Iterator[np.ndarray]:
    """The file as 16 kHz mono float32 blocks, read and resampled a block at a
    time: memory does not grow with the file's length (``run --input-file``).
    Problems found before the first block (a missing, empty, truncated or
    undecodable file) raise here, at the call, not when iterating."""
    path = check_audio_path(path)
    try:
        file = soundfile.SoundFile(str(path))
    except (soundfile.LibsndfileError, RuntimeError, ValueError, OSError) as error:
        raise _decode_error(path, error) from None
    if file.frames == 0:
        file.close()
        raise AudioInputError(f"audio file holds no samples (zero length): {path}")
    return _blocks(file, path, max(1, int(file.samplerate * block_seconds)))


def _blocks(file: soundfile.SoundFile, path: Path, block_frames: int) -> Iterator[np.ndarray]:
    with file:
        rate = file.samplerate
        resampler = soxr.ResampleStream(rate, MODEL_SAMPLE_RATE, 1, dtype="float32", quality="HQ") if rate != MODEL_SAMPLE_RATE else None
        for block in file.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
            _check_finite(block, path)
            mono = np.ascontiguousarray(_mono(block))
            yield np.clip(resampler.resample_chunk(mono), -1.0, 1.0) if resampler else mono
        if resampler is not None:
            yield np.clip(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True), -1.0, 1.0)


def _mono(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]


def _check_finite(samples: np.ndarray, path: Path) -> None:
    if not np.isfinite(samples).all():
        raise AudioInputError(f"audio file holds invalid samples (NaN or infinity): {path}")


def _decode_error(path: Path, error: Exception) -> AudioInputError:
    detail = str(error).split("\n")[0]
    return AudioInputError(f"cannot decode audio file {path}: {detail}")


def check_audio_path(path: str | os.PathLike[str]) -> Path:
    """The path of a readable, non-empty audio file, a WAV not cut short; or
    :class:`AudioInputError`."""
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
    return path


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
    """Write 16-bit PCM atomically: an existing file is replaced only by a
    complete new one, never left half-written."""
    with atomic_path(path) as temp:
        soundfile.write(temp, samples, sample_rate, subtype="PCM_16", format="WAV")


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

