"""The rank helpers in one process (the multi-process paths run in test_multiprocess.py) and their pure parts."""

from __future__ import annotations

import pytest

from pmd.dist import Ranks, SharedGeneration, generate_on_ranks, interleave
from pmd.errors import CheckpointError


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (5, 2), (6, 3), (7, 4), (3, 1)])
def test_shard_then_interleave_gives_every_item_once_in_order(n, world):
    parts, sizes = [], set()
    for r in range(world):
        mine, per_rank = Ranks(r, world).shard(n)
        sizes.add(per_rank)
        assert len(mine) <= per_rank
        parts.append([f"item-{i}" for i in mine] + ["pad"] * (per_rank - len(mine)))
    assert len(sizes) == 1  # every rank makes the same number of generate calls
    assert interleave(parts, n) == [f"item-{i}" for i in range(n)]


def test_on_main_returns_the_result_and_reraises_a_pmd_error_as_itself():
    ranks = Ranks()
    assert ranks.on_main(lambda: 42) == 42

    def refuse():
        raise CheckpointError("run dir already holds a run")

    with pytest.raises(CheckpointError, match="already holds a run"):
        ranks.on_main(refuse)


def test_generation_in_one_process_is_the_local_generator():
    calls = []

    def local(prompts):
        calls.append(list(prompts))
        return [p.upper() for p in prompts]

    assert generate_on_ranks(Ranks(), ["a", "b", "c"], local) == ["A", "B", "C"]
    shared = SharedGeneration(Ranks(), local)
    with shared.session():
        assert shared(["x"]) == ["X"]
    assert calls == [["a", "b", "c"], ["x"]]
