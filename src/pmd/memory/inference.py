"""Memory at inference: a run's memory put into the student's prompt, for evaluation only.

`eval.memory_at_inference` (`pmd eval --memory RUN`) is a comparison, not how PMD is meant to be used: training
distils memory into the weights, and the student never sees it. Here each held-out problem's prompt gets what the
teacher would retrieve for it, within the same budget (`memory.retrieval`), from a store opened read-only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from pmd.config import RunConfig
from pmd.envs import EnvironmentSuite, Problem
from pmd.errors import PMDError
from pmd.memory.retrieve import retrieve, token_counter
from pmd.memory.store import MemoryStore


@contextlib.contextmanager
def memory_for_prompts(cfg: RunConfig, suite: EnvironmentSuite, memory_db: str | None,
                       tokenizer) -> Iterator[Callable[[Problem], str]]:
    """problem -> the memory text retrieved for it, counted in `tokenizer`'s tokens; the store is closed on exit."""
    if not memory_db:
        raise PMDError("eval.memory_at_inference needs --memory PATH (a run's memory.sqlite)")
    store = MemoryStore.open_existing(memory_db, read_only=True)  # evaluation reads memory, never writes it
    count = token_counter(tokenizer)

    try:
        yield lambda p: retrieve(store, p, count, cfg.memory.retrieval, prompt=suite.format_prompt(p),
                                 success_threshold=cfg.train.success_reward_threshold).text
    finally:
        store.close()
