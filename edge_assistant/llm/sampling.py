"""Choosing the next token: the sampler interface the engine calls and
llama.cpp's own sampler chain behind it."""

from __future__ import annotations

from typing import Protocol

import llama_cpp

from ..config import EngineConfig


class TokenSampler(Protocol):
    """Picks the next token from the logits of the context's last evaluated token.
    The engine owns one per model; tests pass a scripted one so a turn's reply has
    a known shape whatever the random-weight twin would say."""

    def sample(self, ctx: llama_cpp.llama_context_p) -> int: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class LlamaSampler:
    """llama.cpp's sampler chain: greedy at temperature 0, else top-k, top-p,
    temperature and a seeded draw (Google's recommended Gemma 4 settings)."""

    def __init__(self, settings: EngineConfig) -> None:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if settings.temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            seed = settings.seed if settings.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED
            if settings.top_k > 0:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(settings.top_k))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(settings.top_p, 1))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(settings.temperature))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        self._chain = chain

    def sample(self, ctx: llama_cpp.llama_context_p) -> int:
        return llama_cpp.llama_sampler_sample(self._chain, ctx, -1)

    def reset(self) -> None:
        llama_cpp.llama_sampler_reset(self._chain)

    def close(self) -> None:
        if self._chain:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
