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
from edge_assistant.llm.prompt_state import FILE_NAME

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


def start(twin, directory: Path | None, **settings: object) -> GemmaEngine:
    return GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=4, seed=1, threads=2, **settings),
                       tools=TOOLS, prompt_state_dir=directory)


def test_a_restored_prompt_predicts_what_a_fresh_one_does(twin, tmp_path: Path) -> None:
    with start(twin, tmp_path) as fresh:
        assert not fresh.system_prompt_restored and (tmp_path / FILE_NAME).is_file()
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
    saved = (tmp_path / FILE_NAME).read_bytes()
    with start(twin, tmp_path, system_prompt="You are a pirate. Answer in one sentence.") as changed:
        assert not changed.system_prompt_restored
        pirate = next_token_logits(changed)
    assert (tmp_path / FILE_NAME).read_bytes() != saved  # rewritten for the new prompt
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
    path = tmp_path / FILE_NAME
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
