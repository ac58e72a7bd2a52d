"""DevicePlayback against a fake PortAudio: a device that refuses the voice's
22,050 Hz mono is opened at a rate and channel count it takes, and plays the
written audio resampled, whole, in every channel."""

from __future__ import annotations

import numpy as np
import pytest

from edge_assistant.audio import playback as playback_module
from edge_assistant.audio.format import Frame
from edge_assistant.audio.playback import DevicePlayback, RecordingPlayback
from edge_assistant.audio.sources import EchoSource
from edge_assistant.errors import AudioDeviceError

from fake_sounddevice import fake_output

VOICE_RATE = 22050


def tone(hz: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.mark.parametrize(
    ("rates", "channel_counts", "default_rate", "opened"),
    [
        ((VOICE_RATE, 48000), (1, 2), 48000, (VOICE_RATE, 1)),
        ((48000,), (2,), 48000, (48000, 2)),
        ((44100, 48000), (2,), 44100, (44100, 2)),
        ((44100,), (1, 2), 96000, (44100, 1)),
    ],
    ids=["voice-rate-mono", "48k-stereo-only", "default-44k1-stereo", "44k1-mono-only"],
)
def test_written_voice_is_played_at_a_rate_and_channels_the_device_takes(
    monkeypatch: pytest.MonkeyPatch,
    rates: tuple[int, ...],
    channel_counts: tuple[int, ...],
    default_rate: int,
    opened: tuple[int, int],
) -> None:
    fake = fake_output(rates, channel_counts, default_rate)
    monkeypatch.setattr(playback_module, "import_sounddevice", lambda: fake)
    playback = DevicePlayback(None, VOICE_RATE)
    [stream] = fake.streams
    assert (stream.rate, stream.channels) == opened
    assert playback.sample_rate == stream.rate  # earcons are made at the device's rate

    playback.write(tone(500, 1.0, VOICE_RATE), VOICE_RATE)
    playback.write(tone(500, 0.5, VOICE_RATE), VOICE_RATE)  # a second sentence, back to back
    playback.drain()
    assert not playback.busy
    playback.close()
    assert stream.closed

    out = stream.output()
    assert not np.isnan(out).any()  # every sample the device asked for was filled
    for channel in range(1, stream.channels):
        np.testing.assert_array_equal(out[:, channel], out[:, 0])  # mono copied to every channel
    sound = np.flatnonzero(np.abs(out[:, 0]) > 1e-3)
    assert abs((sound[-1] - sound[0] + 1) / stream.rate - 1.5) < 0.005  # all 1.5 s, nothing cut
    assert abs(peak_hz(out[sound[0] : sound[-1], 0], stream.rate) - 500) < 1.5  # the pitch kept


def test_device_that_takes_nothing_we_can_play_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(playback_module, "import_sounddevice", lambda: fake_output((96000,), (8,)))
    with pytest.raises(AudioDeviceError) as raised:
        DevicePlayback(None, VOICE_RATE)
    message = str(raised.value)
    assert message.startswith("cannot open output device (default): Invalid") and "\n" not in message


def test_the_playhead_says_how_much_of_a_reply_was_heard() -> None:
    """A barge-in asks the speaker what the playback had played: whole sentences,
    and the played share of the one it cut."""
    from edge_assistant.tts import StreamingSpeaker

    class Voice:
        sample_rate = 100

        def synthesize(self, sentence: str) -> np.ndarray:
            return np.ones(len(sentence) * 10, dtype=np.float32)  # 10 samples per character

    playback = RecordingPlayback(16000)
    speaker = StreamingSpeaker(Voice(), playback)
    speaker.say("Hello there.", reply_chars=13)  # a space of the next sentence was generated before it ended
    speaker.say("How are you?", reply_chars=25)
    speaker.finish()
    first, second = speaker.spoken
    assert (first.start, second.start) == (0, first.end) and second.end == playback.written
    assert speaker.heard_reply_chars(0) == 0
    assert speaker.heard_reply_chars(first.end // 2) == 6
    assert speaker.heard_reply_chars(first.end) == 13
    assert speaker.heard_reply_chars(first.end + (second.end - first.end) // 2) == 19
    assert playback.playhead == 0
    playback.play(160)  # 10 ms of input time plays 10 ms of output
    assert playback.playhead == 160
    playback.stop()
    assert playback.playhead == playback.written


class _Silence:
    """Three 30 ms frames of digital silence, as a FileSource would give them."""

    def frames(self):  # noqa: ANN201
        return (Frame(np.zeros(480, dtype=np.float32), 480 * (k + 1)) for k in range(3))

    def stop(self) -> None:
        pass


def test_a_recorded_speaker_plays_in_input_time_and_is_heard_at_the_echo_gain() -> None:
    """``run --input-file --output-file``: each input frame plays as long a piece
    of the reply into the recording, and the input hears it at the gain."""
    playback = RecordingPlayback(16000)
    playback.write(np.ones(600, dtype=np.float32), 16000)
    frames = list(EchoSource(_Silence(), playback, gain=0.5).frames())
    assert [frame.end_sample for frame in frames] == [480, 960, 1440]
    assert np.allclose(frames[0].samples, 0.5)
    assert np.allclose(frames[1].samples[:120], 0.5) and not frames[1].samples[120:].any()
    assert not frames[2].samples.any() and not playback.busy
    recording = playback.recording()
    assert len(recording) == 1440 and recording[:600].all() and not recording[600:].any()


def test_without_echo_the_input_is_untouched_and_drain_plays_the_rest_at_once() -> None:
    playback = RecordingPlayback(16000)
    playback.write(np.ones(2000, dtype=np.float32), 16000)
    frames = list(EchoSource(_Silence(), playback).frames())
    assert not any(frame.samples.any() for frame in frames)
    assert playback.busy
    playback.drain()  # --once --out: nothing clocks it, the whole reply goes in
    assert not playback.busy and playback.recording().sum() == 2000


def test_a_dead_output_device_is_detected_reported_and_reopened(monkeypatch: pytest.MonkeyPatch) -> None:
    """The PortAudio callback stops coming (issue 22, defect 8): the playback
    stops claiming to be busy (the assistant would stay speaking for good),
    says so for systemd's STATUS=, and reopens the device with backoff."""
    import time

    fake = fake_output()
    monkeypatch.setattr(playback_module, "import_sounddevice", lambda: fake)
    monkeypatch.setattr(DevicePlayback, "STALL_SECONDS", 0.2)
    monkeypatch.setattr(DevicePlayback, "FIRST_BACKOFF_SECONDS", 0.05)
    statuses: list[str] = []
    playback = DevicePlayback(None, 22050, on_status=statuses.append)
    try:
        fake.streams[0]._running.clear()  # the callback never comes again
        fake.streams[0]._thread.join()
        playback.write(np.full(22050, 0.1, dtype=np.float32), 22050)
        deadline = time.monotonic() + 30
        while playback.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not playback.busy, "a dead device kept the playback busy"
        assert any("output device" in status and "stopped" in status for status in statuses), statuses
        while len(fake.streams) < 2 and time.monotonic() < deadline:
            playback.busy  # noqa: B018 - polled by the audio loop, which is what reopens it
            time.sleep(0.01)
        assert len(fake.streams) == 2 and fake.streams[0].closed
        playback.write(np.full(2205, 0.1, dtype=np.float32), 22050)
        while playback.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert np.nanmax(fake.streams[1].output()) > 0.05  # the reopened device plays
    finally:
        playback.close()
