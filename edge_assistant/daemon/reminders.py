"""Timers and alarms said when they come due and rung until stopped, and any
other announcement the assistant makes unasked (a confirmation's question)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from ..audio.format import MODEL_SAMPLE_RATE
from ..audio.playback import Playback
from ..config import Config
from ..earcons import earcon
from ..phrases import reminder_sentence
from ..tools.scheduler import Reminder, Scheduler
from ..tts import PiperSpeech, StreamingSpeaker
from .events import EventLog

log = logging.getLogger(__name__)

# A ringing timer or alarm repeats its announcement after this much quiet.
RING_PAUSE_SECONDS = 5.0


@dataclass
class _Ringing:
    """A timer or alarm that repeats until "stop", the wake word, or ``until``."""

    text: str
    until: int  # input time
    next_at: int | None = None  # input time of the next repeat; None while it plays


class Reminders:
    """Announcements through the normal playback, queued until the audio loop
    says it is quiet (:meth:`announce_next`); the loop does not listen while one
    plays (:attr:`playing`)."""

    def __init__(
        self, config: Config, scheduler: Scheduler | None, voice: PiperSpeech, playback: Playback, events: EventLog,
        wait_for_replies: bool, rings_here: Callable[[Reminder], bool] = lambda entry: True,
    ) -> None:
        """``rings_here``: which timers and alarms this room announces (the ones set in it)."""
        self.config = config
        self.rings_here = rings_here
        self.scheduler = scheduler
        self.voice = voice
        self.playback = playback
        self.events = events
        self.wait_for_replies = wait_for_replies
        self._announcer: StreamingSpeaker | None = None  # the announcement playing, if any
        self._announcer_done: threading.Thread | None = None
        self._announcements: deque[tuple[str, bool]] = deque()  # (text, rings) waiting for a quiet moment
        self._ringing: _Ringing | None = None
        self._silence = threading.Event()  # "stop" from the turn worker

    @property
    def playing(self) -> bool:
        return self._announcer is not None

    def silence(self) -> None:
        """From any thread ("stop"): the ringing ends at the next frame."""
        self._silence.set()

    def queue_missed(self) -> None:
        """At start: say which timers and alarms came due while the assistant was off."""
        if self.scheduler is not None:
            for entry in self.scheduler.take_missed(self.rings_here):
                self._announcements.append((reminder_sentence(entry.kind, entry.label, entry.clock_time(), missed=True), False))

    def follow(self, now: int) -> bool:
        """From the audio loop, every frame: queue timers and alarms that came
        due, and follow the announcement playing; True on the frame it ended."""
        if self.scheduler is None:
            return False
        if self._silence.is_set():
            self._silence.clear()
            self.stop_ringing(now)
        for entry in self.scheduler.due(self.rings_here):
            self._announcements.append((self._reminder_text(entry), self.config.tools.alarm_ring_seconds > 0))
        if self._announcer is None:
            return False
        if self.playback.busy or (self._announcer_done is not None and self._announcer_done.is_alive()):
            return False
        self._announcer = None
        if self._ringing is not None:
            self._ringing.next_at = now + int(RING_PAUSE_SECONDS * MODEL_SAMPLE_RATE)
        return True

    def announce_next(self, now: int) -> None:
        """When nothing else is going on (never over a reply or the user): say the
        next queued announcement, or repeat a ringing one until it is stopped or
        its time is up."""
        if self._announcer is not None:
            return
        if self._announcements:
            text, rings = self._announcements.popleft()
            if rings:
                self._ringing = _Ringing(text, now + int(self.config.tools.alarm_ring_seconds * MODEL_SAMPLE_RATE))
            self.announce(text, rings=True, now=now)
        elif self._ringing is not None and self._ringing.next_at is not None and now >= self._ringing.next_at:
            if now >= self._ringing.until:
                log.info("nobody stopped it: the ringing ends after tools.alarm_ring_seconds")
                self._ringing = None
            else:
                self.announce(self._ringing.text, rings=True, now=now)

    @staticmethod
    def _reminder_text(entry: Reminder) -> str:
        return reminder_sentence(entry.kind, entry.label, entry.clock_time())

    def announce(self, text: str, rings: bool, now: int) -> None:
        """Say ``text`` through the normal playback (after the alarm earcon when it
        rings), even while idle; the loop does not listen while it plays."""
        self.events.emit("announce", now, text=text)
        if rings:
            self.playback.write(earcon("alarm", self.playback.sample_rate, self.config.earcons.volume), self.playback.sample_rate)
        speaker = StreamingSpeaker(self.voice, self.playback)
        speaker.say(text)
        self._announcer = speaker
        self._announcer_done = threading.Thread(target=speaker.finish, name="announce", daemon=True)
        self._announcer_done.start()
        if self.wait_for_replies:
            self._announcer_done.join()  # file input: the announcement is in the output at once, reproducibly

    def stop_ringing(self, now: int) -> None:
        """"Stop" or the wake word: a ringing timer or alarm goes quiet at once."""
        if self._ringing is not None:
            self.events.emit("ringing_stopped", now)
            self._ringing = None
        if self._announcer is not None:
            self._announcer.cancel()
            self.playback.stop()
