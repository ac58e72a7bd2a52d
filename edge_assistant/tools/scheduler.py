"""Timers and alarms that outlive the turn that set them, and a restart.

The tools add and cancel entries from the turn worker; the daemon's audio loop
asks :meth:`Scheduler.due` every frame (a lock and a comparison) and announces
what fired, so nothing waits on the engine. The file is written by one writer
thread, never under the lock: the audio loop never touches the disk or waits
for it (an SD card's fsync can take hundreds of ms). Entries are kept in
``timers.json`` in the state directory. One that came due while the assistant
was not running is announced once after the start as missed, with the time it
was due, instead of being dropped silently or rung late as if it were now.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .state import read_json, write_json_atomic

log = logging.getLogger(__name__)

STATE_FILE = "timers.json"
# An entry due at most this long before the start still rings normally (a quick
# restart); older ones are announced as missed.
LATE_GRACE_SECONDS = 60.0
MAX_ENTRIES = 50


@dataclass(frozen=True)
class Reminder:
    """A timer (``kind`` "timer", ``seconds`` its duration) or an alarm ("alarm");
    ``due`` is Unix time; ``room``: where it was set and rings ("" before rooms)."""

    id: int
    kind: str
    label: str
    due: float
    seconds: int = 0
    room: str = ""

    def describe(self) -> str:
        if self.kind == "alarm":
            return f"{self.label} alarm" if self.label else "alarm"
        return f"{self.label} timer" if self.label else "timer"

    def clock_time(self) -> str:
        return dt.datetime.fromtimestamp(self.due).strftime("%H:%M")


class SchedulerFull(Exception):
    pass


class Scheduler:
    """The pending timers and alarms, persisted. ``clock`` gives Unix time: the
    daemon on a file passes the input's own time so runs are reproducible."""

    def __init__(
        self, state_dir: Path, clock: Callable[[], float] = time.time, room: Callable[[], str] = lambda: "",
    ) -> None:
        """``room``: the room of the turn setting an entry (where it will ring)."""
        self.path = state_dir / STATE_FILE
        self.clock = clock
        self.room = room
        self._lock = threading.Lock()  # the entries; never held across a disk write
        self._saves = threading.Condition()  # the writer's: versions asked for and written
        self._asked = self._written = 0
        # Started now, not at the first timer: the daemon's thread count stays constant.
        self._writer = threading.Thread(target=self._write_loop, name="timers-writer", daemon=True)
        self._entries: list[Reminder] = []
        self.missed: list[Reminder] = []  # due while the assistant was not running
        self._load()
        self._ids = itertools.count(max((entry.id for entry in self._entries + self.missed), default=0) + 1)
        self._writer.start()

    def _load(self) -> None:
        data = read_json(self.path) or {}
        now = self.clock()
        for item in data.get("entries", []) if isinstance(data, dict) else []:
            try:
                entry = Reminder(
                    int(item["id"]), str(item["kind"]), str(item["label"]), float(item["due"]), int(item.get("seconds", 0)),
                    str(item.get("room", "")),
                )
            except (KeyError, TypeError, ValueError):
                log.warning("%s: skipped an unreadable entry %r", self.path, item)
                continue
            (self.missed if entry.due < now - LATE_GRACE_SECONDS else self._entries).append(entry)
        if self.missed:
            log.info("%d timers or alarms came due while the assistant was not running", len(self.missed))
            self._write()

    def _save(self) -> int:
        """Ask the writer thread to persist the entries as they are now (or
        later); returns the version to :meth:`flush` for. Never waits."""
        with self._saves:
            self._asked += 1
            self._saves.notify_all()
            return self._asked

    def flush(self, version: int | None = None, timeout: float | None = None) -> bool:
        """Wait until ``version`` (default: every change so far) is on disk."""
        with self._saves:
            target = self._asked if version is None else version
            return self._saves.wait_for(lambda: self._written >= target, timeout)

    def _write_loop(self) -> None:
        while True:
            with self._saves:
                self._saves.wait_for(lambda: self._asked > self._written)
                version = self._asked
            self._write()
            with self._saves:
                self._written = version
                self._saves.notify_all()

    def _write(self) -> None:
        """Persist a snapshot, outside the lock; a failed write (a full disk) is
        logged, and the timers still ring while the assistant runs."""
        with self._lock:
            data = {"entries": [asdict(entry) for entry in self._entries]}
        try:
            write_json_atomic(self.path, data)
        except OSError as error:
            log.error("cannot save timers to %s: %s; they are kept until the assistant stops", self.path, error)

    def add(self, kind: str, label: str, due: float, seconds: int = 0) -> Reminder:
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                raise SchedulerFull(f"there are already {MAX_ENTRIES} timers and alarms")
            entry = Reminder(next(self._ids), kind, label, due, seconds, self.room())
            self._entries.append(entry)
        self.flush(self._save())  # the turn worker: the tool answers once it is on disk
        log.info("%s set for %s", entry.describe(), dt.datetime.fromtimestamp(due).isoformat(timespec="seconds"))
        return entry

    def pending(self) -> list[Reminder]:
        with self._lock:
            return sorted(self._entries, key=lambda entry: entry.due)

    def cancel(self, entries: list[Reminder]) -> None:
        with self._lock:
            ids = {entry.id for entry in entries}
            self._entries = [entry for entry in self._entries if entry.id not in ids]
        self.flush(self._save())

    def due(self, rings_here: Callable[[Reminder], bool] = lambda entry: True) -> list[Reminder]:
        """Entries whose time has come (of those ``rings_here``: one room's),
        removed from the schedule (cheap when none)."""
        now = self.clock()
        with self._lock:
            fired = [entry for entry in self._entries if entry.due <= now and rings_here(entry)]
            if fired:
                self._entries = [entry for entry in self._entries if entry not in fired]
        if fired:
            self._save()  # written by the writer thread: the audio loop never waits on the disk
        return sorted(fired, key=lambda entry: entry.due)

    def take_missed(self, rings_here: Callable[[Reminder], bool] = lambda entry: True) -> list[Reminder]:
        with self._lock:
            missed = [entry for entry in self.missed if rings_here(entry)]
            self.missed = [entry for entry in self.missed if entry not in missed]
        return missed
