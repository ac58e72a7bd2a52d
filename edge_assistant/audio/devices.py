"""Sound devices through PortAudio (sounddevice): naming them, listing them and
finding a format a device accepts."""

from __future__ import annotations

from typing import Callable

from ..errors import AudioDeviceError


def parse_device(name: str) -> str | int | None:
    """A sounddevice device given as an index ("2") or a name substring."""
    if not name:
        return None
    return int(name) if name.isdigit() else name


def first_accepted(
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


def device_name(device: str | int | None) -> str:
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

