"""Scripted model output: the real engine, prompt evaluation and KV cache, with a
sampler that emits a given reply. The random-weight twin's own text differs from
one CPU to another (AVX2 and AVX-512 round differently), so a test that needs a
reply of a known shape or length scripts it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from edge_assistant.config import EngineConfig
from edge_assistant.llm.engine import GemmaEngine


def reply_tokens(engine: GemmaEngine, reply: str) -> list[int]:
    """``reply`` as the model would emit it: its tokens, then the end-of-turn token."""
    return engine.tokenize(reply) + engine.tokenize(engine.chat_format.turn_end)[:1]


class ScriptedSampler:
    """Returns the scripted tokens one per call, then the end-of-turn token; every
    turn says the same (``reset`` starts over, as the engine does after a turn)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self._next = 0

    def sample(self, ctx: object) -> int:
        token = self.tokens[min(self._next, len(self.tokens) - 1)]
        self._next += 1
        return token

    def reset(self) -> None:
        self._next = 0

    def say(self, engine: GemmaEngine, reply: str) -> None:
        """Every following turn of ``engine`` replies ``reply``, then ends its turn."""
        self.tokens = reply_tokens(engine, reply)
        self.reset()

    def close(self) -> None:
        pass


def scripted_engine_class(reply: str) -> type[GemmaEngine]:
    """A GemmaEngine whose sampler says ``reply`` every turn: what the product's
    own CLI and daemon build when a test or benchmark puts it in place of
    GemmaEngine (the engine still evaluates the prompt, the audio and every
    reply token)."""

    class ScriptedGemmaEngine(GemmaEngine):
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            sampler = ScriptedSampler()
            super().__init__(*args, sampler=sampler, **kwargs)
            sampler.say(self, reply)

    return ScriptedGemmaEngine


class ScriptedEngine:
    """A loaded :class:`GemmaEngine` (``.engine``) whose replies are :meth:`say`'s."""

    def __init__(
        self, model: Path, mmproj: Path, reply: str, settings: EngineConfig | None = None, tools: Sequence[Mapping] = ()
    ) -> None:
        """``tools``: declarations the system prompt offers (the script decides the calls)."""
        self.sampler = ScriptedSampler()
        self.engine = GemmaEngine(
            model, mmproj, settings or EngineConfig(max_tokens=200), sampler=self.sampler, tools=tools
        )
        self.say(reply)

    def say(self, reply: str) -> None:
        """Every following turn replies ``reply``, then ends its turn."""
        self.sampler.say(self.engine, reply)

    def close(self) -> None:
        self.engine.close()
