"""Rooms sharing one engine (README "Rooms"): each room's turns run on the one
engine, one at a time, in the order their questions ended, each in its room's
own conversation (a llama.cpp sequence)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .turn_runner import Turn

POLL_SECONDS = 0.05  # how often a waiting worker looks at its cancel and at the speech ends


class EngineTurns:
    """Who runs on the engine next. A turn whose question has ended goes before
    one still being spoken, and among ended ones the earliest end goes first; a
    question still being spoken (streamed) may take an idle engine. Only turn
    workers wait here, never an audio loop."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._holder: Turn | None = None
        self._waiting: list[Turn] = []

    def acquire(self, turn: Turn) -> bool:
        """Wait for ``turn``'s place on the engine; False if it was cancelled while waiting."""
        with self._changed:
            self._waiting.append(turn)
            try:
                while self._holder is not None or self._next() is not turn:
                    if turn.interruption.cancelled.is_set():
                        return False
                    self._changed.wait(POLL_SECONDS)  # a question ending elsewhere changes the order
                self._holder = turn
                return True
            finally:
                self._waiting.remove(turn)
                self._changed.notify_all()

    def release(self, turn: Turn) -> None:
        with self._changed:
            if self._holder is turn:
                self._holder = None
            self._changed.notify_all()

    def busy_for(self, turn: Turn) -> bool:
        """Another room's turn has the engine, or will have it first: ``turn`` waits."""
        with self._changed:
            return (self._holder is not None and self._holder is not turn) or (
                turn in self._waiting and self._next() is not turn
            )

    def _next(self) -> Turn | None:
        ended = [waiting for waiting in self._waiting if waiting.started is not None]
        if ended:
            return min(ended, key=lambda waiting: waiting.started)
        return self._waiting[0] if self._waiting else None


@dataclass(frozen=True)
class Room:
    """Where turns are heard and answered: its name (logs, STATUS=, where timers
    ring), its conversation on the engine, its Home Assistant area, and the
    queue it shares the engine through with the other rooms."""

    name: str = ""
    conversation: int = 0
    area: str = ""
    engine_turns: EngineTurns = field(default_factory=EngineTurns)
    others: frozenset[str] = frozenset()  # the other rooms' names
    catch_all: bool = True  # timers set in no room still known ring here (one room does this)

    def rings_here(self, set_in: str) -> bool:
        """A timer set in room ``set_in`` rings here."""
        return set_in == self.name or (self.catch_all and set_in not in self.others)
