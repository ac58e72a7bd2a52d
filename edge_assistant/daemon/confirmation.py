"""The spoken confirmation: a ``confirm`` tool's call waits while the assistant
asks, and the next utterance, heard as yes or no, runs it or not."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from ..audio.format import Audio
from ..llm.audio_turn import Interruption
from ..llm.tool_loop import hear_yes_or_no
from ..phrases import say
from ..tools import Tool, Toolbox
from ..tts import StreamingSpeaker
from ..turn import TurnResult
from .events import EventLog


@dataclass
class _PendingConfirmation:
    """A ``confirm`` tool the model called: run once the user says yes."""

    tool: Tool
    arguments: dict[str, Any]
    question: str
    withdrawn: threading.Event | None = None  # the asking turn's cancel: once set, the question is not asked
    listening: bool = False  # the question has been said: the next utterance answers it

    @property
    def stale(self) -> bool:
        return not self.listening and self.withdrawn is not None and self.withdrawn.is_set()


class ConfirmationDialog:
    """One confirmation at a time: :meth:`ask` (from the turn worker), the
    :attr:`question` said once the reply is done, :meth:`listen` once it was,
    then :meth:`answer` (the turn that hears it) or :meth:`expire`."""

    def __init__(
        self, toolbox: Toolbox | None, events: EventLog, clock: Callable[[], int],
        asking_turn_cancelled: Callable[[], threading.Event | None] = lambda: None,
    ) -> None:
        """``clock``: the audio loop's input time, for the events;
        ``asking_turn_cancelled``: on a turn worker, that turn's cancel (a
        question from a turn interrupted before or after it asked is never said)."""
        self.toolbox = toolbox
        self.events = events
        self._clock = clock
        self._asking_turn_cancelled = asking_turn_cancelled
        self._pending: _PendingConfirmation | None = None

    @property
    def question(self) -> str | None:
        """The question still to be asked, if any."""
        pending = self._pending  # one read: the turn worker may replace it
        return pending.question if pending is not None and not pending.listening and not pending.stale else None

    @property
    def listening(self) -> bool:
        """The question has been said: the next utterance, without the wake word, answers it."""
        return self._pending is not None and self._pending.listening

    def ask(self, tool: Tool, arguments: dict[str, Any]) -> None:
        """The turn worker met a ``confirm`` tool: the call waits (the model's turn
        ends), the assistant asks, and the next utterance, without the wake word,
        is the answer (:meth:`answer`)."""
        described = ", ".join(f"{name} {value}" for name, value in arguments.items())
        name = tool.name.replace("_", " ")
        question = say("confirm_question_with", tool=name, arguments=described) if described else say("confirm_question", tool=name)
        withdrawn = self._asking_turn_cancelled()
        if withdrawn is not None and withdrawn.is_set():
            return None  # the turn was interrupted: nobody waits for this question
        self._pending = _PendingConfirmation(tool, arguments, question, withdrawn)
        return None

    def listen(self) -> None:
        """The question has been said."""
        assert self._pending is not None
        self._pending.listening = True

    def expire(self, now: int) -> None:
        """The listening window closed with no answer: the call is not run."""
        if self._pending is not None and self._pending.listening:
            self.events.emit("confirmation", now, tool=self._pending.tool.name, answer="no answer")
            self._pending = None

    def answer(self) -> Callable[..., TurnResult]:
        """The turn that hears the answer, in place of the usual one."""
        confirmation, self._pending = self._pending, None
        assert confirmation is not None
        return partial(self._run_confirmed, confirmation)

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
        assert self.toolbox is not None
        yes = hear_yes_or_no(engine, speech.samples, interruption)
        self.events.emit("confirmation", self._clock(), tool=confirmation.tool.name, answer="yes" if yes else "no")
        record = self.toolbox.call(confirmation.tool.name, confirmation.arguments, confirm=lambda *_: yes)
        reply = say("done") if record.ok else say("declined") if record.status == "declined" else say("apology")
        speaker.say(reply)
        speech_stats = speaker.finish()
        elapsed = (time.perf_counter() - started) * 1000
        return TurnResult(
            reply=reply, audio_seconds=speech.seconds, tokens={}, timings_ms={"turn_total": elapsed},
            stopped_by="confirmation", spoken_seconds=speech_stats.audio_seconds, sentences=[reply], tool_calls=[record],
        )
