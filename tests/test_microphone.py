"""The microphone source against a fake PortAudio: device errors and stalls are
survived by reopening with backoff (and reported for systemd's STATUS=), devices
that only offer 48 kHz or 2 or 4 channels are captured as 16 kHz mono from the
configured channel, and the queue never grows without bound."""

from __future__ import annotations

import logging
import re
import threading

import numpy as np
import pytest

from edge_assistant.audio import devices, sources
from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.audio.sources import MicrophoneSource
from edge_assistant.config import Config, apply_overrides
from edge_assistant.errors import AudioDeviceError, UsageError

from fake_sounddevice import CHANNEL_HZ, fake_input


DROP_WARNING = re.compile(r"dropped (\d+) capture blocks \(([\d.]+) s of audio; (\d+) in total\): the pipeline fell behind")


@pytest.fixture
def fast_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MicrophoneSource, "STALL_SECONDS", 0.3)


def collect(source: MicrophoneSource, seconds: float) -> list:
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if frame.end_sample >= seconds * MODEL_SAMPLE_RATE:
            source.stop()
    return frames


def sine_fit(samples: np.ndarray, hz: float) -> tuple[float, float]:
    """The amplitude of the ``hz`` tone in 16 kHz ``samples``, whatever its phase,
    and the RMS of everything else."""
    t = np.arange(len(samples)) / MODEL_SAMPLE_RATE
    basis = np.stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t)], axis=1)
    coefficients, *_ = np.linalg.lstsq(basis, samples, rcond=None)
    residual = samples - basis @ coefficients
    return float(np.hypot(*coefficients)), float(np.sqrt(np.mean(residual**2)))


def test_failing_and_stalling_device_is_reopened_and_reported(
    monkeypatch: pytest.MonkeyPatch, fast_recovery: None
) -> None:
    fake = fake_input(["fail", "fail", "audio", "audio"])
    monkeypatch.setattr(sources, "import_sounddevice", lambda: fake)
    pings, statuses = [], []
    source = MicrophoneSource(None, 30, on_idle=lambda: pings.append(1), on_status=statuses.append)
    frames = collect(source, 1.9)
    assert len(fake.opened) == 4  # two failures, one stall, then the audio again
    assert pings  # the watchdog was fed while waiting to retry
    assert [frame.end_sample for frame in frames] == [480 * (i + 1) for i in range(len(frames))]
    missing = "microphone missing: Device unavailable [PaErrorCode -9985]; retrying in"
    assert statuses == [
        f"{missing} 0.5 s", f"{missing} 1 s", "listening", "microphone silent: no audio for 0.3 s; retrying in 0.5 s", "listening"
    ]


def test_device_without_16k_is_captured_natively_and_resampled(monkeypatch: pytest.MonkeyPatch, fast_recovery: None) -> None:
    fake = fake_input(["audio"], rates=(48000,))
    monkeypatch.setattr(sources, "import_sounddevice", lambda: fake)
    frames = collect(MicrophoneSource(None, 30), 0.9)
    assert fake.opened == [(48000, 1)]
    samples = np.concatenate([frame.samples for frame in frames])
    spectrum = np.abs(np.fft.rfft(samples[:MODEL_SAMPLE_RATE // 2]))
    peak_hz = np.argmax(spectrum) * MODEL_SAMPLE_RATE / (MODEL_SAMPLE_RATE // 2)
    assert abs(peak_hz - 440) < 5  # still a 440 Hz tone after 48 kHz -> 16 kHz


@pytest.mark.parametrize(
    ("channel_counts", "rates", "channel"),
    [((2,), (16000,), 0), ((2,), (16000,), 1), ((4,), (48000,), 0), ((4,), (48000,), 2), ((2, 4), (48000, 16000), 1)],
    ids=["2ch-first", "2ch-second", "4ch-48k-first", "4ch-48k-third", "2-or-4ch-16k-not-default"],
)
def test_multichannel_device_gives_the_chosen_channel_at_16k_mono(
    monkeypatch: pytest.MonkeyPatch, fast_recovery: None, channel_counts: tuple[int, ...], rates: tuple[int, ...], channel: int
) -> None:
    fake = fake_input(["audio"], rates=rates, channel_counts=channel_counts)
    monkeypatch.setattr(sources, "import_sounddevice", lambda: fake)
    frames = collect(MicrophoneSource(None, 30, channel=channel), 0.9)
    assert fake.opened == [(16000 if 16000 in rates else rates[0], min(channel_counts))]
    samples = np.concatenate([frame.samples for frame in frames])
    assert samples.ndim == 1 and samples.dtype == np.float32 and len(samples) >= 0.9 * MODEL_SAMPLE_RATE
    if 16000 in rates:  # captured as it is: exactly that channel's samples
        t = np.arange(len(samples)) / MODEL_SAMPLE_RATE
        np.testing.assert_allclose(samples, 0.1 * np.sin(2 * np.pi * CHANNEL_HZ[channel] * t), atol=1e-6)
    steady = samples[800:]  # past the resampler's first few milliseconds
    amplitude, rest = sine_fit(steady, CHANNEL_HZ[channel])
    assert abs(amplitude - 0.1) < 0.002 and rest < 0.002  # that channel's tone, and nothing else
    for other in set(range(min(channel_counts))) - {channel}:
        assert sine_fit(steady, CHANNEL_HZ[other])[0] < 0.001


def test_channel_out_of_range_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "import_sounddevice", lambda: fake_input([], channel_counts=(2,)))
    with pytest.raises(AudioDeviceError) as raised:
        MicrophoneSource(None, 30, channel=2)  # before the models load, not when the first frame is read
    assert str(raised.value) == "input.channel = 2 is out of range: input device fake HAT has 2 channel(s), numbered from 0"
    with pytest.raises(UsageError, match=r"input.channel = -1 is invalid: must be 0 or more"):
        apply_overrides(Config(), {"input": {"channel": -1}}, where="config.toml")


def test_queue_is_bounded_and_drops_are_reported(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(MicrophoneSource, "QUEUE_SECONDS", 0.2)
    fake = fake_input(["audio"])
    monkeypatch.setattr(sources, "import_sounddevice", lambda: fake)
    source = MicrophoneSource(None, 30)
    frames = source.frames()
    first = next(frames)  # the fake then delivers 1 s at once into a 0.2 s queue
    threading.Event().wait(0.3)
    caught_up = [next(frames) for _ in range(6)]  # the next block read reports the drops
    source.stop()
    assert first.end_sample == 480 and caught_up[-1].end_sample == 7 * 480
    assert source.dropped_chunks > 0
    [warning] = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    # The first block read after a drop reports it; with the fake's burst that may
    # come before the burst ends, and the rest waits for the next report.
    reported = DROP_WARNING.fullmatch(warning)
    assert reported, warning
    count = int(reported[1])
    assert 0 < count <= source.dropped_chunks and int(reported[3]) == count
    assert reported[2] == f"{count * 1024 / 16000:.2f}"


def test_drop_reports_are_rate_limited(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sources, "import_sounddevice", lambda: fake_input([]))
    source = MicrophoneSource(None, 30)
    for dropped in (3, 5, 9):  # three bursts within the report interval: one warning
        source.dropped_chunks = dropped
        source._report_drops(16000)
    monkeypatch.setattr(MicrophoneSource, "DROP_REPORT_SECONDS", 0.0)
    source._report_drops(16000)  # the interval passed: the rest, counted since the last report
    assert [record.getMessage() for record in caplog.records] == [
        "dropped 3 capture blocks (0.19 s of audio; 3 in total): the pipeline fell behind",
        "dropped 6 capture blocks (0.38 s of audio; 9 in total): the pipeline fell behind",
    ]


def test_devices_listed_or_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_assistant.cli import main

    listing = "> 0 USB Microphone, ALSA (1 in, 0 out)\n< 1 Headphones, ALSA (0 in, 2 out)"

    class Devices(list):
        def __str__(self) -> str:
            return listing

    fake = fake_input([])
    fake.query_devices = lambda: Devices([1, 2])
    monkeypatch.setattr(devices, "import_sounddevice", lambda: fake)
    assert main(["devices"]) == 0
    assert capsys.readouterr().out.strip() == listing

    fake.query_devices = lambda: Devices([])
    assert main(["devices"]) == 5
    err = capsys.readouterr().err
    assert "no audio devices found" in err and len(err.strip().splitlines()) == 1
