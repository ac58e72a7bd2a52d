"""The tools every assistant has: the time and date, timers and alarms, volume,
"stop" and "forget the conversation"."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core import FunctionTool, Parameter, Tool, ToolError, ToolResult
from .scheduler import Reminder, Scheduler, SchedulerFull
from .state import read_json, write_json_atomic

log = logging.getLogger(__name__)

LABEL = Parameter("label", "string", "a short name for it, e.g. tea", required=False, max_length=40,
                  pattern=r"[\w' -]+")
VOLUME_FILE = "volume.json"
DEFAULT_VOLUME = 80
MIXER_TIMEOUT_SECONDS = 5


def _now_local(clock: Callable[[], float]) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock()).astimezone()


def spoken_duration(seconds: float) -> str:
    """"1 hour 5 minutes", "2 minutes 10 seconds", "45 seconds": what a timer's time left sounds like."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(hours, "hour"), (minutes, "minute")] + ([(seconds, "second")] if not hours else [])
    words = [f"{count} {unit}{'s' if count != 1 else ''}" for count, unit in parts if count]
    return " ".join(words) or "0 seconds"


def time_tool(clock: Callable[[], float]) -> Tool:
    def run(arguments: dict[str, Any]) -> ToolResult:
        now = _now_local(clock)
        return ToolResult({
            "time": now.strftime("%H:%M"), "date": now.strftime("%A %d %B %Y").replace(" 0", " "),
            "timezone": now.tzname() or "local",
        })

    return FunctionTool("get_date_time", "The current local time, date and day of the week.", (), run)


def timer_tools(scheduler: Scheduler) -> list[Tool]:
    def set_timer(arguments: dict[str, Any]) -> ToolResult:
        seconds = arguments.get("hours", 0) * 3600 + arguments.get("minutes", 0) * 60 + arguments.get("seconds", 0)
        if not 1 <= seconds <= 24 * 3600:
            raise ToolError("a timer runs from 1 second to 24 hours")
        entry = _add(scheduler, "timer", arguments.get("label", ""), scheduler.clock() + seconds, seconds)
        return ToolResult({"set": entry.describe(), "duration": spoken_duration(seconds), "rings_at": entry.clock_time()})

    def set_alarm(arguments: dict[str, Any]) -> ToolResult:
        hour, minute = (int(part) for part in arguments["time"].split(":"))
        now = _now_local(scheduler.clock)
        at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if at <= now:
            at += dt.timedelta(days=1)
        entry = _add(scheduler, "alarm", arguments.get("label", ""), at.timestamp())
        return ToolResult({"set": entry.describe(), "rings_at": at.strftime("%H:%M"), "day": at.strftime("%A")})

    def list_timers(arguments: dict[str, Any]) -> ToolResult:
        now = scheduler.clock()
        entries = [
            {"name": entry.describe(), "rings_at": entry.clock_time(), "time_left": spoken_duration(entry.due - now)}
            for entry in scheduler.pending()
        ]
        return ToolResult({"count": len(entries), "pending": entries})

    def cancel_timer(arguments: dict[str, Any]) -> ToolResult:
        pending = scheduler.pending()
        label = arguments.get("label", "").strip().lower()
        chosen = pending if arguments.get("all") else [entry for entry in pending if not label or entry.label.lower() == label]
        if not chosen:
            raise ToolError(f"no {label + ' ' if label else ''}timer or alarm is set")
        if len(chosen) > 1 and not arguments.get("all"):
            raise ToolError(f"{len(chosen)} are set ({', '.join(entry.describe() for entry in chosen)}): say which, or all")
        scheduler.cancel(chosen)
        return ToolResult({"cancelled": [entry.describe() for entry in chosen]})

    count = {"minimum": 0, "required": False}
    return [
        FunctionTool("set_timer", "Start a countdown timer; give its length in hours, minutes and seconds.", (
            Parameter("hours", "integer", "hours", maximum=24, **count),
            Parameter("minutes", "integer", "minutes", maximum=1440, **count),
            Parameter("seconds", "integer", "seconds", maximum=86400, **count),
            LABEL,
        ), set_timer),
        FunctionTool("set_alarm", "Set an alarm at a clock time within the next 24 hours.", (
            Parameter("time", "string", "24-hour clock time, HH:MM", max_length=5, pattern=r"([01][0-9]|2[0-3]):[0-5][0-9]"),
            LABEL,
        ), set_alarm),
        FunctionTool("list_timers", "The timers and alarms that are set, with the time left.", (), list_timers),
        FunctionTool("cancel_timer", "Cancel a timer or alarm by its name; without a name, the only one set.", (
            LABEL, Parameter("all", "boolean", "cancel every timer and alarm", required=False),
        ), cancel_timer),
    ]


def _add(scheduler: Scheduler, kind: str, label: str, due: float, seconds: int = 0) -> Reminder:
    try:
        return scheduler.add(kind, label.strip(), due, seconds)
    except SchedulerFull as error:
        raise ToolError(str(error)) from None


@dataclass
class Volume:
    """Output volume 0-100, persisted. Applied through ``apply`` (the playback's
    software gain, set by the daemon) or, when ``mixer`` is configured, the ALSA
    mixer (``amixer sset CONTROL N%``, run without a shell)."""

    state_dir: Path
    mixer: list[str] = field(default_factory=list)  # amixer argv up to the control, e.g. ["/usr/bin/amixer", "-c", "1", "sset", "PCM"]
    apply: Callable[[float], None] | None = None
    level: int = DEFAULT_VOLUME

    def __post_init__(self) -> None:
        saved = read_json(self.state_dir / VOLUME_FILE)
        if isinstance(saved, dict) and isinstance(saved.get("level"), int) and 0 <= saved["level"] <= 100:
            self.level = saved["level"]

    @property
    def gain(self) -> float:
        """Software gain for the level: squared, so equal steps sound like equal steps."""
        return 1.0 if self.mixer else (self.level / 100) ** 2

    def set(self, level: int) -> None:
        self.level = max(0, min(100, level))
        if self.mixer:
            self._run_mixer()
        write_json_atomic(self.state_dir / VOLUME_FILE, {"level": self.level})
        self.restore()

    def restore(self) -> None:
        """Apply the saved level (at start, and after each change)."""
        if self.apply is not None:
            self.apply(self.gain)

    def _run_mixer(self) -> None:
        argv = [*self.mixer, f"{self.level}%"]
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=MIXER_TIMEOUT_SECONDS, env={"PATH": "/usr/bin:/bin"})
        except (OSError, subprocess.SubprocessError) as error:
            raise ToolError(f"the mixer did not take the volume: {error}") from None


def volume_tool(volume: Volume) -> Tool:
    def run(arguments: dict[str, Any]) -> ToolResult:
        if "level" in arguments:
            volume.set(arguments["level"])
        elif "change" in arguments:
            volume.set(volume.level + arguments["change"])
        return ToolResult({"volume": volume.level})

    return FunctionTool("volume", "Set the speaker volume (0-100), change it by a step, or tell it (no arguments).", (
        Parameter("level", "integer", "the new volume, 0 to 100", required=False, minimum=0, maximum=100),
        Parameter("change", "integer", "raise (positive) or lower (negative) by this much", required=False,
                  minimum=-100, maximum=100),
    ), run)


def stop_tool(on_stop: Callable[[], None]) -> Tool:
    def run(arguments: dict[str, Any]) -> ToolResult:
        on_stop()
        return ToolResult({"stopped": True}, end_turn=True)

    return FunctionTool("stop", "The user says stop, cancel, never mind or be quiet: end silently, silence a ringing alarm.", (), run)


def forget_tool(on_forget: Callable[[], None]) -> Tool:
    def run(arguments: dict[str, Any]) -> ToolResult:
        on_forget()
        return ToolResult({"forgotten": True, "note": "the conversation so far is erased after this reply"})

    return FunctionTool("forget_conversation", "Forget everything said so far in this conversation.", (), run)


def builtin_tools(
    scheduler: Scheduler, volume: Volume, on_stop: Callable[[], None], on_forget: Callable[[], None]
) -> list[Tool]:
    return [time_tool(lambda: scheduler.clock()), *timer_tools(scheduler), volume_tool(volume), stop_tool(on_stop), forget_tool(on_forget)]
