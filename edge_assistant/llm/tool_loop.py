"""The tool loop inside one model turn: generate; when the model calls tools,
check and run them, put their responses into the same turn, and generate on.

It drives an :class:`~edge_assistant.llm.audio_turn.AudioTurn` whose generation pauses
after a call group (``stopped_by == "tool_call"``); the caller commits or rolls
back the whole turn, calls and responses included, as it does any turn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .tool_calls import ToolCall, parse_tool_calls, render_tool_response
from ..phrases import answer_words
from ..tools import Confirmer, Toolbox, ToolCallRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolUse:
    """The tools a turn offers and how it asks before a ``confirm`` tool runs
    (None: such tools are declined)."""

    toolbox: Toolbox
    confirm: Confirmer | None = None


class Gate(Protocol):
    """Holds a reply back until it may take effect (a reply generated before the
    endpoint confirmed the question's end)."""

    def check(self) -> None:
        """Between tokens; raises to abandon the reply."""

    def settle(self) -> None:
        """Before a tool runs: waits until the reply may take effect, or raises."""


def generate_with_tools(
    turn: Any, on_text: Callable[[str], None] | None, started: float | None, tools: ToolUse | None,
    gate: Gate | None = None,
) -> tuple[str, list[ToolCallRecord]]:
    """The turn's whole reply text (calls included: the reply filter hides
    them) and a record of every call, in order. At most
    ``toolbox.max_calls_per_turn`` calls run; the turn ends after the first
    call group past that, so a model stuck calling cannot loop."""
    between_tokens = gate.check if gate is not None else None
    segment = turn.generate(on_text, started, between_tokens=between_tokens)
    text, records = segment, []
    while turn.stats.stopped_by == "tool_call":
        calls = parse_tool_calls(segment)
        if tools is None or not calls:
            turn.stats.stopped_by = "end_of_turn"  # nothing to answer: the pause was the turn's end
            break
        if gate is not None:
            gate.settle()
        toolbox = tools.toolbox
        round_records = [run_call(call, toolbox, tools.confirm, len(records) + index) for index, call in enumerate(calls)]
        records.extend(round_records)
        responses = "".join(render_tool_response(call.name, record.result) for call, record in zip(calls, round_records))
        if not turn.continue_with(responses):
            break
        if any(record.end_turn for record in round_records) or len(records) > toolbox.max_calls_per_turn:
            turn.stats.stopped_by = "end_of_turn"
            break
        segment = turn.generate(on_text, started, between_tokens=between_tokens)
        text += segment
    return text, records


def run_call(call: ToolCall, toolbox: Toolbox, confirm: Confirmer | None, earlier_calls: int) -> ToolCallRecord:
    """One parsed call through the toolbox; unreadable calls and calls past the
    turn's limit are rejected without running."""
    if call.error:
        return toolbox.reject(call.name or "unknown", call.arguments, call.error)
    if earlier_calls >= toolbox.max_calls_per_turn:
        return toolbox.reject(call.name, call.arguments, f"more than {toolbox.max_calls_per_turn} tool calls in one turn")
    return toolbox.call(call.name, call.arguments, confirm)



# Every language's (phrases.TABLES): the model may write its word in the user's language.
YES_WORDS = answer_words("yes_words")
NO_WORDS = answer_words("no_words")
DECISION_PROMPT = "(Did the user agree? One word, yes or no:) "
DECISION_TOKENS = 4


def hear_yes_or_no(engine: Any, samples: Any, interruption: Any = None) -> bool:
    """Whether a spoken answer to "should I …?" is a yes: the model hears it as
    a user turn and writes one word after a fixed prompt in its own turn; the
    whole exchange is rolled back, so it leaves no trace in the conversation.
    Anything but a clear yes is a no. ``interruption``: the turn's own cancel
    (raises :class:`~edge_assistant.llm.audio_turn.TurnCancelled`)."""
    turn = engine.begin_turn(len(samples) / engine.audio_sample_rate, speech_ended=True, interruption=interruption)
    try:
        turn.feed(samples, evaluate=False)
        turn.end_audio()
        turn.continue_with(DECISION_PROMPT)
        text = turn.generate(max_tokens=DECISION_TOKENS)
    finally:
        turn.rollback()
    return is_yes(text)


def is_yes(text: str) -> bool:
    """The first word decides; nothing recognisable is a no."""
    for word in text.lower().replace(",", " ").replace(".", " ").replace("!", " ").split():
        if word in YES_WORDS:
            return True
        if word in NO_WORDS:
            return False
    return False
