"""One progress display for the long jobs: model downloads and wake word training.

On a terminal it is a tqdm bar redrawn in place. In a log or a pipe (journald, the
provisioning scripts' output) redrawing would leave carriage returns behind, so a
line is written when the job starts and at every tenth instead.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm


def count(value: float) -> str:
    """Work units as a whole number (the default amount)."""
    return f"{value:,.0f}"


class _Bar(tqdm):
    """tqdm with the amounts written by the job's own formatter (MB, seconds...)."""

    def __init__(self, amount: Callable[[float], str], **options: Any) -> None:
        self.amount = amount
        self.started_at = time.monotonic()
        self.first = options.get("initial", 0)
        super().__init__(**options)

    @property
    def format_dict(self) -> dict[str, Any]:
        fields = super().format_dict
        elapsed = max(time.monotonic() - self.started_at, 1e-6)
        fields.update(
            done=self.amount(fields["n"]),
            whole=self.amount(fields["total"]),
            speed=self.amount((fields["n"] - self.first) / elapsed),
        )
        return fields


class Progress:
    """How far ``label``'s job of ``total`` units has come, from ``done``.

    ``amount`` writes a number of units (``"1.2 MB"``); ``headline`` is the
    log's first line. :meth:`advance` may be called from worker threads.
    """

    BAR = "{desc} [{bar:30}] {percentage:3.0f}% {done} of {whole} {speed}/s"
    REDRAW_SECONDS = 0.2

    def __init__(
        self,
        label: str,
        total: float,
        done: float = 0,
        headline: str = "started",
        amount: Callable[[float], str] = count,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = done
        self.amount = amount
        self.enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()
        self._next_tenth = int(done * 10 // self.total) + 1
        self._bar: _Bar | None = None
        if not enabled:
            return
        if self._stream.isatty():
            self._bar = _Bar(
                amount, total=self.total, initial=done, desc=label, file=self._stream, bar_format=self.BAR,
                ascii="-#", mininterval=self.REDRAW_SECONDS, leave=True, dynamic_ncols=False,
            )
        else:
            self._line(headline)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def advance(self, units: float = 1) -> None:
        with self._lock:
            self.update(min(self.total, self.done + units))

    def update(self, done: float) -> None:
        """The job has now done ``done`` units in all."""
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
        elif self.enabled:
            tenth = int(done * 10 // self.total)
            if tenth >= self._next_tenth:
                self._next_tenth = tenth + 1
                self._line(f"{tenth * 10}% ({self.amount(done)} of {self.amount(self.total)})")
        self.done = done

    def close(self) -> None:
        """End the bar's line (the bar stays, showing where the job stopped)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, text: str) -> None:
        self._stream.write(f"{self.label}: {text}\n")
        self._stream.flush()
