"""The turn runner: each question answered on a worker thread, one at a time on
the engine, with a watchdog for a turn that overruns or never returns."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..audio.format import MODEL_SAMPLE_RATE, Audio
from ..audio.playback import Playback
from ..config import Config
from ..earcons import play_earcon
from ..errors import TurnStuckError
from ..llm.audio_turn import Interruption, TurnCancelled
from ..llm.engine import GemmaEngine
from ..systemd import Notifier
from ..tools.setup import ToolSet
from ..tts import PiperSpeech, StreamingSpeaker
from ..turn import SpeechStream
from .engine_turns import Room
from .events import EventLog

log = logging.getLogger(__name__)


@dataclass
class Turn:
    """The turn the worker is running, as the audio loop sees it."""

    done: threading.Event
    wake_sample: int | None
    speech_end_sample: int  # input time; for a stream, known when the speech ends
    started: float | None  # time.monotonic() when the speech ended: turns are timed in wall time from there
    speaker: StreamingSpeaker
    stream: SpeechStream | None = None  # the question, while it is still spoken
    cancelled_at: float | None = None  # time.monotonic() of a timeout's cancel
    interruption: Interruption = field(default_factory=Interruption)  # its own cancel; a barge-in: what of the reply was heard

    def cancel(self) -> None:
        """Stop this turn (and nothing else): the engine's abort callback reads its
        cancel while it is open, and a worker still waiting never opens it."""
        self.interruption.cancel()
        self.speaker.cancel()


class TurnRunner:
    """Starts a worker per question (the audio loop never waits for one: the next
    worker does), follows the one the loop listens to (:attr:`current`), and
    feeds the systemd watchdog for the loop unless a turn got stuck."""

    def __init__(
        self, config: Config, engine: GemmaEngine, voice: PiperSpeech, playback: Playback, events: EventLog,
        notifier: Notifier, respond: Callable[..., Any], tools: ToolSet | None = None, room: Room | None = None,
        on_turn_start: Callable[[Room], None] = lambda room: None,
    ) -> None:
        """``room``: whose conversation the turns go to, and the queue its turns
        share the engine through with other rooms' (default: the only room);
        ``on_turn_start``: told on the engine's thread as each turn starts
        there (the tools learn the room)."""
        self.config = config
        self.room = room or Room()
        self.on_turn_start = on_turn_start
        self.engine = engine
        self.voice = voice
        self.playback = playback
        self.events = events
        self.notifier = notifier
        self.respond = respond  # the usual turn: turn.run_turn, with the tools
        self.tools = tools  # MCP servers that come up late have their tools declared between turns
        self.current: Turn | None = None  # the turn the loop follows
        self._last_started: Turn | None = None  # the last turn handed to a worker: the next one waits for it
        self._stuck = False  # a cancelled turn never returned: the watchdog is no longer fed
        self._reset_requested = False  # a plain flag: set from a signal handler (SIGUSR2) or a tool
        self._last_watchdog = 0.0
        self._worker = threading.local()  # on a turn worker: .turn, its Turn
        self.cancel_grace_seconds = 60.0  # a cancelled turn returns at its next token; far longer means stuck
        self.turns = 0

    @property
    def last_started(self) -> Turn | None:
        """The last turn handed to a worker (the one the engine finishes last)."""
        return self._last_started

    @property
    def running(self) -> bool:
        """A worker is still inside the engine: it must not be freed under it."""
        return self._last_started is not None and not self._last_started.done.is_set()

    def request_reset(self) -> None:
        """The next turn starts with the conversation forgotten."""
        self._reset_requested = True

    def start(
        self, speech: Audio | SpeechStream, wake_sample: int | None, now: int, idle_seconds: float,
        respond: Callable[..., Any] | None = None,
    ) -> Turn:
        """Start the worker for one question, after the previous worker is done
        (the audio loop never waits for it: the new worker does); ``respond``
        replaces the usual turn (a yes/no answer)."""
        conversation = self.config.conversation
        reset = self._reset_requested or bool(self.turns and idle_seconds > conversation.idle_reset_seconds)
        self._reset_requested = False
        previous = self._last_started
        turn = Turn(
            done=threading.Event(),
            wake_sample=wake_sample,
            speech_end_sample=now,
            started=None,
            speaker=StreamingSpeaker(self.voice, self.playback),
            stream=speech if isinstance(speech, SpeechStream) else None,
        )
        if turn.stream is not None:
            turn.stream.when_discarded(turn.interruption.cancel)  # a step in flight stops too
        self.current = turn
        self._last_started = turn
        worker = threading.Thread(
            target=self._run, args=(turn, speech, reset, previous, respond or self.respond), name="turn", daemon=True
        )
        worker.start()
        return turn

    def declare_new_tools(self) -> None:
        """From the audio loop, while idle: an MCP server came up, so its tools are
        declared now rather than when the next question is already waiting. The
        job runs on a worker after the last turn, as a turn would; the next turn
        waits for it."""
        previous = self._last_started
        job = Turn(done=threading.Event(), wake_sample=None, speech_end_sample=0, started=None,
                   speaker=StreamingSpeaker(self.voice, self.playback))
        self._last_started = job
        threading.Thread(target=self._declare_job, args=(job, previous), name="tools", daemon=True).start()

    def _declare_job(self, job: Turn, previous: Turn | None) -> None:
        engine_turns = self.room.engine_turns
        holds_engine = False
        try:
            if previous is not None:
                previous.done.wait()
            holds_engine = engine_turns.acquire(job)  # no other room's turn is open meanwhile
            if holds_engine:  # else cancelled while it waited (shutting down)
                self._declare_tools()
        finally:
            if holds_engine:
                engine_turns.release(job)
            job.speaker.finish()
            job.done.set()

    def _declare_tools(self) -> bool:
        """On the engine's thread, between turns: if an MCP server came up (or
        changed its tools) since they were declared, the system prompt is built
        again with them, and the conversation starts afresh (its KV follows the
        prompt's). True if it was."""
        tools = self.tools
        if tools is None or not tools.outdated:
            return False
        declared = list(tools.toolbox.tools)
        if not tools.refresh():
            return False
        started = time.perf_counter()
        try:
            self.engine.declare_tools(tools.toolbox.declarations())
        except Exception:  # the engine is back on the tools declared before
            tools.declare_later(declared)
            log.exception("declaring the new tools failed: the conversation starts afresh with the tools before; "
                          "the next turn tries again")
            return True
        log.info("tools declared now: %s; system prompt of %d tokens %s in %.0f ms, the conversation starts afresh",
                 ", ".join(tool.name for tool in tools.toolbox.tools), self.engine.system_prompt_tokens,
                 "restored" if self.engine.system_prompt_restored else "evaluated", (time.perf_counter() - started) * 1000)
        return True

    def interrupt(self) -> None:
        """A barge-in. Never waits: the silenced speaker queues nothing more, what
        it played is noted before the playback drops the rest, the engine stops
        the turn at its next sub-batch or token, keeping the question and the
        reply as far as it was heard, and the next turn's worker waits for this one."""
        turn = self.current
        if turn is not None:
            turn.speaker.cancel()
            turn.interruption.heard_chars = turn.speaker.heard_reply_chars(self.playback.playhead)
            turn.interruption.cancel()  # this turn's, not whichever the engine has open
            self.current = None

    def cancel_all(self) -> None:
        """Shutdown: every turn still running stops, and nothing more is spoken."""
        for turn in (self.current, self._last_started):
            if turn is not None:
                turn.cancel()

    def waits_for_another_room(self, turn: Turn) -> bool:
        """Another room's turn has the engine (or goes first): ``turn`` waits for it."""
        return self.room.engine_turns.busy_for(turn)

    @property
    def stuck(self) -> bool:
        return self._stuck

    def worker_cancelled(self) -> threading.Event | None:
        """On a turn worker: that turn's cancel (None on any other thread)."""
        turn = getattr(self._worker, "turn", None)
        return turn.interruption.cancelled if turn is not None else None

    def wait(self, turn: Turn, limit: float | None = None) -> None:
        """Block the loop until the turn returns (file input, end of input), still
        feeding and honouring the watchdog; ``limit`` seconds at most."""
        deadline = None if limit is None else time.monotonic() + limit
        while not turn.done.wait(0.2):
            self.watch()
            self.feed_watchdog()
            if deadline is not None and time.monotonic() >= deadline:
                return

    def wait_for_feeding(self, stream: SpeechStream) -> None:
        """File input: let the worker feed what has been heard before reading on;
        while it answers ahead in a pause, the pause lasts its real length."""
        turn = self.current
        while not stream.taken(0.2):
            if turn is None or turn.done.is_set():
                return
            self.feed_watchdog()
        if stream.ahead:
            time.sleep(self.config.input.frame_ms / 1000)

    def feed_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if self._stuck:
            return
        now = time.monotonic()
        if interval is not None and now - self._last_watchdog >= min(interval, 1.0):
            self.notifier.watchdog()
            self._last_watchdog = now

    def watch(self) -> None:
        """Cancel a turn that overran ``conversation.turn_timeout_seconds``. If it
        still has not returned ``cancel_grace_seconds`` later, llama.cpp is stuck:
        stop feeding the systemd watchdog so systemd restarts the service, or,
        without a watchdog, end the run with an error."""
        turn = self.current
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
            turn.cancel()
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

    def _run(
        self, turn: Turn, speech: Audio | SpeechStream, reset_history: bool, previous: Turn | None,
        respond: Callable[..., Any],
    ) -> None:
        self._worker.turn = turn
        engine_turns = self.room.engine_turns
        holds_engine = False
        try:
            if previous is not None:
                previous.done.wait()  # this room's turns one at a time
            holds_engine = engine_turns.acquire(turn)  # and every room's one at a time on the engine
            if not holds_engine:
                return  # cancelled while it waited: never opened
            self.engine.use_conversation(self.room.conversation)
            self.on_turn_start(self.room)
            # Not under a yes/no answer: the call it confirms is in the history.
            if respond is self.respond and self._declare_tools():
                reset_history = False  # the new system prompt has no history after it
            elif previous is not None:
                # A barge-in after its reply was complete: the history keeps what was heard.
                self.engine.trim_last_reply(previous.interruption)
            if reset_history:
                self.engine.reset_history()
                log.info("conversation history reset")
            if turn.interruption.cancelled.is_set():
                return  # cancelled while it waited: never opened
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
                "turn", turn.speech_end_sample, reply=fields["reply"], audio_seconds=fields["audio_seconds"],
                audio_steps=fields["audio_steps"], tokens=fields["tokens"],
                timings_ms=timings, stopped_by=fields["stopped_by"], tool_calls=fields.get("tool_calls", []),
            )
        except TurnCancelled:  # from anywhere in the turn (a confirmation's yes or no, opening it): a cancel
            log.debug("turn cancelled")
        except Exception as error:  # one failed turn must not stop the assistant
            log.exception("turn failed")
            self.events.emit("error", turn.speech_end_sample, message=f"{type(error).__name__}: {error}")
            turn.speaker.cancel()
            with contextlib.suppress(Exception):
                turn.speaker.finish()  # its thread ends too, not left waiting for sentences
            play_earcon("error", self.playback, self.config.earcons)
        finally:
            if holds_engine:
                engine_turns.release(turn)
            turn.done.set()
