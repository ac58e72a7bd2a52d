"""One engine, one conversation per room: each room's turns go to its own
llama.cpp sequence, which starts from the system prompt's shared cells, and a
follow-up in one room evaluates only that room's new tokens."""

from __future__ import annotations

import llama_cpp
import pytest

from edge_assistant.config import EngineConfig
from edge_assistant.llm.audio_turn import Interruption
from edge_assistant.llm.engine import GemmaEngine

from speech import speak

pytestmark = pytest.mark.slow
TURN_END_TOKENS = 2


@pytest.fixture(scope="module")
def engine(twin):
    with GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=8, seed=1), conversations=3) as loaded:
        yield loaded


def positions(engine: GemmaEngine, seq_id: int) -> tuple[int, int]:
    memory = engine._memory  # noqa: SLF001
    return llama_cpp.llama_memory_seq_pos_min(memory, seq_id), llama_cpp.llama_memory_seq_pos_max(memory, seq_id)


def test_every_room_starts_from_the_system_prompt_without_evaluating_it(engine: GemmaEngine) -> None:
    for room in range(3):
        engine.use_conversation(room)
        engine.reset_history()
        assert engine.context_tokens == engine.system_prompt_tokens
        assert positions(engine, room) == (0, engine.system_prompt_tokens - 1)
        engine.check_cache()


def test_a_follow_up_uses_its_own_rooms_history_only(engine: GemmaEngine) -> None:
    question, other, follow_up = speak("Is it raining?").samples, speak("Play some music.").samples, speak("And in the kitchen?").samples
    for room in range(3):
        engine.use_conversation(room)
        engine.reset_history()
    engine.use_conversation(0)
    first = engine.respond(question).stats
    engine.use_conversation(1)
    elsewhere = engine.respond(other).stats
    assert elsewhere.context_tokens == engine.system_prompt_tokens + elsewhere.evaluated_this_turn  # room 0 not in it
    engine.use_conversation(0)
    second = engine.respond(follow_up).stats
    assert second.evaluated_this_turn == second.prompt_tokens + second.audio_tokens + second.generated_tokens + TURN_END_TOKENS
    assert second.context_tokens == engine.system_prompt_tokens + first.evaluated_this_turn + second.evaluated_this_turn
    engine.check_cache()
    engine.use_conversation(1)
    assert engine.context_tokens == elsewhere.context_tokens
    engine.check_cache()
    engine.use_conversation(2)
    assert engine.context_tokens == engine.system_prompt_tokens
    engine.check_cache()


def test_a_cancelled_turn_rolls_back_only_its_room(engine: GemmaEngine) -> None:
    engine.use_conversation(1)
    engine.reset_history()
    kept = engine.respond(speak("What time is it?").samples).stats.context_tokens
    engine.use_conversation(0)
    before = engine.context_tokens
    interruption = Interruption()
    turn = engine.begin_turn(2.0, interruption=interruption)
    try:
        turn.feed(speak("Set a timer.").samples, evaluate=True)
        interruption.cancel()
    finally:
        turn.finish(None)
    assert engine.context_tokens == before
    engine.check_cache()
    engine.use_conversation(1)
    assert engine.context_tokens == kept
    engine.check_cache()


def test_a_room_cannot_be_switched_inside_a_turn(engine: GemmaEngine) -> None:
    engine.use_conversation(0)
    turn = engine.begin_turn(1.0)
    try:
        with pytest.raises(RuntimeError, match="while a turn is open"):
            engine.use_conversation(1)
    finally:
        turn.rollback()
    engine.check_cache()


def test_tools_declared_later_restart_every_room_from_the_new_prompt(twin) -> None:
    """An MCP server that came up late: the new system prompt is evaluated once
    and every room's conversation starts again from a copy of it."""
    tools = [{"type": "function", "function": {"name": "get_current_time", "description": "Current time",
                                               "parameters": {"type": "object", "properties": {}}}}]
    with GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=4, seed=1), conversations=2) as engine:
        old_prompt = engine.system_prompt_tokens
        for room in (0, 1):
            engine.use_conversation(room)
            engine.respond(speak("Is it raining?").samples)
        engine.declare_tools(tools)
        assert engine.system_prompt_tokens > old_prompt
        for room in (1, 0):  # the room turns were last in stays the current one
            assert engine.context_tokens == engine.system_prompt_tokens
            assert positions(engine, room) == (0, engine.system_prompt_tokens - 1)
            engine.check_cache()
            engine.use_conversation(0)


def test_tools_that_fail_to_declare_leave_every_room_on_the_prompt_before(
    twin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new prompt's evaluation fails (a decode error, say): the cache and the
    bookkeeping go back to the tools declared before, in every room."""
    tools = [{"type": "function", "function": {"name": "get_current_time", "description": "Current time",
                                               "parameters": {"type": "object", "properties": {}}}}]
    with GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=4, seed=1), conversations=2) as engine:
        old_prompt = engine.system_prompt_tokens
        engine.use_conversation(1)
        engine.respond(speak("Is it raining?").samples)
        evaluate = engine._evaluate_system_prompt

        def fails_with_the_new_tools() -> int:
            if engine.tools:
                raise RuntimeError("llama_decode failed")
            return evaluate()

        monkeypatch.setattr(engine, "_evaluate_system_prompt", fails_with_the_new_tools)
        with pytest.raises(RuntimeError, match="llama_decode failed"):
            engine.declare_tools(tools)
        assert engine.tools == [] and engine.system_prompt_tokens == old_prompt
        for room in (1, 0):  # room 1 was the current one, and still is
            assert engine.context_tokens == old_prompt
            assert positions(engine, room) == (0, old_prompt - 1)
            engine.check_cache()
            engine.use_conversation(0)
