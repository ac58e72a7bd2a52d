"""What the daemon reports: one JSON event per line in the input's time base,
and how steadily its audio loop ran."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from ..audio.format import MODEL_SAMPLE_RATE

log = logging.getLogger(__name__)


_WRITING = threading.Lock()  # rooms' logs share the stream: one line at a time


class EventLog:
    """One JSON object per line for each event, stamped in the input's time base
    (seconds since the stream began), plus a log line for journald. With rooms
    each room has its own log on the same stream, its events tagged ``room``."""

    def __init__(self, stream: TextIO | None, room: str = "") -> None:
        self.stream = stream
        self.room = room

    def for_room(self, room: str) -> EventLog:
        return EventLog(self.stream, room)

    def emit(self, kind: str, at_sample: int, **fields: Any) -> None:
        record = {"event": kind, "t": round(at_sample / MODEL_SAMPLE_RATE, 3), **({"room": self.room} if self.room else {}), **fields}
        log.info("%s%s %s", f"[{self.room}] " if self.room else "", kind, json.dumps(fields, ensure_ascii=False) if fields else "")
        if self.stream is not None:
            with _WRITING:
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
