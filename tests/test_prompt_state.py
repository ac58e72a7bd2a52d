"""The system prompt's KV state saved after its first evaluation and restored at
the next start, on the Gemma 4 twin: the restored cache must predict exactly
what a freshly evaluated one does, and anything that changes the prompt, the
context or the file makes it be evaluated (and saved) again."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from edge_assistant.config import EngineConfig
from edge_assistant.llm.engine import GemmaEngine
from edge_assistant.llm.prompt_state import FILE_GLOB, MAX_SAVED_PROMPTS

TOOLS = [{"type": "function", "function": {
    "name": "get_current_time", "description": "Get current time in a specific timezone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string", "description": "IANA name"}},
                   "required": ["timezone"]}}}]


def next_token_logits(engine: GemmaEngine) -> np.ndarray:
    """The logits after the system prompt and the start of a user turn."""
    before = engine.context_tokens
    engine._decode_tokens(engine.tokenize("<|turn>user\nWhat time is it in Tokyo?<turn|>\n<|turn>model\n"), want_logits=True)
    vocab = llama_cpp.llama_vocab_n_tokens(engine._vocab)
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(engine._ctx, -1), shape=(vocab,)).copy()
    engine._truncate(before)
    return logits


def saved(directory: Path) -> list[Path]:
    return sorted(directory.glob(FILE_GLOB))


def start(twin, directory: Path | None, **settings: object) -> GemmaEngine:
    return GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=4, seed=1, threads=2, **settings),
                       tools=TOOLS, prompt_state_dir=directory)


def test_a_restored_prompt_predicts_what_a_fresh_one_does(twin, tmp_path: Path) -> None:
    with start(twin, tmp_path) as fresh:
        assert not fresh.system_prompt_restored and len(saved(tmp_path)) == 1
        expected = next_token_logits(fresh)
        n_system = fresh.context_tokens
    with start(twin, None) as plain:  # no state directory: the old behaviour, same numbers
        np.testing.assert_array_equal(next_token_logits(plain), expected)
    with start(twin, tmp_path) as restored:
        assert restored.system_prompt_restored and restored.context_tokens == n_system
        restored.check_cache()
        np.testing.assert_array_equal(next_token_logits(restored), expected)
        restored.reset_history()  # a history reset keeps the restored prompt
        assert restored.context_tokens == n_system
        np.testing.assert_array_equal(next_token_logits(restored), expected)


def test_a_changed_prompt_or_context_is_evaluated_again(twin, tmp_path: Path) -> None:
    with start(twin, tmp_path):
        pass
    (first,) = saved(tmp_path)
    with start(twin, tmp_path, system_prompt="You are a pirate. Answer in one sentence.") as changed:
        assert not changed.system_prompt_restored
        pirate = next_token_logits(changed)
    assert len(saved(tmp_path)) == 2 and first in saved(tmp_path)  # the new prompt has its own file
    with start(twin, tmp_path, system_prompt="You are a pirate. Answer in one sentence.") as again:
        assert again.system_prompt_restored
        np.testing.assert_array_equal(next_token_logits(again), pirate)
    with start(twin, tmp_path, system_prompt="You are a pirate. Answer in one sentence.", n_ctx=2048) as other:
        assert not other.system_prompt_restored
    with start(twin, tmp_path, system_prompt="You are a pirate. Answer in one sentence.", kv_cache_type="f16") as other:
        assert not other.system_prompt_restored


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_corrupt_file_is_ignored_and_rewritten(twin, tmp_path: Path, damage: str) -> None:
    with start(twin, tmp_path) as fresh:
        expected = next_token_logits(fresh)
    (path,) = saved(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        del data[len(data) // 2 :]
    else:
        data = bytearray(b"not a state at all")
    path.write_bytes(bytes(data))
    with start(twin, tmp_path) as engine:
        assert not engine.system_prompt_restored
        np.testing.assert_array_equal(next_token_logits(engine), expected)
    with start(twin, tmp_path) as engine:
        assert engine.system_prompt_restored


def test_two_prompts_both_restore_and_the_least_recently_used_go(twin, tmp_path: Path) -> None:
    """A start while an MCP server is down declares fewer tools than after it came
    up: both prompts' states stay, so neither is evaluated at the next start."""
    with start(twin, tmp_path):
        pass
    with GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=4, seed=1, threads=2), tools=[],
                     prompt_state_dir=tmp_path) as fewer:
        assert not fewer.system_prompt_restored
    with start(twin, tmp_path) as again:
        assert again.system_prompt_restored
    with GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=4, seed=1, threads=2), tools=[],
                     prompt_state_dir=tmp_path) as fewer:
        assert fewer.system_prompt_restored
    (tmp_path / "system-prompt.kv").write_bytes(b"an earlier version's file")
    for prompt in ("One.", "Two.", "Three."):
        with start(twin, tmp_path, system_prompt=prompt):
            pass
    assert len(saved(tmp_path)) == MAX_SAVED_PROMPTS and not (tmp_path / "system-prompt.kv").exists()
    with start(twin, tmp_path, system_prompt="Three.") as kept, start(twin, tmp_path) as dropped:
        assert kept.system_prompt_restored and not dropped.system_prompt_restored


def test_tools_declared_later_give_the_prompt_a_fresh_engine_has(twin, tmp_path: Path) -> None:
    """An MCP server that came up after the start: the engine evaluates the new
    system prompt between turns (dropping the conversation behind the old one),
    or restores it when it was saved before."""
    with start(twin, None) as fresh:
        expected = next_token_logits(fresh)
        n_system = fresh.context_tokens
    for restored in (False, True):
        with GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=4, seed=1, threads=2), tools=[],
                         prompt_state_dir=tmp_path) as engine:
            engine._decode_tokens(engine.tokenize("<|turn>user\nHello.<turn|>\n"), want_logits=False)  # a conversation
            engine.declare_tools(TOOLS)
            assert engine.system_prompt_restored is restored and engine.context_tokens == n_system
            engine.check_cache()
            np.testing.assert_array_equal(next_token_logits(engine), expected)
            engine.reset_history()
            np.testing.assert_array_equal(next_token_logits(engine), expected)
