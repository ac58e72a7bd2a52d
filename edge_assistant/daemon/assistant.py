"""The always-listening assistant's audio loop and state machine: what happens
to each input frame, in order: wake word → endpointing → state machine.

A finished utterance goes to the turn runner (:mod:`.turn_runner`), which runs
the same :func:`turn.run_turn` as ``--once`` on a worker thread; its reply
streams sentence by sentence into the playback. The loop never blocks on the
model, so the wake word can interrupt a reply (barge-in) and the systemd
watchdog is fed from here. Reminders (:mod:`.reminders`) and the confirmation
dialog (:mod:`.confirmation`) are followed once a frame.

States::

    idle ──wake──▶ capturing ──utterance──▶ thinking ──audio──▶ speaking
      ▲  (wake = "none": speech starts capturing)                  │
      └──────── timeout ◀── follow-up window ◀── reply done ───────┘

While the assistant speaks only the wake word is listened for: without echo
cancellation the microphone hears the reply, and voice activity alone must not
start a turn from it.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from functools import partial
from typing import Any, Callable

import numpy as np

from ..audio.format import MODEL_SAMPLE_RATE, Audio, Frame
from ..audio.playback import Playback
from ..audio.sources import AudioSource
from ..config import Config
from ..earcons import play_earcon
from ..llm.engine import GemmaEngine
from ..llm.tool_loop import ToolUse
from ..systemd import Notifier
from ..tools.setup import ToolSet
from ..tts import PiperSpeech
from ..turn import SpeechStream, run_turn
from ..endpoint import Endpointer, EndpointEvent, SpeechStarted, UtteranceDiscarded, UtteranceEnded
from .confirmation import ConfirmationDialog
from .engine_turns import Room
from .events import EventLog, LoopTiming
from .reminders import Reminders
from .turn_runner import Turn, TurnRunner

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


# After SIGTERM, how long a cancelled turn gets to return before the service
# exits without it: the whole stop stays within systemd's expectations (2 s).
STOP_WAIT_SECONDS = 1.0


class State(enum.Enum):
    IDLE = "idle"
    CAPTURING = "capturing"
    THINKING = "thinking"
    SPEAKING = "speaking"
    FOLLOW_UP = "follow-up"


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
        room: Room | None = None,
    ) -> None:
        """``tools``: offered to the model (``respond`` gets them), and their
        timers and alarms announced from this loop; ``room``: which room this
        loop hears (README "Rooms"; default: the only one)."""
        self.config = config
        self.room = room or Room()
        self.engine = engine
        self.source = source
        self.playback = playback
        self.wake = wake_detector
        self.events = events
        self.notifier = notifier or Notifier({})
        # With file input the model's thinking time is not input time: the stream
        # waits for each reply, which makes runs reproducible.
        self.wait_for_replies = wait_for_replies
        frame_ms = config.input.frame_ms
        self.endpointer = Endpointer(config.endpoint, config.audio.vad_aggressiveness, frame_ms, config.audio.speech_padding_ms)
        self.state = State.IDLE
        self._now = 0  # input time, in samples
        self._deadline: int | None = None  # end of the capture or follow-up window
        self._wake_sample: int | None = None
        self._stream: SpeechStream | None = None  # the utterance being heard and fed to its turn
        self._speaking_since: int | None = None
        self._echo_guard_until = 0
        self._last_activity = 0
        self._heard: deque[tuple[np.ndarray, int]] = deque(maxlen=max(1, WAKE_REPLAY_MS // frame_ms))
        self._earcon_decision_at: int | None = None  # input time at which to decide on the listening earcon
        self._stop_requested = False  # a plain flag: set from a signal handler
        self._push_to_talk = False  # a plain flag: set from a signal handler (SIGUSR1)
        self.loop_timing = LoopTiming()
        self._started_wall = time.time()
        self.confirmation = ConfirmationDialog(
            tools.toolbox if tools else None, events, lambda: self._now, lambda: self.runner.worker_cancelled()
        )
        self.reminders = Reminders(
            config, tools.scheduler if tools else None, voice, playback, events, wait_for_replies,
            lambda entry: self.room.rings_here(entry.room),
        )
        if tools is not None:
            respond = partial(respond, tools=ToolUse(tools.toolbox, self.confirmation.ask))
            tools.hooks.on_stop = self.reminders.silence
            tools.hooks.on_forget = self.request_reset
            tools.volume.apply = self._set_gain
            tools.volume.restore()
            if wait_for_replies:  # file input: timers run in the input's time, so runs are reproducible
                tools.scheduler.clock = self._input_clock
        self.tools = tools
        self.runner = TurnRunner(
            config, engine, voice, playback, events, self.notifier, respond, tools, self.room,
            on_turn_start=partial(_turn_starts_in, tools) if tools is not None else lambda room: None,
        )
        self._tools_checked_at = 0  # input time of the last look at the MCP servers
        self._tool_problems: list[str] = []  # said in STATUS= after the state

    # -- control from signals --------------------------------------------------

    def stop(self) -> None:
        """Stop the run (SIGTERM, SIGINT). Only sets flags: it runs in a signal
        handler, on the audio thread, between any two of its bytecodes; the loop
        silences the speech and cancels the turns at its next frame (a stalled
        microphone read ends within its poll interval)."""
        self._stop_requested = True
        self.source.stop()

    def push_to_talk(self) -> None:
        self._push_to_talk = True

    def request_reset(self) -> None:
        self.runner.request_reset()

    # -- the audio loop --------------------------------------------------------

    def run(self) -> None:
        self._tool_problems = self.tools.problems() if self.tools is not None else []
        self.notifier.ready("; ".join(["listening", *self._tool_problems]))
        self._set_state(State.IDLE)
        self.reminders.queue_missed()
        for frame in self.source.frames():
            self.loop_timing.tick()
            self.runner.feed_watchdog()
            if self._stop_requested:
                break
            self._process(frame)
        timing = self.loop_timing
        log.info("%saudio loop: %d frames, longest gap between two %.0f ms, %d gaps over 100 ms",
                 f"room {self.room.name}: " if self.room.name else "", timing.frames, timing.longest_gap_ms, timing.gaps_over_100_ms)
        self._finish()

    def _process(self, frame: Frame) -> None:
        samples = frame.samples
        self._now = frame.end_sample
        self._heard.append((samples, self._now))
        self._update_turn()
        self.runner.watch()
        self._follow_reminders()
        self._follow_tools()
        wake_end = self._detect_wake(samples)
        if wake_end is not None and self._on_wake(wake_end):
            return
        if self.reminders.playing:
            self.endpointer.reset()  # an announcement is playing: not the user speaking
        elif self.state in (State.CAPTURING, State.FOLLOW_UP) or (self.state is State.IDLE and self.wake is None):
            self._listen(samples, self._now)
            self._decide_earcon()
        elif self.state in (State.THINKING, State.SPEAKING):
            self.endpointer.reset()  # the reply is not the user speaking
        if self._deadline is not None and self._now >= self._deadline and not self.endpointer.in_speech:
            if self.state is State.CAPTURING:
                log.info("no speech after the wake word: back to idle")
            self.confirmation.expire(self._now)
            self._deadline = None
            self._set_state(State.IDLE)

    def _detect_wake(self, samples: np.ndarray) -> int | None:
        """Where the wake phrase ended (input time), if one was heard in this frame."""
        if self._push_to_talk:
            self._push_to_talk = False
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
        self.reminders.stop_ringing(self._now)
        if self.state in (State.THINKING, State.SPEAKING):
            if not self.config.conversation.barge_in:
                return True
            self.events.emit("barge_in", self._now, state=self.state.value)
            self.runner.interrupt()
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
        tone = play_earcon("listening", self.playback, self.config.earcons)
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
            self.runner.wait_for_feeding(self._stream)

    def _on_endpoint(self, event: EndpointEvent | None) -> None:
        if isinstance(event, SpeechStarted):
            self.events.emit("speech_start", event.at_sample)
            self._deadline = None
            if self.state is not State.CAPTURING:
                self._set_state(State.CAPTURING)
            if self.config.conversation.stream_audio and not self.confirmation.listening:
                self._stream = SpeechStream(self.config.endpoint.max_speech_seconds)
                self._stream.append(self.endpointer.utterance_so_far())
                self._start_turn(self._stream)
        elif isinstance(event, UtteranceDiscarded):
            log.info("ignored %d ms of voice: shorter than endpoint.min_speech_ms", event.voiced_ms)
            self._drop_stream()
            self._deadline = self._now + int(self.config.endpoint.no_speech_timeout_seconds * MODEL_SAMPLE_RATE)
        elif isinstance(event, UtteranceEnded):
            self.events.emit("speech_end", event.speech_end_sample, seconds=round(len(event.samples) / MODEL_SAMPLE_RATE, 3))
            if self.confirmation.listening:
                turn = self._start_turn(Audio(event.samples, MODEL_SAMPLE_RATE), self.confirmation.answer())
                self._think(turn, event)
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
        turn = self.runner.current
        if stream is None:
            turn = self._start_turn(Audio(utterance.samples, MODEL_SAMPLE_RATE))
        elif turn is None or turn.stream is not stream or turn.done.is_set():
            log.info("the question's turn already failed: nothing to answer")
            self._finish_turn()
            return
        else:
            stream.end(len(utterance.samples))
        turn.wake_sample = self._wake_sample
        self._wake_sample = None
        self._earcon_decision_at = None
        self._think(turn, utterance)

    def _start_turn(self, speech: Audio | SpeechStream, respond: Callable[..., Any] | None = None) -> Turn:
        idle_seconds = (self._now - self._last_activity) / MODEL_SAMPLE_RATE
        return self.runner.start(speech, self._wake_sample, self._now, idle_seconds, respond)

    def _think(self, turn: Turn, utterance: UtteranceEnded) -> None:
        """The utterance is over: its turn is timed from here, and the loop waits
        for the reply (file input) or goes on listening for the wake word."""
        turn.speech_end_sample = utterance.speech_end_sample
        turn.started = time.monotonic()
        self._deadline = None
        self._set_state(State.THINKING)
        if self.runner.waits_for_another_room(turn):  # heard, and answered after the other room's
            self.events.emit("waiting", self._now)
            play_earcon("listening", self.playback, self.config.earcons)
        if self.wait_for_replies:
            self.runner.wait(turn)
            self._update_turn()

    def _update_turn(self) -> None:
        """Follow the worker and the playback from the audio loop."""
        busy = self.playback.busy
        if self._speaking_since is None and busy and self.state is State.THINKING:
            self._speaking_since = self._now
            self.events.emit("speak_start", self._now)
            self._set_state(State.SPEAKING)
        turn = self.runner.current
        if turn is None or not turn.done.is_set() or busy:
            return
        self.runner.current = None
        if turn.started is None:
            return  # it ended (failed, or was dropped) while its question was still being heard
        self._finish_turn()

    def _finish_turn(self) -> None:
        """After a reply (or a question that got none): listen again."""
        if self._speaking_since is not None:
            self.events.emit("speak_end", self._now)
            self._speaking_since = None
            play_earcon("done", self.playback, self.config.earcons)
        self._last_activity = self._now
        self._echo_guard_until = self._now + self.config.conversation.echo_tail_ms * MODEL_SAMPLE_RATE // 1000
        self.endpointer.reset()
        follow_up = self.config.conversation.follow_up_seconds
        question = self.confirmation.question
        if question is not None:
            self.reminders.announce(question, rings=False, now=self._now)  # then the answer is listened for
            self._set_state(State.FOLLOW_UP)
        elif follow_up > 0 and self.wake is not None:
            self._deadline = self._now + int(follow_up * MODEL_SAMPLE_RATE)
            self._set_state(State.FOLLOW_UP)
        else:
            self._set_state(State.IDLE)

    # -- reminders and confirmations -------------------------------------------

    def _follow_reminders(self) -> None:
        """Announce timers and alarms that came due when nothing else is going on;
        once a confirmation's question has been said, listen for the answer."""
        if self.reminders.follow(self._now):  # an announcement ended
            self._echo_guard_until = self._now + self.config.conversation.echo_tail_ms * MODEL_SAMPLE_RATE // 1000
            if self.confirmation.question is not None:
                self.confirmation.listen()
                self.endpointer.reset()
                self._deadline = self._now + int(self.config.tools.confirm_timeout_seconds * MODEL_SAMPLE_RATE)
                self._set_state(State.FOLLOW_UP)
        if self.state in (State.IDLE, State.FOLLOW_UP) and not self.endpointer.in_speech and self.runner.current is None:
            self.reminders.announce_next(self._now)

    def _follow_tools(self) -> None:
        """Once a second: STATUS= names the MCP servers whose tools do not work
        now, and a server that came up while the assistant is idle has its tools
        declared (the engine evaluates the new system prompt between turns)."""
        if self.tools is None or self._now - self._tools_checked_at < MODEL_SAMPLE_RATE:
            return
        self._tools_checked_at = self._now
        problems = self.tools.problems()
        if problems != self._tool_problems:
            self._tool_problems = problems
            self.notifier.status(self._status_text())
        last = self.runner.last_started
        if (self.tools.outdated and self.state is State.IDLE and self.runner.current is None and not self.endpointer.in_speech
                and self.confirmation.question is None and not self.confirmation.listening
                and (last is None or last.done.is_set())):
            self.runner.declare_new_tools()

    def _input_clock(self) -> float:
        """Unix time in the input's own time base (file input)."""
        return self._started_wall + self._now / MODEL_SAMPLE_RATE

    def _set_gain(self, gain: float) -> None:
        self.playback.gain = gain

    # -- helpers ---------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            log.debug("state %s -> %s", self.state.value, state.value)
        if state is State.IDLE:
            self.endpointer.forget_speaker()  # a follow-up had to be the last speaker's; now anyone's
        self.state = state
        self.notifier.status(self._status_text())

    def _status_text(self) -> str:
        return "; ".join([self.state.value, *self._tool_problems])

    def _finish(self) -> None:
        """Input ended or stop requested: let the last reply be spoken (files),
        or stop promptly (SIGTERM): speech silenced at once, every turn
        cancelled, and a worker given a second to return (one inside the audio
        encoder cannot be interrupted: the service then exits without it).
        Input time runs on while it plays."""
        stopping = self._stop_requested
        if stopping:
            self.runner.cancel_all()  # speakers first: nothing more reaches the playback
            self.reminders.stop_ringing(self._now)
            self.playback.stop()
            self._drop_stream()
        elif self.endpointer.in_speech:
            self._on_endpoint(self.endpointer.finish())  # the input ended mid-utterance: that ends it
        self.notifier.stopping()
        turn = self.runner.last_started if stopping else self.runner.current
        if turn is not None:
            self.runner.wait(turn, limit=STOP_WAIT_SECONDS if stopping else None)
        if not stopping:
            step = self.endpointer.frame_samples
            while self.playback.busy or (self.runner.current is not None and not self.runner.current.done.is_set()):
                self._now += step
                self.playback.wait(step)
                self._update_turn()
            self._update_turn()


def _turn_starts_in(tools: ToolSet, room: Room) -> None:
    """On the engine's thread, as a turn starts: its tools act in its room."""
    tools.hooks.room, tools.hooks.area = room.name, room.area
