"""Voice activity: where the speech is in a clip, so the model only evaluates the
words (every audio token costs about 35 ms on a Pi 5 after the user stops).

One decision per frame (:class:`VoiceActivity`) serves the streaming
:class:`Endpointer` and the one-shot :func:`find_speech`. A frame is voiced when
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
padding is kept after it. A level gate (``endpoint.min_level_dbfs``) keeps far
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
from .config import EndpointConfig
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
SPEAKER_QUANTILE = 0.8
SPEAKER_RANGE_DB = 13.0
SPEAKER_RUN_MS = 90
SPEAKER_RESUME_MS = 240
SPEAKER_MIN_MS = 150
LOUDEST_SHARE = 0.05  # find_speech: where the search for the near talker starts
SILENT_DB = -100.0  # digital silence, and the floor before anything was heard
SILENT_POWER = 10 ** (SILENT_DB / 10)


class Verdict(NamedTuple):
    voiced: bool  # webrtcvad heard a voice and the level stands clear of the noise
    trailing: bool  # not voiced, but a softer sound just after voice: part of the speech, no proof of it
    revoked: int  # how many frames just before this one turned out to be noise

    @property
    def speech(self) -> bool:
        return self.voiced or self.trailing


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
        # level. Not the floor's margin too: in steady noise soft syllables miss
        # it, and counting only the loud ones would drop words.
        self._near: deque[bool] = deque(maxlen=max(1, SMOOTHING_MS // frame_ms))
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
        self.speaker.clear()

    def push(self, frame: np.ndarray) -> Verdict:
        """Judge one frame (16 kHz float32, ``frame_ms`` long)."""
        self._heard.append(self._vad.is_speech(to_pcm16(frame), MODEL_SAMPLE_RATE))
        self._levels.append(self._level(frame))
        previous_floor = self.floor_db
        self._track_floor()
        self._speaker_db = self.speaker.threshold_db
        if self.floor_db > previous_floor + REJUDGE_RISE_DB:
            verdict = self._rejudge()
        else:
            voiced, trailing, self._since_voice = self._judge(self._levels[-1], self._heard[-1], self._since_voice, self._near)
            verdict = Verdict(voiced, trailing, 0)
        self._voiced.append(verdict.voiced)
        if verdict.voiced:
            self.speaker.add(self._levels[-1])
        return verdict

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

    def _judge(self, level: float, heard: bool, since_voice: int, near: deque[bool]) -> tuple[bool, bool, int]:
        """One frame against the floor, the gate and the speaker's level: voiced,
        trailing and frames since voice; ``near`` (the last SMOOTHING_MS: heard at
        the speaker's level) gets this frame's."""
        loud = heard and level > self.floor_db + NOISE_MARGIN_DB and level >= self._min_level_db
        near.append(heard and level >= self._speaker_db and level >= self._min_level_db)
        needed = self._run_frames if since_voice <= self._tail_frames else self._resume_frames
        voiced = loud and near[-1] and (self._speaker_db == -math.inf or sum(near) >= needed)
        return self._trail(voiced, level, since_voice)

    def _trail(self, voiced: bool, level: float, since_voice: int) -> tuple[bool, bool, int]:
        """Voiced, trailing (a softer sound just after voice) and frames since voice."""
        since_voice = 0 if voiced else since_voice + 1
        trailing = not voiced and since_voice <= self._tail_frames and level > self.floor_db + TAIL_MARGIN_DB
        return voiced, trailing, since_voice

    def _rejudge(self) -> Verdict:
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
        voiced, trailing, since_voice = self._judge(self._levels[-1], self._heard[-1], since_voice, self._near)
        if voiced or trailing:
            last_speech = len(self._levels) - 1
        self._since_voice = since_voice
        newest = len(self._levels) - 1
        if last_speech == newest:
            return Verdict(voiced, trailing, 0)
        return Verdict(False, False, newest - 1 - last_speech)


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
    speech, _, levels = _judge_frames(samples, VoiceActivity(aggressiveness, FRAME_MS, min_level_db, speaker))
    if speaker is not None:  # a voice confirmed SPEAKER_RESUME_MS late was at its level from its onset
        for onset in np.flatnonzero(speech[1:] & ~speech[:-1]) + 1:
            first = onset
            while (
                first > 0 and onset - first < SPEAKER_RESUME_MS // FRAME_MS
                and not speech[first - 1] and levels[first - 1] >= speaker
            ):
                first -= 1
            speech[first:onset] = True
    return speech


def _judge_frames(samples: np.ndarray, activity: VoiceActivity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Speech, voiced and level of each whole frame, revocations applied."""
    count = len(samples) // FRAME_SAMPLES
    speech, voiced, levels = np.zeros(count, dtype=bool), np.zeros(count, dtype=bool), np.zeros(count)
    for index in range(count):
        verdict = activity.push(samples[index * FRAME_SAMPLES : (index + 1) * FRAME_SAMPLES])
        speech[max(0, index - verdict.revoked) : index] = False
        voiced[max(0, index - verdict.revoked) : index] = False
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


@dataclass(frozen=True)
class SpeechStarted:
    at_sample: int  # input time base: where the voiced run began


@dataclass(frozen=True)
class UtteranceEnded:
    samples: np.ndarray  # 16 kHz float32, pre-roll included, trailing silence trimmed to padding
    start_sample: int  # input time base of samples[0]
    speech_end_sample: int  # where the last voiced frame ended
    forced: bool  # cut at max_speech_seconds rather than by silence


@dataclass(frozen=True)
class UtteranceDiscarded:
    voiced_ms: int  # too little speech: a cough, a click, a door


EndpointEvent = SpeechStarted | UtteranceEnded | UtteranceDiscarded


class Endpointer:
    """Streaming endpointing for the daemon: frames in, speech start and utterance
    end out.

    Speech starts when ``start_ms`` of the last 300 ms is voiced; it ends after
    ``end_silence_ms`` without speech (voiced or trailing frames) or at
    ``max_speech_seconds``. Voiced means at the level of this utterance's own
    voice (:class:`SpeakerLevel`), so a television under it is silence. The
    ``pre_roll_ms`` before the start is kept, because webrtcvad notices a word
    only after its onset, and ``padding_ms``
    (``audio.speech_padding_ms``) after the last speech, because word endings
    are soft.
    """

    def __init__(self, config: EndpointConfig, aggressiveness: int, frame_ms: int, padding_ms: int) -> None:
        self.config = config
        self.padding_samples = MODEL_SAMPLE_RATE * padding_ms // 1000
        self.frame_samples = MODEL_SAMPLE_RATE * frame_ms // 1000
        self.frame_ms = frame_ms
        self._activity = VoiceActivity(aggressiveness, frame_ms, config.min_level_dbfs)
        smoothing_frames = max(1, SMOOTHING_MS // frame_ms)
        # (end in input time, voiced) of the latest speech frames; before a start
        # only the voiced ones. Enough for the start decision and for any run of
        # frames the activity can revoke.
        self._speech: deque[tuple[int, bool]] = deque(maxlen=max(smoothing_frames, FLOOR_HISTORY_MS // frame_ms) + 1)
        # The frames that triggered the start plus pre_roll_ms before them.
        self._pre_roll: deque[np.ndarray] = deque(maxlen=smoothing_frames + config.pre_roll_ms // frame_ms)
        self._frames: list[np.ndarray] = []
        self._in_speech = False
        self._start_sample = 0
        self._voiced_frames = 0
        self._speech_end = 0
        self._last_end = 0  # input time after the last frame pushed

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def pausing(self) -> bool:
        """In an utterance, and silent for longer than the padding kept after
        speech: if the silence lasts, the utterance ends where it now would."""
        return self._in_speech and self._last_end - self._speech_end > self.padding_samples

    @property
    def length_if_ended(self) -> int | None:
        """While pausing: the samples the utterance keeps if the silence lasts
        (its UtteranceEnded.samples); what a turn can be closed on early."""
        return self._kept_samples() if self.pausing else None

    def _kept_samples(self) -> int:
        return self._speech_end - self._start_sample + self.padding_samples

    def utterance_so_far(self) -> np.ndarray:
        """The open utterance's audio from its start, pre-roll included: what its
        UtteranceEnded.samples will begin with."""
        return np.concatenate(self._frames) if self._in_speech and self._frames else np.zeros(0, dtype=np.float32)

    @property
    def voice_heard(self) -> bool:
        """A voiced frame since the last reset: speech has started or may be
        starting (``in_speech`` needs ``start_ms`` of it)."""
        return self._in_speech or any(voiced for _, voiced in self._speech)

    def reset(self) -> None:
        """Forget the utterance under way (the next frame does not follow the
        last). The last speaker's level stays: a follow-up must reach it."""
        self._activity.reset()
        self._pre_roll.clear()
        self._speech.clear()
        self._frames = []
        self._in_speech = False

    def push(self, frame: np.ndarray, end_sample: int) -> EndpointEvent | None:
        """One frame of ``frame_ms`` (16 kHz float32); ``end_sample`` is the input
        time of its last sample + 1."""
        self._last_end = end_sample
        if not self._in_speech and not self._recent_voiced(end_sample - self.frame_samples):
            self._activity.speaker.clear()  # no voice under way: the next may be anyone's
        verdict = self._activity.push(frame)
        if verdict.revoked:
            self._revoke(end_sample - verdict.revoked * self.frame_samples)
        if verdict.voiced or (self._in_speech and verdict.trailing):
            self._speech.append((end_sample, verdict.voiced))
        if not self._in_speech:
            self._pre_roll.append(frame)
            if verdict.voiced:
                recent = self._recent_voiced(end_sample)
                if recent * self.frame_ms >= self.config.start_ms:
                    return self._start(end_sample, recent)
            return None
        self._frames.append(frame)
        self._voiced_frames += verdict.voiced
        if verdict.speech:
            self._speech_end = end_sample
        silence_ms = (end_sample - self._speech_end) * 1000 // MODEL_SAMPLE_RATE
        # A voice resuming at the speaker's level is heard out before the end
        # ("...the capital ... of France"), for at most SPEAKER_RESUME_MS more.
        resuming = self._activity.voice_pending and silence_ms < self.config.end_silence_ms + SPEAKER_RESUME_MS
        if silence_ms >= self.config.end_silence_ms and not resuming:
            return self._end(forced=False)
        if len(self._frames) * self.frame_ms >= self.config.max_speech_seconds * 1000:
            return self._end(forced=True)
        return None

    def forget_speaker(self) -> None:
        """Anyone may speak next (after the wake word, or back to idle): no level
        carried over from the last utterance."""
        self._activity.speaker.carried = -math.inf

    def _recent_voiced(self, end_sample: int) -> int:
        """Voiced frames among the last SMOOTHING_MS."""
        since = end_sample - SMOOTHING_MS * MODEL_SAMPLE_RATE // 1000
        return sum(1 for end, voiced in self._speech if voiced and end > since)

    def _revoke(self, first_end: int) -> None:
        """Frames ending at ``first_end`` or later were noise after all: in an
        utterance the silence counts from before them."""
        revoked = []
        while self._speech and self._speech[-1][0] >= first_end:
            revoked.append(self._speech.pop())
        if self._in_speech and revoked:
            self._voiced_frames -= sum(voiced for _, voiced in revoked)
            before = first_end - self.frame_samples
            self._speech_end = self._speech[-1][0] if self._speech else max(self._start_sample, before)

    def _start(self, end_sample: int, voiced: int) -> SpeechStarted:
        # Only this utterance's frames stay, so a revocation counts them.
        while len(self._speech) > voiced:
            self._speech.popleft()
        run_frames = (end_sample - self._speech[0][0]) // self.frame_samples + 1
        keep = min(len(self._pre_roll), run_frames + self.config.pre_roll_ms // self.frame_ms)
        self._in_speech = True
        self._frames = list(self._pre_roll)[-keep:]
        self._pre_roll.clear()
        self._start_sample = end_sample - keep * self.frame_samples
        self._voiced_frames = voiced
        self._speech_end = end_sample
        return SpeechStarted(at_sample=end_sample - run_frames * self.frame_samples)

    def finish(self) -> UtteranceEnded | UtteranceDiscarded | None:
        """The input ended: an utterance still open ends here, as if silence had
        followed (a recording that stops mid-question is still a question)."""
        return self._end(forced=False) if self._in_speech else None

    def _end(self, forced: bool) -> UtteranceEnded | UtteranceDiscarded:
        frames, self._frames = self._frames, []
        self._in_speech = False
        self._speech.clear()
        speaker, self._activity.speaker.carried = self._activity.speaker.threshold_db, -math.inf
        self._activity.speaker.clear()
        voiced_ms = self._voiced_frames * self.frame_ms
        if voiced_ms < self.config.min_speech_ms:
            return UtteranceDiscarded(voiced_ms)
        self._activity.speaker.carried = speaker  # a follow-up must reach the level of this voice
        samples = np.concatenate(frames)
        return UtteranceEnded(samples[: self._kept_samples()], self._start_sample, self._speech_end, forced)
