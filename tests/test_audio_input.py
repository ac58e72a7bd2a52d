"""Reading audio as people have it, and finding the speech in it."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edge_assistant.atomic import atomic_path
from edge_assistant.audio.files import read_audio, write_wav_atomic
from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Audio
from edge_assistant.audio.playback import RecordingPlayback
from edge_assistant.config import Config
from edge_assistant.errors import AudioInputError, NoSpeechError
from edge_assistant.vad import find_speech, trim_to_speech

from speech import concat, noise, silence, speak

_DEFAULTS = Config()
# find_speech as --once calls it, with the shipped configuration.
SPEECH_SETTINGS = (_DEFAULTS.audio.vad_aggressiveness, _DEFAULTS.endpoint.min_speech_ms, _DEFAULTS.audio.speech_padding_ms)


@pytest.fixture(scope="module")
def question() -> Audio:
    return speak("What is the weather like in Paris today?")


@pytest.mark.parametrize(
    ("subtype", "rate", "channels"),
    [
        ("PCM_U8", 8000, 1),
        ("PCM_16", 16000, 1),
        ("PCM_16", 44100, 2),
        ("PCM_24", 48000, 2),
        ("PCM_32", 22050, 1),
        ("FLOAT", 32000, 4),
        ("DOUBLE", 16000, 1),
    ],
)
def test_wav_formats_become_16k_mono_float(tmp_path: Path, question: Audio, subtype: str, rate: int, channels: int) -> None:
    import soxr

    original = soxr.resample(question.samples, MODEL_SAMPLE_RATE, rate)
    frames = np.repeat(original[:, None], channels, axis=1) * 0.8
    path = tmp_path / "q.wav"
    soundfile.write(path, frames, rate, subtype=subtype)
    audio = read_audio(path)
    assert audio.sample_rate == MODEL_SAMPLE_RATE
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert abs(audio.seconds - question.seconds) < 0.01
    n = min(len(audio.samples), len(question.samples))
    correlation = np.corrcoef(audio.samples[:n], question.samples[:n])[0, 1]
    assert correlation > (0.85 if rate == 8000 else 0.98)


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_compressed_containers(tmp_path: Path, question: Audio, fmt: str) -> None:
    path = tmp_path / f"q.{fmt.lower()}"
    soundfile.write(path, question.samples, MODEL_SAMPLE_RATE, format=fmt)
    assert abs(read_audio(path).seconds - question.seconds) < 0.05


def test_missing_unreadable_empty_corrupt(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match="not found"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioInputError, match="not a regular file"):
        read_audio(tmp_path)
    empty = tmp_path / "empty.wav"
    empty.touch()
    with pytest.raises(AudioInputError, match="empty"):
        read_audio(empty)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioInputError, match="cannot decode"):
        read_audio(garbage)


def test_zero_length_wav(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    soundfile.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioInputError, match="zero length"):
        read_audio(path)


def test_truncated_wav_is_refused(tmp_path: Path, question: Audio) -> None:
    path = tmp_path / "cut.wav"
    soundfile.write(path, question.samples, MODEL_SAMPLE_RATE, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioInputError, match="truncated"):
        read_audio(path)


def test_streaming_recorder_wav_with_unknown_length_is_read(tmp_path: Path, question: Audio) -> None:
    path = tmp_path / "stream.wav"
    soundfile.write(path, question.samples, MODEL_SAMPLE_RATE, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    index = data.index(b"data")
    data[index + 4 : index + 8] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    assert abs(read_audio(path).seconds - question.seconds) < 0.01


def test_speech_found_in_silence_and_noise(question: Audio) -> None:
    clip = concat(silence(2.0), question.samples + noise(question.seconds, 0.003), noise(1.5, 0.003))
    span = find_speech(clip, *SPEECH_SETTINGS)
    start_s, end_s = span.start / MODEL_SAMPLE_RATE, span.end / MODEL_SAMPLE_RATE
    assert 1.5 < start_s < 2.1
    assert 2.0 + question.seconds - 0.4 < end_s < 2.0 + question.seconds + 0.5
    trimmed = trim_to_speech(clip, *SPEECH_SETTINGS)
    assert trimmed.seconds < clip.seconds - 2.5


@pytest.mark.parametrize(
    "clip",
    [silence(3.0), noise(3.0, 0.002), noise(3.0, 0.01)],
    ids=["silence", "faint-noise", "room-noise"],
)
def test_no_speech(clip: np.ndarray) -> None:
    with pytest.raises(NoSpeechError, match="no speech"):
        find_speech(Audio(clip, MODEL_SAMPLE_RATE), *SPEECH_SETTINGS)


def test_recording_writes_atomically_and_never_half(tmp_path: Path) -> None:
    target = tmp_path / "reply.wav"
    target.write_bytes(b"precious")
    recording = RecordingPlayback(22050)
    recording.write(np.zeros(100, dtype=np.float32), 22050)
    recording.write(np.zeros(320, dtype=np.float32), 16000)  # resampled to the playback's rate
    recording.drain()
    assert target.read_bytes() == b"precious"
    recording.save(target)
    assert soundfile.info(target).frames == 100 + 441
    with pytest.raises(Exception):
        write_wav_atomic(target, np.zeros((2, 2, 2)), 22050)
    assert soundfile.info(target).frames == 100 + 441
    assert [p.name for p in tmp_path.iterdir()] == ["reply.wav"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_take_the_users_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """A reply or a recording is the user's file: mkstemp's 0600 must not survive the rename."""
    previous = os.umask(umask)
    try:
        write_wav_atomic(tmp_path / "reply.wav", np.zeros(100, dtype=np.float32), 16000)
        with atomic_path(tmp_path / "model.onnx") as temp:
            temp.write_bytes(b"model")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "reply.wav").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "reply.wav"]


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
