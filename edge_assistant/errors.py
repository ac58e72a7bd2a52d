"""Errors the user can act on, each carrying the process exit code the CLI returns.

Every stage raises one of these for bad input; the CLI prints ``str(error)`` as a
single line on stderr and exits with ``error.exit_code``. Anything else is a bug
and exits 1.
"""

from __future__ import annotations


class EdgeAssistantError(Exception):
    """Base class: a one-line, user-facing message and an exit code."""

    exit_code = 1


class UsageError(EdgeAssistantError):
    """Bad command-line options or configuration values."""

    exit_code = 2


class AudioInputError(EdgeAssistantError):
    """Missing, unreadable, corrupt, truncated or empty input audio."""

    exit_code = 2


class NoSpeechError(EdgeAssistantError):
    """The input audio holds no speech; the model is not called."""

    exit_code = 4


class ModelFileError(EdgeAssistantError):
    """A model, projector or voice file is missing or invalid."""

    exit_code = 3


class AudioDeviceError(EdgeAssistantError):
    """A microphone or speaker cannot be opened or fails while in use."""

    exit_code = 5


class TurnStuckError(EdgeAssistantError):
    """A cancelled turn never returned: llama.cpp is stuck; only a restart helps."""

    exit_code = 1
