"""File runs with flat memory (issue 22): ``run --input-file`` reads its input
frame by frame from disk and ``--output-file`` is written as it plays, so a
long file costs no more memory than a short one. Measured with tracemalloc
(numpy reports its buffers to it): peak Python-side allocation while ten
minutes of audio pass through, against the 38 MB the input alone takes as
float32, or the 53 MB of a ten-minute recording at 22.05 kHz."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import soundfile

from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.audio.playback import RecordingPlayback
from edge_assistant.audio.sources import FileSource

MINUTES = 10
LIMIT_BYTES = 4 * 1024 * 1024


def long_input(path: Path, rate: int = 48000) -> Path:
    """Ten minutes of a 440 Hz tone at 48 kHz stereo, written block by block."""
    with soundfile.SoundFile(path, "w", rate, 2, subtype="PCM_16") as file:
        t = np.arange(rate) / rate
        second = np.stack([0.1 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1)
        for _ in range(MINUTES * 60):
            file.write(second)
    return path


def test_the_input_file_is_read_in_frames(tmp_path: Path) -> None:
    path = long_input(tmp_path / "long.wav")
    tracemalloc.start()
    try:
        source = FileSource(path, 30)
        samples, loudest = 0, 0.0
        for frame in source.frames():
            samples = frame.end_sample
            loudest = max(loudest, float(np.abs(frame.samples).max()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert abs(samples - MINUTES * 60 * MODEL_SAMPLE_RATE) <= 480  # all of it, at 16 kHz, up to the last part frame
    assert 0.09 < loudest < 0.11  # resampled, mixed to mono, not clipped
    assert peak < LIMIT_BYTES, f"{peak / 1e6:.1f} MB held while reading"


def test_the_output_file_is_written_as_it_plays(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    frame = 400  # 25 ms: 40 frames a second
    tracemalloc.start()
    try:
        playback = RecordingPlayback(22050, out)
        tone = np.full(22050, 0.25, dtype=np.float32)
        for second in range(MINUTES * 60):
            if second % 10 == 0:
                playback.write(tone, 22050)  # a second of sound every ten
            for _ in range(MODEL_SAMPLE_RATE // frame):
                playback.play(frame)
        playback.save(out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    recording, rate = soundfile.read(out, dtype="float32")
    assert rate == 22050 and len(recording) == MINUTES * 60 * 22050  # lines up with the input
    assert abs(recording[: 22050].mean() - 0.25) < 0.01 and abs(recording[22050 : 10 * 22050]).max() == 0
    assert peak < LIMIT_BYTES, f"{peak / 1e6:.1f} MB held while recording"
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no partial file left beside it
