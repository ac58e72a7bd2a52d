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
