"""The microphone source against a fake PortAudio: device errors and stalls are
survived by reopening with backoff, and the queue never grows without bound."""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest

from edge_assistant import audio_io
from edge_assistant.audio_io import MODEL_SAMPLE_RATE, MicrophoneSource


class PortAudioError(Exception):
    pass


def fake_sounddevice(script: list[str], native_rate: int = MODEL_SAMPLE_RATE) -> types.SimpleNamespace:
    """Each open of an InputStream follows the next step of ``script``:
    "fail" raises, "audio" delivers 1 s then goes quiet (a stall)."""
    opened: list[int] = []

    class InputStream:
        def __init__(self, device, channels, samplerate, dtype, blocksize, callback) -> None:
            opened.append(samplerate)
            step = script.pop(0) if script else "audio"
            if step == "fail":
                raise PortAudioError("Device unavailable [PaErrorCode -9985]")
            self.callback, self.rate, self.blocksize = callback, samplerate, blocksize
            self.thread = threading.Thread(target=self._deliver, daemon=True)

        def _deliver(self) -> None:
            t = np.arange(self.rate) / self.rate
            tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]
            for start in range(0, self.rate - self.blocksize + 1, self.blocksize):
                self.callback(tone[start : start + self.blocksize], self.blocksize, None, None)

        def __enter__(self):
            self.thread.start()
            return self

        def __exit__(self, *exc: object) -> None:
            self.thread.join()

    def check_input_settings(device, channels, samplerate) -> None:
        if samplerate != native_rate:
            raise PortAudioError("Invalid sample rate")

    return types.SimpleNamespace(
        PortAudioError=PortAudioError,
        InputStream=InputStream,
        check_input_settings=check_input_settings,
        query_devices=lambda device, kind: {"default_samplerate": float(native_rate)},
        opened=opened,
    )


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


def test_failing_and_stalling_device_is_reopened(monkeypatch: pytest.MonkeyPatch, fast_recovery: None) -> None:
    fake = fake_sounddevice(["fail", "fail", "audio", "audio"])
    monkeypatch.setattr(audio_io, "import_sounddevice", lambda: fake)
    pings = []
    source = MicrophoneSource(None, 30, on_idle=lambda: pings.append(1))
    frames = collect(source, 1.9)
    assert len(fake.opened) == 4  # two failures, one stall, then the audio again
    assert pings  # the watchdog was fed while waiting to retry
    assert [frame.end_sample for frame in frames] == [480 * (i + 1) for i in range(len(frames))]


def test_device_without_16k_is_captured_natively_and_resampled(monkeypatch: pytest.MonkeyPatch, fast_recovery: None) -> None:
    fake = fake_sounddevice(["audio"], native_rate=48000)
    monkeypatch.setattr(audio_io, "import_sounddevice", lambda: fake)
    frames = collect(MicrophoneSource(None, 30), 0.9)
    assert fake.opened[0] == 48000
    samples = np.concatenate([frame.samples for frame in frames])
    spectrum = np.abs(np.fft.rfft(samples[:MODEL_SAMPLE_RATE // 2]))
    peak_hz = np.argmax(spectrum) * MODEL_SAMPLE_RATE / (MODEL_SAMPLE_RATE // 2)
    assert abs(peak_hz - 440) < 5  # still a 440 Hz tone after 48 kHz -> 16 kHz


def test_queue_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MicrophoneSource, "QUEUE_SECONDS", 0.2)
    fake = fake_sounddevice(["audio"])
    monkeypatch.setattr(audio_io, "import_sounddevice", lambda: fake)
    source = MicrophoneSource(None, 30)
    frames = source.frames()
    first = next(frames)  # the fake then delivers 1 s at once into a 0.2 s queue
    threading.Event().wait(0.3)
    source.stop()
    assert first.end_sample == 480
    assert source.dropped_chunks > 0


def test_devices_listed_or_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_assistant.cli import main

    listing = "> 0 USB Microphone, ALSA (1 in, 0 out)\n< 1 Headphones, ALSA (0 in, 2 out)"

    class Devices(list):
        def __str__(self) -> str:
            return listing

    fake = fake_sounddevice([])
    fake.query_devices = lambda: Devices([1, 2])
    monkeypatch.setattr(audio_io, "import_sounddevice", lambda: fake)
    assert main(["devices"]) == 0
    assert capsys.readouterr().out.strip() == listing

    fake.query_devices = lambda: Devices([])
    assert main(["devices"]) == 5
    err = capsys.readouterr().err
    assert "no audio devices found" in err and len(err.strip().splitlines()) == 1
