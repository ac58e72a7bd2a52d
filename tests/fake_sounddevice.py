"""A fake ``sounddevice`` module: devices that accept only some sample rates and
channel counts, as real HATs and HDMI outputs do, with no sound card needed."""

from __future__ import annotations

import threading
import time
import types

import numpy as np

# A different tone on each input channel, so a test can tell which one arrived.
CHANNEL_HZ = (440.0, 660.0, 880.0, 1100.0)


class PortAudioError(Exception):
    pass


def _checker(rates: tuple[int, ...], channel_counts: tuple[int, ...]):  # noqa: ANN202
    def check(device, channels, samplerate, dtype=None) -> None:  # noqa: ANN001
        if channels not in channel_counts:
            raise PortAudioError("Invalid number of channels [PaErrorCode -9998]")
        if samplerate not in rates:
            raise PortAudioError("Invalid sample rate [PaErrorCode -9997]")

    return check


def fake_input(
    script: list[str], rates: tuple[int, ...] = (16000,), channel_counts: tuple[int, ...] = (1,)
) -> types.SimpleNamespace:
    """An input device taking only ``rates`` (the first is its default) and
    ``channel_counts``. Each open follows the next step of ``script``: "fail"
    raises, "audio" delivers just under 1 s at once (channel k carries a 0.1
    sine at CHANNEL_HZ[k]) and then goes quiet (a stall). ``opened`` lists each
    open's (rate, channels)."""
    opened: list[tuple[int, int]] = []
    check = _checker(rates, channel_counts)

    class InputStream:
        def __init__(self, device, channels, samplerate, dtype, blocksize, callback) -> None:  # noqa: ANN001
            check(device, channels, samplerate)
            opened.append((samplerate, channels))
            step = script.pop(0) if script else "audio"
            if step == "fail":
                raise PortAudioError("Device unavailable [PaErrorCode -9985]")
            self.callback, self.rate, self.channels, self.blocksize = callback, samplerate, channels, blocksize
            self.thread = threading.Thread(target=self._deliver, daemon=True)

        def _deliver(self) -> None:
            t = np.arange(self.rate) / self.rate
            signal = np.stack([0.1 * np.sin(2 * np.pi * hz * t) for hz in CHANNEL_HZ[: self.channels]], axis=1)
            signal = signal.astype(np.float32)
            for start in range(0, self.rate - self.blocksize + 1, self.blocksize):
                self.callback(signal[start : start + self.blocksize], self.blocksize, None, None)

        def __enter__(self):  # noqa: ANN204
            self.thread.start()
            return self

        def __exit__(self, *exc: object) -> None:
            self.thread.join()

    return types.SimpleNamespace(
        PortAudioError=PortAudioError,
        InputStream=InputStream,
        check_input_settings=check,
        query_devices=lambda device, kind: {
            "name": "fake HAT", "max_input_channels": max(channel_counts), "default_samplerate": float(rates[0])
        },
        opened=opened,
    )


def fake_output(
    rates: tuple[int, ...] = (22050,), channel_counts: tuple[int, ...] = (1,), default_rate: int | None = None
) -> types.SimpleNamespace:
    """An output device taking only ``rates`` and ``channel_counts``. A started
    stream calls its callback for 512 frames every 2 ms (several times real time)
    until stopped; ``streams`` holds every OutputStream constructed."""
    streams: list[OutputStream] = []
    check = _checker(rates, channel_counts)

    class OutputStream:
        def __init__(self, device, channels, samplerate, dtype, callback) -> None:  # noqa: ANN001
            check(device, channels, samplerate)
            self.rate, self.channels, self.callback = samplerate, channels, callback
            self.blocks: list[np.ndarray] = []
            self.closed = False
            self._running = threading.Event()
            self._thread = threading.Thread(target=self._run, daemon=True)
            streams.append(self)

        def _run(self) -> None:
            while self._running.is_set():
                block = np.full((512, self.channels), np.nan, dtype=np.float32)  # NaN: a sample never written
                self.callback(block, 512, None, None)
                self.blocks.append(block)
                time.sleep(0.002)

        def start(self) -> None:
            self._running.set()
            self._thread.start()

        def stop(self) -> None:
            self._running.clear()
            if self._thread.is_alive():
                self._thread.join()

        def close(self) -> None:
            self.stop()
            self.closed = True

        def output(self) -> np.ndarray:
            """Everything the callback produced, (frames, channels)."""
            return np.concatenate(self.blocks) if self.blocks else np.zeros((0, self.channels), np.float32)

    return types.SimpleNamespace(
        PortAudioError=PortAudioError,
        OutputStream=OutputStream,
        check_output_settings=check,
        query_devices=lambda device, kind: {
            "name": "fake speaker", "max_output_channels": max(channel_counts),
            "default_samplerate": float(default_rate or rates[0]),
        },
        streams=streams,
    )
