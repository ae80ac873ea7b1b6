"""Per-request sampling as a llama.cpp sampler chain.

Each sequence owns its chain, so its random state (seed) and grammar state are its own
even while it shares a batch with others.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import llama_cpp

from llmduet.errors import BadRequestError

PENALTY_WINDOW = 64


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None  # GBNF, root rule "root"


def build_sampler(vocab: Any, params: SamplingParams) -> Any:
    """A new sampler chain; the caller frees it with ``llama_sampler_free``."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    if params.grammar is not None:
        # First, so the samplers after it only ever see tokens the grammar allows.
        grammar = llama_cpp.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root")
        if not grammar:
            llama_cpp.llama_sampler_free(chain)
            raise BadRequestError("the output grammar could not be compiled")
        add(chain, grammar)
    if params.presence_penalty or params.frequency_penalty:
        add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                PENALTY_WINDOW, 1.0, params.frequency_penalty, params.presence_penalty
            ),
        )
    if params.temperature <= 0.0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
    add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
    seed = params.seed if params.seed is not None else random.getrandbits(32)
    add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
