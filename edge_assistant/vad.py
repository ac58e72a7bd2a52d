"""Voice activity: where the speech is in a clip, so the model only evaluates the
words (every audio token costs about 35 ms on a Pi 5 after the user stops).

One decision per frame (:class:`VoiceActivity`) serves the streaming
:class:`~.endpoint.Endpointer` and the one-shot :func:`find_speech`. A frame is voiced when
webrtcvad hears a voice in it AND its speech-band level (above 150 Hz, where hum
and rumble carry little speech) is NOISE_MARGIN_DB above the tracked noise
floor. webrtcvad alone adapts its noise model to what came before: after speech
in digital silence (a noise gate) or in a quiet room, noise that starts later is
"speech" to it for seconds or for good, and the utterance never ends.

The floor follows the quietest recent level (minimum statistics, for slow
drift) and jumps to a new steady noise at once: within 400 ms speech moves its
spectrum by 12 dB or more somewhere, steady noise does not. When the floor
rises, recent frames are judged again (``Verdict.revoked``), so the silence
that ends an utterance counts from where the noise began, not from when it was
recognised. Single frames flicker, so find_speech also wants most of the
surrounding 300 ms voiced.

The floor cannot follow a television or a radio: speech in the background is
never steady, and webrtcvad hears a voice in it. So a frame must also be near
the level of the voice being followed (:class:`SpeakerLevel`): the person who
speaks to the assistant is near the microphone and louder than the room, and a
frame SPEAKER_RANGE_DB under the level of the utterance's own louder voiced
frames, or a short burst at it, is not theirs, whatever webrtcvad says. Only
voiced frames need it: the soft end of a word still trails (TAIL_MS) and the
padding is kept after it, and counts to ``endpoint.min_speech_ms`` where
webrtcvad still hears it (``Verdict.spoken``), so a one-word answer is not
mistaken for a cough. A level gate (``endpoint.min_level_dbfs``) keeps far
sources from ever being voiced.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

import numpy as np
import webrtcvad

from .audio.format import MODEL_SAMPLE_RATE, Audio
from .errors import NoSpeechError

FRAME_MS = 30  # find_speech's frames
FRAME_SAMPLES = MODEL_SAMPLE_RATE * FRAME_MS // 1000
SMOOTHING_MS = 300
VOICED_RATIO = 0.6

# Speech-band edges, up to and including 8 kHz: above 150 Hz (mains hum and
# rumble carry little speech). The level is their sum; steadiness is judged band
# by band, because a voice can hold its loudness for 400 ms ("in Eu-") but not
# its spectrum.
BAND_EDGES_HZ = (150, 500, 1500, 4000, 8001)
# How far above the noise floor a voiced frame's level must be.
NOISE_MARGIN_DB = 8.0
# Within this after a voiced frame, a frame this far above the floor is still
# speech ("trailing"): webrtcvad drops the soft ends of words in noise (a final
# "s", a release).
TAIL_MS = 250
TAIL_MARGIN_DB = 3.0
# Levels are averaged over this: single 10-30 ms frames of low-pitched noise
# (brown, a fan) flicker by several dB.
LEVEL_BLOCK_MS = 60
# This long with every band's level within STATIONARY_SPREAD_DB is steady noise;
# speech in so long a stretch moves some band by 12 dB or more.
STATIONARY_MS = 400
STATIONARY_SPREAD_DB = 8.0
# The floor rises to the quietest level of this long (minimum statistics): longer
# than any stretch of speech without a pause or a soft sound. Frames this old
# are judged again when the floor rises.
FLOOR_HISTORY_MS = 1500
# A smaller rise of the floor flips no verdict worth taking back.
REJUDGE_RISE_DB = 1.0
# The speaker's level is this quantile of the levels of the voiced frames heard
# so far in the utterance (their louder syllables); a frame more than
# SPEAKER_RANGE_DB under it is not theirs. Nor is one while less than
# SPEAKER_RUN_MS of the last SMOOTHING_MS was at their level, or, after a pause
# longer than TAIL_MS, less than SPEAKER_RESUME_MS: a voice holds its level for
# syllables, a drum hit or a television's loudest syllable peaks for less. The
# rule applies once SPEAKER_MIN_MS of their voice was heard. Chosen with
# scripts/bench_endpoint.py: a lower quantile or a wider range let a television
# 15 dB under the speaker hold the end back; a narrower range or a longer
# resumption lost soft last syllables ("Christ-mas").
# A voice confirmed late counts from the first frame of its run at the speaker's
# level, its softer onset as speech. A new utterance with a level carried over
# (a follow-up, a confirmation) starts instead on SPEAKER_RUN_MS within
# SPEAKER_LOUD_DB of the speaker's level itself: a one-word answer ("Yes." is
# about 200 ms loud, then a soft "s") holds the threshold for less than
# SPEAKER_RESUME_MS, and a television under the speaker seldom comes this close
# (scripts/bench_endpoint.py --follow-ups: 6 dB let it start more follow-ups
# than the resumption rule did, 4 dB fewer).
SPEAKER_QUANTILE = 0.8
SPEAKER_RANGE_DB = 13.0
SPEAKER_RUN_MS = 90
SPEAKER_RESUME_MS = 240
SPEAKER_LOUD_DB = 4.0
SPEAKER_MIN_MS = 150
LOUDEST_SHARE = 0.05  # find_speech: where the search for the near talker starts
SILENT_DB = -100.0  # digital silence, and the floor before anything was heard
SILENT_POWER = 10 ** (SILENT_DB / 10)


class Verdict(NamedTuple):
    voiced: bool  # webrtcvad heard a voice, clear of the noise, at the speaker's level
    trailing: bool  # not voiced, but a softer sound just after voice: part of the speech, no proof of it
    revoked: int  # how many frames just before this one turned out to be noise
    confirmed: int = 0  # how many frames just before this one turned out to be voiced (a voice confirmed late)
    onset: int = 0  # how many frames before those were its softer onset: heard, speech, not voiced
    heard: bool = False  # webrtcvad heard a voice clear of the noise and the gate, at any level

    @property
    def speech(self) -> bool:
        return self.voiced or self.trailing

    @property
    def spoken(self) -> bool:
        """Counts as speech for ``endpoint.min_speech_ms``: voiced, or the soft end
        of the word just voiced (the "s" of "Yes" is 14 dB under its vowel)."""
        return self.voiced or (self.trailing and self.heard)


class SpeakerLevel:
    """The level of the voice an utterance follows: a quantile of its voiced
    frames' levels, and the level a frame needs to be that voice. ``known``: that
    level, found beforehand (a whole clip's, :func:`loudest_voice`)."""

    def __init__(self, frame_ms: int, known: float | None = None) -> None:
        self._levels: list[float] = []  # sorted
        self._min_frames = max(1, SPEAKER_MIN_MS // frame_ms)
        self._known = known
        # The last utterance's threshold while its speaker is still the one
        # followed (the follow-up after a reply): a television cannot start one.
        self.carried = -math.inf

    def clear(self) -> None:
        self._levels.clear()

    def add(self, level: float) -> None:
        bisect.insort(self._levels, level)

    @property
    def threshold_db(self) -> float:
        """Frames under this are not the speaker's; until enough was heard, the
        carried level (-inf if none)."""
        if self._known is not None:
            return self._known
        if len(self._levels) < self._min_frames:
            return self.carried
        return max(self.carried, self._levels[int(SPEAKER_QUANTILE * (len(self._levels) - 1))] - SPEAKER_RANGE_DB)


class VoiceActivity:
    """The voiced-frame decision, frame by frame, for the streaming endpointer and
    the one-shot trimming alike. ``min_level_db``: quieter frames are never
    voiced (``endpoint.min_level_dbfs``); ``speaker_db``: the speaker's
    threshold, if known beforehand."""

    def __init__(
        self, aggressiveness: int, frame_ms: int, min_level_db: float = SILENT_DB, speaker_db: float | None = None
    ) -> None:
        samples = MODEL_SAMPLE_RATE * frame_ms // 1000
        self._vad = webrtcvad.Vad(aggressiveness)
        bins = np.fft.rfftfreq(samples, 1 / MODEL_SAMPLE_RATE)
        bands = len(BAND_EDGES_HZ) - 1
        band_of_bin = np.digitize(bins, BAND_EDGES_HZ) - 1
        # Parseval, one-sided: each band's mean square, so levels read as dBFS RMS.
        # A row per real and imaginary part: float32 frames have complex64 spectra.
        weights = (band_of_bin[:, None] == np.arange(bands)) * (2.0 / samples**2)
        self._band_weights = np.repeat(weights, 2, axis=0).astype(np.float32)
        # Small per-frame lists in plain Python: cheaper than numpy calls on them.
        self._powers: deque[list[float]] = deque(maxlen=max(1, LEVEL_BLOCK_MS // frame_ms))
        self._band_levels: list[deque[float]] = [deque(maxlen=STATIONARY_MS // frame_ms) for _ in range(bands)]
        # Per remembered frame: its level, and whether webrtcvad heard a voice.
        self._levels: deque[float] = deque(maxlen=FLOOR_HISTORY_MS // frame_ms)
        self._heard: deque[bool] = deque(maxlen=FLOOR_HISTORY_MS // frame_ms)
        self._voiced: deque[bool] = deque(maxlen=FLOOR_HISTORY_MS // frame_ms)  # the verdicts given
        self._tail_frames = TAIL_MS // frame_ms
        self._since_voice = 0  # frames since webrtcvad and the margin agreed
        self._run_frames = max(1, SPEAKER_RUN_MS // frame_ms)
        self._resume_frames = max(1, SPEAKER_RESUME_MS // frame_ms)
        # Of the last SMOOTHING_MS: did webrtcvad hear each frame at the speaker's
        # level, and within SPEAKER_LOUD_DB of their level itself. Not the floor's
        # margin too: in steady noise soft syllables miss it, and counting only the
        # loud ones would drop words.
        self._near: deque[bool] = deque(maxlen=max(1, SMOOTHING_MS // frame_ms))
        self._loud: deque[bool] = deque(maxlen=max(1, SMOOTHING_MS // frame_ms))
        # The frames just before, heard clear of the floor and not voiced: at the
        # speaker's level or not. A voiced frame confirms them from the first at
        # that level; those before it were the voice's onset.
        self._unconfirmed: deque[bool] = deque(maxlen=max(1, SMOOTHING_MS // frame_ms) - 1)
        self._heard_clear = False  # the last frame: webrtcvad heard it, clear of the floor and the gate
        self.floor_db = SILENT_DB
        self.speaker = SpeakerLevel(frame_ms, speaker_db)
        self._min_level_db = min_level_db
        self._speaker_db = -math.inf  # the level a voiced frame needs to be the speaker's
        self.reset()

    def reset(self) -> None:
        """The next frame does not follow the last one. The floor stays: the room
        is the same."""
        self._powers.clear()
        for levels in self._band_levels:
            levels.clear()
        self._levels.clear()
        self._heard.clear()
        self._voiced.clear()
        self._since_voice = self._tail_frames + 1
        self._near.clear()
        self._loud.clear()
        self._unconfirmed.clear()
        self.speaker.clear()

    def push(self, frame: np.ndarray, starting: bool = False) -> Verdict:
        """Judge one frame (16 kHz float32, ``frame_ms`` long). ``starting``: no
        utterance is under way, so a voice after a pause is a new one: with a
        carried level it must be near the speaker's level itself
        (SPEAKER_LOUD_DB), not only over the threshold for longer."""
        self._heard.append(self._vad.is_speech(to_pcm16(frame), MODEL_SAMPLE_RATE))
        self._levels.append(self._level(frame))
        previous_floor = self.floor_db
        self._track_floor()
        self._speaker_db = self.speaker.threshold_db
        if self.floor_db > previous_floor + REJUDGE_RISE_DB:
            verdict = self._rejudge(starting)
        else:
            voiced, trailing, self._since_voice = self._judge(self._levels[-1], self._heard[-1], self._since_voice, starting)
            verdict = Verdict(voiced, trailing, 0, *self._take_confirmed(voiced), self._heard_clear)
        self._voiced.append(verdict.voiced)
        if verdict.voiced:
            for back in range(1, verdict.confirmed + 2):
                self._voiced[-back] = True
                self.speaker.add(self._levels[-back])
        return verdict

    def _take_confirmed(self, voiced: bool) -> tuple[int, int]:
        """For a voiced frame: how many frames before it it confirms as voiced (the
        run since the first at the speaker's level, which waited for SPEAKER_RUN_MS
        or SPEAKER_RESUME_MS of voice), and how many before those were its onset."""
        if not voiced:
            if self._heard_clear:
                self._unconfirmed.append(self._near[-1])
            else:
                self._unconfirmed.clear()
            return 0, 0
        run = list(self._unconfirmed)
        self._unconfirmed.clear()
        onset = run.index(True) if True in run else len(run)
        return len(run) - onset, onset

    @property
    def voice_pending(self) -> bool:
        """The last frame was heard at the speaker's level and began a voice that
        does not count yet (SPEAKER_RUN_MS, after a pause SPEAKER_RESUME_MS)."""
        return self._since_voice > 0 and bool(self._near) and self._near[-1] and sum(self._near) >= self._run_frames

    @property
    def level_db(self) -> float:
        """The level of the last frame pushed (speech band, LEVEL_BLOCK_MS)."""
        return self._levels[-1]

    def _level(self, frame: np.ndarray) -> float:
        """Speech-band level in dB of the last LEVEL_BLOCK_MS; records the bands'."""
        parts = np.fft.rfft(frame.astype(np.float32, copy=False)).view(np.float32)
        self._powers.append(np.dot(parts * parts, self._band_weights).tolist())
        powers = [sum(band) / len(self._powers) + SILENT_POWER for band in zip(*self._powers)]
        for levels, power in zip(self._band_levels, powers):
            levels.append(10 * math.log10(power))
        return 10 * math.log10(sum(powers))

    def _track_floor(self) -> None:
        """Down to the newest level at once; up to a steady level at once, else to
        the quietest remembered level."""
        levels, bands = self._levels, self._band_levels
        self.floor_db = min(self.floor_db, levels[-1])
        window = bands[0].maxlen
        if len(bands[0]) == window and all(max(band) - min(band) <= STATIONARY_SPREAD_DB for band in bands):
            self.floor_db = sum(islice(levels, len(levels) - window, None)) / window
        elif len(levels) == levels.maxlen:
            self.floor_db = max(self.floor_db, min(levels))

    def _judge(self, level: float, heard: bool, since_voice: int, starting: bool) -> tuple[bool, bool, int]:
        """One frame against the floor, the gate and the speaker's level: voiced,
        trailing and frames since voice; records whether it was heard clear of
        the floor, and at the speaker's level (``_near``, ``_loud``)."""
        audible = heard and level >= self._min_level_db
        self._heard_clear = audible and level > self.floor_db + NOISE_MARGIN_DB
        self._near.append(audible and level >= self._speaker_db)
        self._loud.append(audible and level >= self._speaker_db + SPEAKER_RANGE_DB - SPEAKER_LOUD_DB)
        if since_voice <= self._tail_frames:
            run = sum(self._near) >= self._run_frames
        else:
            run = sum(self._loud) >= self._run_frames if starting else sum(self._near) >= self._resume_frames
        voiced = self._heard_clear and self._near[-1] and (self._speaker_db == -math.inf or run)
        return self._trail(voiced, level, since_voice)

    def _trail(self, voiced: bool, level: float, since_voice: int) -> tuple[bool, bool, int]:
        """Voiced, trailing (a softer sound just after voice) and frames since voice."""
        since_voice = 0 if voiced else since_voice + 1
        trailing = not voiced and since_voice <= self._tail_frames and level > self.floor_db + TAIL_MARGIN_DB
        return voiced, trailing, since_voice

    def _rejudge(self, starting: bool) -> Verdict:
        """The floor rose: judge the remembered frames again against it (a frame
        voiced before stays voiced if it still clears the margin; the speaker's
        rule was applied when it came), then the newest. Those after the last
        one that is still speech were noise."""
        since_voice = self._tail_frames + 1
        last_speech = -1
        earlier = list(self._voiced)[len(self._voiced) - (len(self._levels) - 1) :] if len(self._levels) > 1 else []
        for index, level in enumerate(islice(self._levels, len(earlier))):
            still_voiced = earlier[index] and level > self.floor_db + NOISE_MARGIN_DB
            voiced, trailing, since_voice = self._trail(still_voiced, level, since_voice)
            if voiced or trailing:
                last_speech = index
        voiced, trailing, since_voice = self._judge(self._levels[-1], self._heard[-1], since_voice, starting)
        self._unconfirmed.clear()  # the run waiting for confirmation was judged against the old floor
        if voiced or trailing:
            last_speech = len(self._levels) - 1
        self._since_voice = since_voice
        newest = len(self._levels) - 1
        if last_speech == newest:
            return Verdict(voiced, trailing, 0, 0, self._heard_clear)
        return Verdict(False, False, newest - 1 - last_speech, 0, self._heard_clear)


@dataclass(frozen=True)
class SpeechSpan:
    """Sample offsets of the speech within the clip (end exclusive)."""

    start: int
    end: int


def to_pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1] to the little-endian int16 bytes webrtcvad reads."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def speech_frames(samples: np.ndarray, aggressiveness: int, min_level_db: float = SILENT_DB) -> np.ndarray:
    """One bool per whole 30 ms frame: is it speech (see :class:`VoiceActivity`).

    The clip is whole, so the speaker's level is known before its first frame
    is judged: a first pass finds the loudest voice (:func:`loudest_voice`), and
    a television heard before the question began is no more speech than one
    heard after it."""
    _, voiced, levels = _judge_frames(samples, VoiceActivity(aggressiveness, FRAME_MS, min_level_db))
    speaker = loudest_voice(levels[voiced])
    speech, _, _ = _judge_frames(samples, VoiceActivity(aggressiveness, FRAME_MS, min_level_db, speaker))
    return speech


def _judge_frames(samples: np.ndarray, activity: VoiceActivity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Speech, voiced and level of each whole frame, revocations applied."""
    count = len(samples) // FRAME_SAMPLES
    speech, voiced, levels = np.zeros(count, dtype=bool), np.zeros(count, dtype=bool), np.zeros(count)
    starting = True  # until the first voice, as between the endpointer's utterances
    for index in range(count):
        verdict = activity.push(samples[index * FRAME_SAMPLES : (index + 1) * FRAME_SAMPLES], starting)
        starting = starting and not verdict.voiced
        speech[max(0, index - verdict.revoked) : index] = False
        voiced[max(0, index - verdict.revoked) : index] = False
        speech[index - verdict.confirmed - verdict.onset : index] = True
        voiced[index - verdict.confirmed : index] = True
        speech[index], voiced[index], levels[index] = verdict.speech, verdict.voiced, activity.level_db
    return speech, voiced, levels


def loudest_voice(levels: np.ndarray) -> float | None:
    """The level a frame of a whole clip needs to be the loudest talker's, from
    the levels of its voiced frames: starting from its loudest frames (the top
    LOUDEST_SHARE), the speaker's rule (SpeakerLevel) applied to the frames it
    keeps until it settles; None if too few were voiced. Starting from the top
    finds the near talker even when a television talks for longer."""
    if len(levels) < SPEAKER_MIN_MS // FRAME_MS:
        return None
    ordered = np.sort(levels)
    threshold = float(ordered[int((1 - LOUDEST_SHARE) * (len(ordered) - 1))]) - SPEAKER_RANGE_DB
    for _ in range(10):
        kept = ordered[ordered >= threshold]
        settled = float(kept[int(SPEAKER_QUANTILE * (len(kept) - 1))]) - SPEAKER_RANGE_DB
        if abs(settled - threshold) < 0.5:
            break
        threshold = settled
    return threshold


def find_speech(
    audio: Audio, aggressiveness: int, min_speech_ms: int, padding_ms: int, min_level_db: float = SILENT_DB
) -> SpeechSpan:
    """The span from the first to the last stretch of speech, widened by
    ``padding_ms`` on each side (``audio.speech_padding_ms``: word endings are
    soft). Raises :class:`NoSpeechError` if there is none, or less voiced audio
    than ``min_speech_ms`` (``endpoint.min_speech_ms``: a cough or a click).
    ``min_level_db``: quieter frames are never speech (``endpoint.min_level_dbfs``)."""
    if audio.sample_rate != MODEL_SAMPLE_RATE:
        raise ValueError(f"find_speech needs {MODEL_SAMPLE_RATE} Hz audio, got {audio.sample_rate}")
    speech = speech_frames(audio.samples, aggressiveness, min_level_db)
    if speech.sum() * FRAME_MS < min_speech_ms:
        raise NoSpeechError(f"no speech found in the audio ({audio.seconds:.1f} s); nothing was sent to the model")
    smoothing_frames = SMOOTHING_MS // FRAME_MS
    window = np.ones(smoothing_frames) / smoothing_frames
    ratio = np.convolve(speech.astype(float), window, mode="same")
    in_speech = (ratio >= VOICED_RATIO) & speech
    if not in_speech.any():
        raise NoSpeechError(f"no speech found in the audio ({audio.seconds:.1f} s); nothing was sent to the model")
    frames = np.flatnonzero(in_speech)
    padding = padding_ms * MODEL_SAMPLE_RATE // 1000
    start = max(0, int(frames[0]) * FRAME_SAMPLES - padding)
    end = min(len(audio.samples), (int(frames[-1]) + 1) * FRAME_SAMPLES + padding)
    return SpeechSpan(start, end)


def trim_to_speech(
    audio: Audio, aggressiveness: int, min_speech_ms: int, padding_ms: int, min_level_db: float = SILENT_DB
) -> Audio:
    span = find_speech(audio, aggressiveness, min_speech_ms, padding_ms, min_level_db)
    return Audio(audio.samples[span.start : span.end], audio.sample_rate)
