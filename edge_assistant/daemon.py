"""``edge-assistant run``: the always-listening assistant.

One audio loop (this module's :meth:`Assistant.run`) takes every input frame,
in order: wake word → endpointing → state machine. A finished utterance goes
to a single turn worker thread that runs the same :func:`turn.run_turn` as
``--once``; its reply streams sentence by sentence into the playback. The loop never blocks on the model, so the wake word can
interrupt a reply (barge-in) and the systemd watchdog is fed from here.

States::

    idle ──wake──▶ capturing ──utterance──▶ thinking ──audio──▶ speaking
      ▲  (wake = "none": speech starts capturing)                  │
      └──────── timeout ◀── follow-up window ◀── reply done ───────┘

While the assistant speaks only the wake word is listened for: without echo
cancellation the microphone hears the reply, and voice activity alone must not
start a turn from it.
"""

from __future__ import annotations

import contextlib
import enum
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

from .audio.format import MODEL_SAMPLE_RATE, Audio, Frame
from .audio.playback import Playback
from .audio.sources import AudioSource
from .config import Config
from .earcons import earcon
from .errors import TurnStuckError, UsageError
from .llm.engine import GemmaEngine, Interruption
from .llm.tool_loop import ToolUse, hear_yes_or_no
from .systemd import Notifier
from .tools import Tool
from .tools.scheduler import Reminder
from .tools.setup import ToolSet, build_tools
from .tts import PiperSpeech, StreamingSpeaker
from .turn import TOOL_APOLOGY, SpeechStream, TurnResult, run_turn
from .vad import Endpointer, EndpointEvent, SpeechStarted, UtteranceDiscarded, UtteranceEnded

log = logging.getLogger(__name__)

# Input kept for replay after a wake word: a detector fires up to one 80 ms step
# plus a frame after the phrase ends, and "what's" in "hey jarvis what's the time"
# must not be lost in that gap.
WAKE_REPLAY_MS = 1000
# The listening earcon plays this long after the wake phrase ended, and only if
# the user is not already speaking: a question said in one breath with the wake
# word, or after a short pause, gets no tone over it. Users who wait for the tone
# pause longer than this.
EARCON_DELAY_MS = 600
# The earcon and its echo are kept out of the utterance like the reply's echo; a
# 0.16 s tone at earcons.volume rings out sooner than speech at full level.
EARCON_ECHO_TAIL_MS = 120
# A ringing timer or alarm repeats its announcement after this much quiet.
RING_PAUSE_SECONDS = 5.0


@dataclass
class _Ringing:
    """A timer or alarm that repeats until "stop", the wake word, or ``until``."""

    text: str
    until: int  # input time
    next_at: int | None = None  # input time of the next repeat; None while it plays


@dataclass
class _PendingConfirmation:
    """A ``confirm`` tool the model called: run once the user says yes."""

    tool: Tool
    arguments: dict[str, Any]
    question: str
    listening: bool = False  # the question has been said: the next utterance answers it


class State(enum.Enum):
    IDLE = "idle"
    CAPTURING = "capturing"
    THINKING = "thinking"
    SPEAKING = "speaking"
    FOLLOW_UP = "follow-up"


class EventLog:
    """One JSON object per line for each event, stamped in the input's time base
    (seconds since the stream began), plus a log line for journald."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def emit(self, kind: str, at_sample: int, **fields: Any) -> None:
        record = {"event": kind, "t": round(at_sample / MODEL_SAMPLE_RATE, 3), **fields}
        log.info("%s %s", kind, json.dumps(fields, ensure_ascii=False) if fields else "")
        if self.stream is not None:
            with self._lock:
                self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.stream.flush()


@dataclass
class LoopTiming:
    """How steadily the audio loop ran: the longest wall-clock gap between the
    starts of two consecutive frames, and how many exceeded 100 ms. A loop that
    waits on the model shows here (with a live or ``--realtime`` source)."""

    frames: int = 0
    longest_gap_ms: float = 0.0
    gaps_over_100_ms: int = 0
    _last: float | None = None

    def tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            gap_ms = (now - self._last) * 1000
            self.longest_gap_ms = max(self.longest_gap_ms, gap_ms)
            self.gaps_over_100_ms += gap_ms > 100
        self._last = now
        self.frames += 1


@dataclass
class _Turn:
    """The turn the worker is running, as the audio loop sees it."""

    done: threading.Event
    wake_sample: int | None
    speech_end_sample: int  # input time; for a stream, known when the speech ends
    started: float | None  # time.monotonic() when the speech ended: turns are timed in wall time from there
    speaker: StreamingSpeaker
    stream: SpeechStream | None = None  # the question, while it is still spoken
    cancelled_at: float | None = None  # time.monotonic() of a timeout's cancel
    interruption: Interruption = field(default_factory=Interruption)  # a barge-in: what of the reply was heard


class Assistant:
    """The daemon's state machine. Sources, playback and detectors are passed in,
    so files and fakes drive exactly the code that runs with devices."""

    def __init__(
        self,
        config: Config,
        engine: GemmaEngine,
        voice: PiperSpeech,
        source: AudioSource,
        playback: Playback,
        wake_detector: Any | None,
        events: EventLog,
        notifier: Notifier | None = None,
        wait_for_replies: bool = False,
        respond: Callable[..., Any] = run_turn,
        tools: ToolSet | None = None,
    ) -> None:
        """``tools``: offered to the model (``respond`` gets them), and their
        timers and alarms announced from this loop."""
        self.config = config
        self.engine = engine
        self.voice = voice
        self.source = source
        self.playback = playback
        self.wake = wake_detector
        self.events = events
        self.notifier = notifier or Notifier({})
        # With file input the model's thinking time is not input time: the stream
        # waits for each reply, which makes runs reproducible.
        self.wait_for_replies = wait_for_replies
        self._respond = respond
        frame_ms = config.input.frame_ms
        self.endpointer = Endpointer(config.endpoint, config.audio.vad_aggressiveness, frame_ms, config.audio.speech_padding_ms)
        self.state = State.IDLE
        self._now = 0  # input time, in samples
        self._deadline: int | None = None  # end of the capture or follow-up window
        self._wake_sample: int | None = None
        self._turn: _Turn | None = None  # the turn the loop follows
        self._last_started: _Turn | None = None  # the last turn handed to a worker: the next one waits for it
        self._stream: SpeechStream | None = None  # the utterance being heard and fed to its turn
        self._speaking_since: int | None = None
        self._echo_guard_until = 0
        self._last_activity = 0
        self._heard: deque[tuple[np.ndarray, int]] = deque(maxlen=max(1, WAKE_REPLAY_MS // frame_ms))
        self._earcon_decision_at: int | None = None  # input time at which to decide on the listening earcon
        self._stuck = False  # a cancelled turn never returned: the watchdog is no longer fed
        self._stop = threading.Event()
        self._push_to_talk = threading.Event()
        self._reset_requested = threading.Event()
        self._last_watchdog = 0.0
        self.cancel_grace_seconds = 60.0  # a cancelled turn returns at its next token; far longer means stuck
        self.turns = 0
        self.loop_timing = LoopTiming()
        self._started_wall = time.time()
        self.tools = tools
        self._announcer: StreamingSpeaker | None = None  # the announcement playing, if any
        self._announcer_done: threading.Thread | None = None
        self._announcements: deque[tuple[str, bool]] = deque()  # (text, rings) waiting for a quiet moment
        self._ringing: _Ringing | None = None
        self._silence = threading.Event()  # "stop" from the turn worker
        self._confirmation: _PendingConfirmation | None = None
        if tools is not None:
            self._respond = partial(respond, tools=ToolUse(tools.toolbox, self._ask_confirmation))
            tools.hooks.on_stop = self._silence.set
            tools.hooks.on_forget = self.request_reset
            tools.volume.apply = self._set_gain
            tools.volume.restore()
            if wait_for_replies:  # file input: timers run in the input's time, so runs are reproducible
                tools.scheduler.clock = self._input_clock

    # -- control from signals --------------------------------------------------

    @property
    def stopped_by_signal(self) -> bool:
        return self._stop.is_set()

    @property
    def turn_running(self) -> bool:
        """A worker is still inside the engine: it must not be freed under it."""
        return self._last_started is not None and not self._last_started.done.is_set()

    def stop(self) -> None:
        self._stop.set()
        self.source.stop()
        self._drop_stream()
        self.engine.cancel()

    def push_to_talk(self) -> None:
        self._push_to_talk.set()

    def request_reset(self) -> None:
        self._reset_requested.set()

    # -- the audio loop --------------------------------------------------------

    def run(self) -> None:
        self.notifier.ready("listening")
        self._set_state(State.IDLE)
        if self.tools is not None:
            for entry in self.tools.scheduler.take_missed():
                self._announcements.append((f"While I was off, your {entry.describe()} was due at {entry.clock_time()}.", False))
        for frame in self.source.frames():
            self.loop_timing.tick()
            self._feed_watchdog()
            if self._stop.is_set():
                break
            self._process(frame)
        timing = self.loop_timing
        log.info("audio loop: %d frames, longest gap between two %.0f ms, %d gaps over 100 ms",
                 timing.frames, timing.longest_gap_ms, timing.gaps_over_100_ms)
        self._finish()

    def _process(self, frame: Frame) -> None:
        samples = frame.samples
        self._now = frame.end_sample
        self._heard.append((samples, self._now))
        self._update_turn()
        self._watch_turn()
        self._follow_reminders()
        wake_end = self._detect_wake(samples)
        if wake_end is not None and self._on_wake(wake_end):
            return
        if self._announcer is not None:
            self.endpointer.reset()  # an announcement is playing: not the user speaking
        elif self.state in (State.CAPTURING, State.FOLLOW_UP) or (self.state is State.IDLE and self.wake is None):
            self._listen(samples, self._now)
            self._decide_earcon()
        elif self.state in (State.THINKING, State.SPEAKING):
            self.endpointer.reset()  # the reply is not the user speaking
        if self._deadline is not None and self._now >= self._deadline and not self.endpointer.in_speech:
            if self.state is State.CAPTURING:
                log.info("no speech after the wake word: back to idle")
            if self._confirmation is not None and self._confirmation.listening:
                self.events.emit("confirmation", self._now, tool=self._confirmation.tool.name, answer="no answer")
                self._confirmation = None
            self._deadline = None
            self._set_state(State.IDLE)

    def _detect_wake(self, samples: np.ndarray) -> int | None:
        """Where the wake phrase ended (input time), if one was heard in this frame."""
        if self._push_to_talk.is_set():
            self._push_to_talk.clear()
            self.events.emit("wake", self._now, name="push-to-talk", score=1.0)
            return self._now
        if self.wake is None:
            return None
        detections = self.wake.process(samples)
        for detection in detections:
            self.events.emit("wake", self._now, name=detection.name, score=round(float(detection.score), 3))
        return max(detection.end_sample for detection in detections) if detections else None

    def _on_wake(self, wake_end: int) -> bool:
        """Start capturing from where the wake phrase ended; during a reply that is
        a barge-in, and it silences a ringing timer or alarm. Returns True if the
        frame was consumed."""
        self._stop_ringing()
        if self.state in (State.THINKING, State.SPEAKING):
            if not self.config.conversation.barge_in:
                return True
            self.events.emit("barge_in", self._now, state=self.state.value)
            turn = self._turn
            if turn is not None:
                # Never waits: the silenced speaker queues nothing more, what it
                # played is noted before the playback drops the rest, the engine
                # stops the turn at its next sub-batch or token, keeping the
                # question and the reply as far as it was heard, and the next
                # turn's worker waits for this one.
                turn.speaker.cancel()
                turn.interruption.heard_chars = turn.speaker.heard_reply_chars(self.playback.playhead)
                self.engine.cancel()
                self._turn = None
            self.playback.stop()
            if self.state is State.SPEAKING:
                self.events.emit("speak_end", self._now, interrupted=True)
            self._speaking_since = None
        self._wake_sample = self._now
        self._begin_capture(wake_end)
        return True

    def _begin_capture(self, wake_end: int) -> None:
        """Listen for the question, replaying what was heard since the wake phrase
        ended: the detector fires a little after the phrase, and a question said in
        the same breath has begun by then."""
        self._drop_stream()
        self.endpointer.reset()
        self.endpointer.forget_speaker()  # whoever said the wake word
        self._deadline = self._now + int(self.config.endpoint.no_speech_timeout_seconds * MODEL_SAMPLE_RATE)
        self._set_state(State.CAPTURING)
        if self.config.earcons.listening:
            self._earcon_decision_at = wake_end + EARCON_DELAY_MS * MODEL_SAMPLE_RATE // 1000
        for samples, end_sample in list(self._heard):
            if end_sample > wake_end:
                self._listen(samples, end_sample)

    def _decide_earcon(self) -> None:
        """Play the listening earcon once it is clear the user paused after the
        wake word; its sound (and the room's echo of it) is kept out of the
        utterance like the reply's echo."""
        if self._earcon_decision_at is None or self._now < self._earcon_decision_at:
            return
        self._earcon_decision_at = None
        if self.endpointer.voice_heard:
            log.debug("the question follows the wake word at once: no listening earcon")
            return
        tone = self._chime("listening")
        tone_samples = len(tone) * MODEL_SAMPLE_RATE // self.playback.sample_rate
        self._echo_guard_until = self._now + tone_samples + EARCON_ECHO_TAIL_MS * MODEL_SAMPLE_RATE // 1000

    def _listen(self, samples: np.ndarray, end_sample: int) -> None:
        if end_sample <= self._echo_guard_until:
            self._drop_stream()
            self.endpointer.reset()  # what is heard now is our own sound
            return
        was_speech = self.endpointer.in_speech
        event = self.endpointer.push(samples, end_sample)
        if was_speech and self._stream is not None:
            self._stream.append(samples)
            # The end-of-speech silence is the time to catch up and close the turn.
            length_if_ended = self.endpointer.length_if_ended
            if length_if_ended is not None:
                self._stream.pause(length_if_ended)
            elif self.endpointer.in_speech:
                self._stream.resume()
        self._on_endpoint(event)
        if self._stream is not None and self.wait_for_replies:
            self._wait_for_feeding(self._stream)

    def _wait_for_feeding(self, stream: SpeechStream) -> None:
        """File input: let the worker feed what has been heard before reading on;
        while it answers ahead in a pause, the pause lasts its real length."""
        turn = self._turn
        while not stream.taken(0.2):
            if turn is None or turn.done.is_set():
                return
            self._feed_watchdog()
        if stream.ahead:
            time.sleep(self.config.input.frame_ms / 1000)

    def _on_endpoint(self, event: EndpointEvent | None) -> None:
        if isinstance(event, SpeechStarted):
            self.events.emit("speech_start", event.at_sample)
            self._deadline = None
            if self.state is not State.CAPTURING:
                self._set_state(State.CAPTURING)
            if self.config.conversation.stream_audio and not (self._confirmation and self._confirmation.listening):
                self._stream = SpeechStream(self.config.endpoint.max_speech_seconds)
                self._stream.append(self.endpointer.utterance_so_far())
                self._start_turn(self._stream)
        elif isinstance(event, UtteranceDiscarded):
            log.info("ignored %d ms of voice: shorter than endpoint.min_speech_ms", event.voiced_ms)
            self._drop_stream()
            self._deadline = self._now + int(self.config.endpoint.no_speech_timeout_seconds * MODEL_SAMPLE_RATE)
        elif isinstance(event, UtteranceEnded):
            self.events.emit("speech_end", event.speech_end_sample, seconds=round(len(event.samples) / MODEL_SAMPLE_RATE, 3))
            if self._confirmation is not None and self._confirmation.listening:
                self._answer_confirmation(event)
            else:
                self._end_question(event)

    def _drop_stream(self) -> None:
        """The utterance being streamed is not a question (too short, interrupted
        by the wake word, our own sound): its turn rolls back and ends silently."""
        if self._stream is not None:
            self._stream.discard()
            self._stream = None

    # -- turns -----------------------------------------------------------------

    def _end_question(self, utterance: UtteranceEnded) -> None:
        """The question ended: its streamed turn finishes it, or a turn starts now."""
        stream, self._stream = self._stream, None
        turn = self._turn
        if stream is None:
            turn = self._start_turn(Audio(utterance.samples, MODEL_SAMPLE_RATE))
        elif turn is None or turn.stream is not stream or turn.done.is_set():
            log.info("the question's turn already failed: nothing to answer")
            self._finish_turn()
            return
        else:
            stream.end(len(utterance.samples))
        turn.speech_end_sample = utterance.speech_end_sample
        turn.wake_sample = self._wake_sample
        turn.started = time.monotonic()
        self._wake_sample = None
        self._deadline = None
        self._earcon_decision_at = None
        self._set_state(State.THINKING)
        if self.wait_for_replies:
            self._wait_for_turn(turn)
            self._update_turn()

    def _start_turn(self, speech: Audio | SpeechStream, respond: Callable[..., Any] | None = None) -> _Turn:
        """Start the worker for one question, after the previous worker is done
        (the audio loop never waits for it: the new worker does); ``respond``
        replaces the usual turn (a yes/no answer)."""
        conversation = self.config.conversation
        idle_seconds = (self._now - self._last_activity) / MODEL_SAMPLE_RATE
        reset = self._reset_requested.is_set() or bool(self.turns and idle_seconds > conversation.idle_reset_seconds)
        self._reset_requested.clear()
        previous = self._last_started
        turn = _Turn(
            done=threading.Event(),
            wake_sample=self._wake_sample,
            speech_end_sample=self._now,
            started=None,
            speaker=StreamingSpeaker(self.voice, self.playback),
            stream=speech if isinstance(speech, SpeechStream) else None,
        )
        self._turn = turn
        self._last_started = turn
        worker = threading.Thread(
            target=self._run_turn, args=(turn, speech, reset, previous, respond or self._respond), name="turn", daemon=True
        )
        worker.start()
        return turn

    def _wait_for_turn(self, turn: _Turn, limit: float | None = None) -> None:
        """Block the loop until the turn returns (file input, end of input), still
        feeding and honouring the watchdog; ``limit`` seconds at most."""
        deadline = None if limit is None else time.monotonic() + limit
        while not turn.done.wait(0.2):
            self._watch_turn()
            self._feed_watchdog()
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _watch_turn(self) -> None:
        """Cancel a turn that overran ``conversation.turn_timeout_seconds``. If it
        still has not returned ``cancel_grace_seconds`` later, llama.cpp is stuck:
        stop feeding the systemd watchdog so systemd restarts the service, or,
        without a watchdog, end the run with an error."""
        turn = self._turn
        if turn is None or turn.done.is_set() or self._stuck or turn.started is None:
            return
        now = time.monotonic()
        timeout = self.config.conversation.turn_timeout_seconds
        if turn.cancelled_at is None:
            if now - turn.started < timeout:
                return
            log.error("turn still running after %.0f s (conversation.turn_timeout_seconds): cancelled", timeout)
            self.events.emit("turn_timeout", turn.speech_end_sample, seconds=round(now - turn.started, 1))
            turn.cancelled_at = now
            self.engine.cancel()
            turn.speaker.cancel()
            return
        if now - turn.cancelled_at < self.cancel_grace_seconds:
            return
        self._stuck = True
        message = f"a turn did not return {self.cancel_grace_seconds:.0f} s after it was cancelled"
        if self.notifier.watchdog_interval is not None:
            log.critical("%s: no longer feeding the systemd watchdog, so systemd restarts the service", message)
            self.notifier.status(f"stuck: {message}; waiting for the watchdog to restart the service")
            return
        raise TurnStuckError(f"{message}; restart edge-assistant")

    def _run_turn(
        self, turn: _Turn, speech: Audio | SpeechStream, reset_history: bool, previous: _Turn | None,
        respond: Callable[..., Any],
    ) -> None:
        try:
            if previous is not None:
                previous.done.wait()  # one turn at a time on the engine
                # A barge-in after its reply was complete: the history keeps what was heard.
                self.engine.trim_last_reply(previous.interruption)
            if reset_history:
                self.engine.reset_history()
                log.info("conversation history reset")
            result = respond(self.engine, speech, turn.speaker, time.perf_counter(), interruption=turn.interruption)
            if result.stopped_by == "cancelled":
                return
            self.turns += 1
            fields = result.as_dict()
            # User-perceived latency: wake word → end of speech (input time), the
            # silence the endpointer waited for, then the engine's stages.
            timings = {"endpoint_silence": float(self.config.endpoint.end_silence_ms), **fields["timings_ms"]}
            if turn.wake_sample is not None:
                timings["wake_to_speech_end"] = round((turn.speech_end_sample - turn.wake_sample) * 1000 / MODEL_SAMPLE_RATE, 1)
            self.events.emit(
                "turn", turn.speech_end_sample, reply=fields["reply"], tokens=fields["tokens"],
                timings_ms=timings, stopped_by=fields["stopped_by"], tool_calls=fields.get("tool_calls", []),
            )
        except Exception as error:  # one failed turn must not stop the assistant
            log.exception("turn failed")
            self.events.emit("error", turn.speech_end_sample, message=f"{type(error).__name__}: {error}")
            turn.speaker.cancel()
            with contextlib.suppress(Exception):
                turn.speaker.finish()  # its thread ends too, not left waiting for sentences
            self._chime("error")
        finally:
            turn.done.set()

    def _update_turn(self) -> None:
        """Follow the worker and the playback from the audio loop."""
        busy = self.playback.busy
        if self._speaking_since is None and busy and self.state is State.THINKING:
            self._speaking_since = self._now
            self.events.emit("speak_start", self._now)
            self._set_state(State.SPEAKING)
        turn = self._turn
        if turn is None or not turn.done.is_set() or busy:
            return
        self._turn = None
        if turn.started is None:
            return  # it ended (failed, or was dropped) while its question was still being heard
        self._finish_turn()

    def _finish_turn(self) -> None:
        """After a reply (or a question that got none): listen again."""
        if self._speaking_since is not None:
            self.events.emit("speak_end", self._now)
            self._speaking_since = None
            self._chime("done")
        self._last_activity = self._now
        self._echo_guard_until = self._now + self.config.conversation.echo_tail_ms * MODEL_SAMPLE_RATE // 1000
        self.endpointer.reset()
        follow_up = self.config.conversation.follow_up_seconds
        if self._confirmation is not None and not self._confirmation.listening:
            self._announce(self._confirmation.question, rings=False)  # then the answer is listened for
            self._set_state(State.FOLLOW_UP)
        elif follow_up > 0 and self.wake is not None:
            self._deadline = self._now + int(follow_up * MODEL_SAMPLE_RATE)
            self._set_state(State.FOLLOW_UP)
        else:
            self._set_state(State.IDLE)

    # -- timers, alarms and confirmations ---------------------------------------

    def _input_clock(self) -> float:
        """Unix time in the input's own time base (file input)."""
        return self._started_wall + self._now / MODEL_SAMPLE_RATE

    def _set_gain(self, gain: float) -> None:
        self.playback.gain = gain

    def _follow_reminders(self) -> None:
        """From the audio loop, every frame: announce timers and alarms that came
        due, when nothing else is going on (never over a reply or the user), and
        repeat a ringing one until it is stopped or its time is up."""
        if self.tools is None:
            return
        if self._silence.is_set():
            self._silence.clear()
            self._stop_ringing()
        for entry in self.tools.scheduler.due():
            self._announcements.append((self._reminder_text(entry), self.config.tools.alarm_ring_seconds > 0))
        if self._announcer is not None:
            if self.playback.busy or (self._announcer_done is not None and self._announcer_done.is_alive()):
                return
            self._announcer = None
            self._echo_guard_until = self._now + self.config.conversation.echo_tail_ms * MODEL_SAMPLE_RATE // 1000
            if self._ringing is not None:
                self._ringing.next_at = self._now + int(RING_PAUSE_SECONDS * MODEL_SAMPLE_RATE)
            if self._confirmation is not None and not self._confirmation.listening:
                self._confirmation.listening = True
                self.endpointer.reset()
                self._deadline = self._now + int(self.config.tools.confirm_timeout_seconds * MODEL_SAMPLE_RATE)
                self._set_state(State.FOLLOW_UP)
        if self.state not in (State.IDLE, State.FOLLOW_UP) or self.endpointer.in_speech or self._turn is not None:
            return
        if self._announcements:
            text, rings = self._announcements.popleft()
            if rings:
                self._ringing = _Ringing(text, self._now + int(self.config.tools.alarm_ring_seconds * MODEL_SAMPLE_RATE))
            self._announce(text, rings=True)
        elif self._ringing is not None and self._ringing.next_at is not None and self._now >= self._ringing.next_at:
            if self._now >= self._ringing.until:
                log.info("nobody stopped it: the ringing ends after tools.alarm_ring_seconds")
                self._ringing = None
            else:
                self._announce(self._ringing.text, rings=True)

    @staticmethod
    def _reminder_text(entry: Reminder) -> str:
        if entry.kind == "alarm":
            return f"It's {entry.clock_time()}. Your {entry.describe()}."
        return f"Your {entry.describe()} is done."

    def _announce(self, text: str, rings: bool) -> None:
        """Say ``text`` through the normal playback (after the alarm earcon when it
        rings), even while idle; the loop does not listen while it plays."""
        self.events.emit("announce", self._now, text=text)
        if rings:
            self.playback.write(earcon("alarm", self.playback.sample_rate, self.config.earcons.volume), self.playback.sample_rate)
        speaker = StreamingSpeaker(self.voice, self.playback)
        speaker.say(text)
        self._announcer = speaker
        self._announcer_done = threading.Thread(target=speaker.finish, name="announce", daemon=True)
        self._announcer_done.start()
        if self.wait_for_replies:
            self._announcer_done.join()  # file input: the announcement is in the output at once, reproducibly

    def _stop_ringing(self) -> None:
        """"Stop" or the wake word: a ringing timer or alarm goes quiet at once."""
        if self._ringing is not None:
            self.events.emit("ringing_stopped", self._now)
            self._ringing = None
        if self._announcer is not None:
            self._announcer.cancel()
            self.playback.stop()

    def _ask_confirmation(self, tool: Tool, arguments: dict[str, Any]) -> None:
        """The turn worker met a ``confirm`` tool: the call waits (the model's turn
        ends), the assistant asks, and the next utterance, without the wake word,
        is the answer (:meth:`_answer_confirmation`)."""
        described = ", ".join(f"{name} {value}" for name, value in arguments.items())
        question = f"Should I run {tool.name.replace('_', ' ')}{' with ' + described if described else ''}? Say yes or no."
        self._confirmation = _PendingConfirmation(tool, arguments, question)
        return None

    def _answer_confirmation(self, utterance: UtteranceEnded) -> None:
        confirmation, self._confirmation = self._confirmation, None
        assert confirmation is not None
        self._deadline = None
        turn = self._start_turn(Audio(utterance.samples, MODEL_SAMPLE_RATE), partial(self._run_confirmed, confirmation))
        turn.speech_end_sample = utterance.speech_end_sample
        turn.started = time.monotonic()
        self._set_state(State.THINKING)
        if self.wait_for_replies:
            self._wait_for_turn(turn)
            self._update_turn()

    def _run_confirmed(
        self,
        confirmation: _PendingConfirmation,
        engine: Any,
        speech: Audio,
        speaker: StreamingSpeaker,
        started: float,
        interruption: Interruption | None = None,
    ) -> TurnResult:
        """On the turn worker: hear yes or no, then run the tool or not, and say so.
        The decision is rolled back, so a barge-in (``interruption``) has no reply
        in the history to cut."""
        assert self.tools is not None
        yes = hear_yes_or_no(engine, speech.samples)
        self.events.emit("confirmation", self._now, tool=confirmation.tool.name, answer="yes" if yes else "no")
        record = self.tools.toolbox.call(confirmation.tool.name, confirmation.arguments, confirm=lambda *_: yes)
        reply = "Done." if record.ok else "Okay, I won't." if record.status == "declined" else TOOL_APOLOGY
        speaker.say(reply)
        speech_stats = speaker.finish()
        elapsed = (time.perf_counter() - started) * 1000
        return TurnResult(
            reply=reply, audio_seconds=speech.seconds, tokens={}, timings_ms={"turn_total": elapsed},
            stopped_by="confirmation", spoken_seconds=speech_stats.audio_seconds, sentences=[reply], tool_calls=[record],
        )

    # -- helpers ---------------------------------------------------------------

    def _chime(self, kind: str) -> np.ndarray:
        """Queue an earcon if it is switched on; returns what was queued."""
        earcons = self.config.earcons
        if not getattr(earcons, kind):
            return np.zeros(0, dtype=np.float32)
        tone = earcon(kind, self.playback.sample_rate, earcons.volume)
        self.playback.write(tone, self.playback.sample_rate)
        return tone

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            log.debug("state %s -> %s", self.state.value, state.value)
        if state is State.IDLE:
            self.endpointer.forget_speaker()  # a follow-up had to be the last speaker's; now anyone's
        self.state = state
        self.notifier.status(state.value)

    def _feed_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if self._stuck:
            return
        now = time.monotonic()
        if interval is not None and now - self._last_watchdog >= min(interval, 1.0):
            self.notifier.watchdog()
            self._last_watchdog = now

    def _finish(self) -> None:
        """Input ended or stop requested: let the last reply be spoken (files),
        or stop promptly (SIGTERM). Input time runs on while it plays."""
        if not self._stop.is_set() and self.endpointer.in_speech:
            self._on_endpoint(self.endpointer.finish())  # the input ended mid-utterance: that ends it
        self.notifier.stopping()
        turn = self._turn
        if turn is not None:
            self._wait_for_turn(turn, limit=1.5 if self._stop.is_set() else None)
        if not self._stop.is_set():
            step = self.endpointer.frame_samples
            while self.playback.busy or (self._turn is not None and not self._turn.done.is_set()):
                self._now += step
                self.playback.wait(step)
                self._update_turn()
            self._update_turn()


def install_signal_handlers(assistant: Assistant) -> None:
    """SIGTERM/SIGINT stop, SIGUSR1 is push-to-talk, SIGUSR2 resets the conversation."""
    signal.signal(signal.SIGTERM, lambda *_: assistant.stop())
    signal.signal(signal.SIGINT, lambda *_: assistant.stop())
    signal.signal(signal.SIGUSR1, lambda *_: assistant.push_to_talk())
    signal.signal(signal.SIGUSR2, lambda *_: assistant.request_reset())


def wake_model_paths(config: Config) -> list[Path]:
    """``wake.model``: "none", or comma-separated names or paths (manifest.resolve_wake)."""
    from .models.manifest import resolve_wake

    spec = config.wake.model.strip()
    if spec.lower() in ("", "none"):
        return []
    return [resolve_wake(item.strip(), config.models.directory) for item in spec.split(",") if item.strip()]


def serve(
    config: Config,
    model_path: Path,
    mmproj_path: Path,
    voice_path: Path,
    input_file: str | None = None,
    output_file: str | None = None,
    realtime: bool = False,
    events: bool = False,
    echo_gain: float = 0.0,
) -> int:
    """Load everything, run until the input ends or a signal stops it."""
    from .audio.devices import parse_device
    from .audio.files import check_output_path
    from .audio.playback import DevicePlayback, RecordingPlayback
    from .audio.sources import EchoSource, FileSource, MicrophoneSource

    faulthandler.enable()  # a watchdog SIGABRT then logs every thread's stack to the journal
    notifier = Notifier()
    output_path = check_output_path(output_file, "--output-file") if output_file else None
    if echo_gain and output_path is None:
        raise UsageError("--echo-gain needs --output-file (it simulates the speaker that file stands for)")
    wake_paths = wake_model_paths(config)
    frame_ms = config.input.frame_ms
    source: AudioSource = (
        FileSource(input_file, frame_ms, realtime)
        if input_file
        else MicrophoneSource(
            parse_device(config.input.device), frame_ms, on_idle=notifier.watchdog,
            channel=config.input.channel, on_status=notifier.status,
        )
    )
    notifier.status("loading models")
    wake = None
    if wake_paths:
        from .wake.detector import WakeWordDetector

        wake = WakeWordDetector(wake_paths, config.wake.threshold or None, config.wake.refractory_seconds)
    voice = PiperSpeech(voice_path, config.tts.speaker, config.tts.length_scale, config.tts.threads)
    tools = build_tools(config)
    engine = GemmaEngine(model_path, mmproj_path, config.engine, tools=tools.toolbox.declarations())
    recording = RecordingPlayback(voice.sample_rate) if output_path else None
    playback: Playback = recording or DevicePlayback(parse_device(config.tts.output_device), voice.sample_rate)
    if recording is not None:
        source = EchoSource(source, recording, echo_gain)
    assistant = Assistant(
        config, engine, voice, source, playback, wake, EventLog(sys.stdout if events else None), notifier,
        wait_for_replies=bool(input_file) and not realtime, tools=tools,
    )
    install_signal_handlers(assistant)
    log.info("ready: wake %s, models loaded", ", ".join(path.name for path in wake_paths) or "off (voice activity)")
    try:
        assistant.run()
    finally:
        playback.close()
        if not assistant.turn_running:
            engine.close()
        notifier.close()
    if recording is not None and output_path is not None:
        recording.save(output_path)
    if assistant.turn_running:
        # Stopped while the worker is inside a native call that cannot be
        # interrupted (the audio encoder): end now, without the interpreter's
        # clean-up running under it; the kernel frees its memory.
        log.info("exiting with a turn still inside llama.cpp")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0
