"""Streaming endpointing for the daemon: where an utterance starts and ends in a
live stream, frame by frame, on the voice-activity decision of :mod:`.vad`
(the one ``--once``'s trimming makes too)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .audio.format import MODEL_SAMPLE_RATE
from .config import EndpointConfig
from .vad import FLOOR_HISTORY_MS, SMOOTHING_MS, SPEAKER_RESUME_MS, Verdict, VoiceActivity


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


class SpeechFrame(NamedTuple):
    end: int  # input time after it
    voiced: bool
    spoken: bool  # counts to min_speech_ms (Verdict.spoken)


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
        # The latest speech frames; before a start only the voiced ones. Enough for
        # the start decision and for any run of frames the activity can revoke or
        # confirm.
        self._speech: deque[SpeechFrame] = deque(maxlen=max(smoothing_frames, FLOOR_HISTORY_MS // frame_ms) + 1)
        # The frames that triggered the start plus pre_roll_ms before them.
        self._pre_roll: deque[np.ndarray] = deque(maxlen=smoothing_frames + config.pre_roll_ms // frame_ms)
        self._frames: list[np.ndarray] = []
        self._in_speech = False
        self._start_sample = 0
        self._spoken_frames = 0
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
        return self._in_speech or any(frame.voiced for frame in self._speech)

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
        verdict = self._activity.push(frame, starting=not self._in_speech)
        if verdict.revoked:
            self._revoke(end_sample - verdict.revoked * self.frame_samples)
        if verdict.confirmed:
            self._confirm(verdict, end_sample)
        if verdict.voiced or (self._in_speech and verdict.trailing):
            self._speech.append(SpeechFrame(end_sample, verdict.voiced, verdict.spoken))
        if not self._in_speech:
            self._pre_roll.append(frame)
            if verdict.voiced:
                if self._recent_voiced(end_sample) * self.frame_ms >= self.config.start_ms:
                    return self._start(end_sample)
            return None
        self._frames.append(frame)
        self._spoken_frames += verdict.spoken
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
        return sum(1 for frame in self._speech if frame.voiced and frame.end > since)

    def _revoke(self, first_end: int) -> None:
        """Frames ending at ``first_end`` or later were noise after all: in an
        utterance the silence counts from before them."""
        revoked = self._pop_from(first_end)
        if self._in_speech and revoked:
            self._spoken_frames -= sum(frame.spoken for frame in revoked.values())
            before = first_end - self.frame_samples
            self._speech_end = self._speech[-1].end if self._speech else max(self._start_sample, before)

    def _confirm(self, verdict: Verdict, end_sample: int) -> None:
        """The frames before the one ending at ``end_sample`` that its verdict
        confirms: voiced from the start of the run, spoken in its onset."""
        voiced_from = end_sample - verdict.confirmed * self.frame_samples
        first_end = voiced_from - verdict.onset * self.frame_samples
        earlier = self._pop_from(first_end)
        for end in range(first_end, end_sample, self.frame_samples):
            was = earlier.get(end)
            self._spoken_frames += self._in_speech and not (was and was.spoken)
            self._speech.append(SpeechFrame(end, end >= voiced_from or bool(was and was.voiced), True))

    def _pop_from(self, first_end: int) -> dict[int, SpeechFrame]:
        """Take the speech frames ending at ``first_end`` or later, by end."""
        taken = {}
        while self._speech and self._speech[-1].end >= first_end:
            frame = self._speech.pop()
            taken[frame.end] = frame
        return taken

    def _start(self, end_sample: int) -> SpeechStarted:
        # Only this utterance's frames (the last SMOOTHING_MS) stay, so a
        # revocation counts them.
        since = end_sample - SMOOTHING_MS * MODEL_SAMPLE_RATE // 1000
        while self._speech[0].end <= since:
            self._speech.popleft()
        run_frames = (end_sample - self._speech[0].end) // self.frame_samples + 1
        keep = min(len(self._pre_roll), run_frames + self.config.pre_roll_ms // self.frame_ms)
        self._in_speech = True
        self._frames = list(self._pre_roll)[-keep:]
        self._pre_roll.clear()
        self._start_sample = end_sample - keep * self.frame_samples
        self._spoken_frames = sum(frame.spoken for frame in self._speech)
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
        speaker = self._activity.speaker
        spoken_ms = self._spoken_frames * self.frame_ms
        # A follow-up must reach the level of this voice; a discarded sound sets none.
        speaker.carried = speaker.threshold_db if spoken_ms >= self.config.min_speech_ms else -math.inf
        speaker.clear()
        if spoken_ms < self.config.min_speech_ms:
            return UtteranceDiscarded(spoken_ms)
        samples = np.concatenate(frames)
        return UtteranceEnded(samples[: self._kept_samples()], self._start_sample, self._speech_end, forced)
