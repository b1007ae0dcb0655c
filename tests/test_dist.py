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


# ------------------------------------------------------------------------------- process group settings, failures

def test_process_group_settings_take_train_trl_and_default_to_minutes():
    from pmd.dist import DEFAULT_COLLECTIVE_TIMEOUT_S, process_group_settings

    assert process_group_settings({}) == (None, DEFAULT_COLLECTIVE_TIMEOUT_S)
    assert DEFAULT_COLLECTIVE_TIMEOUT_S <= 600  # minutes, not TRL's half hour
    assert process_group_settings({"ddp_timeout": 42, "ddp_backend": "gloo"}) == ("gloo", 42)


@pytest.mark.parametrize("trl", [{"ddp_timeout": 0}, {"ddp_timeout": "10"}, {"ddp_timeout": True},
                                 {"ddp_backend": ""}, {"ddp_backend": 3}])
def test_process_group_settings_refuse_bad_values_in_one_line(trl):
    from pmd.dist import process_group_settings
    from pmd.errors import ConfigError

    with pytest.raises(ConfigError, match="train.trl.ddp_"):
        process_group_settings(trl)


def test_ranks_pass_backend_and_timeout_to_the_process_group(monkeypatch):
    """The first PartialState creates the process group; TRL's arguments come later and cannot change it."""
    import datetime

    import accelerate

    from pmd.dist import Ranks

    seen = {}

    class FakeState:
        process_index, num_processes = 0, 1

        def __init__(self, cpu=False, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    Ranks.for_run({"ddp_timeout": 77, "ddp_backend": "gloo"})
    assert seen == {"timeout": datetime.timedelta(seconds=77), "backend": "gloo"}


@pytest.mark.parametrize("message, lost", [
    ("[../gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting 3000ms for send operation to complete", False),
    ("Application timeout caused pair closure", False),
    ("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:10459", True),
])
def test_collective_failures_become_one_line_naming_rank_phase_and_step(monkeypatch, message, lost):
    import pmd.dist as dist
    from pmd.phases import CLOCK

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "_GROUP_TIMEOUT_S", 5)
    monkeypatch.setattr(CLOCK, "failed_at", ("backward", 4))
    try:
        try:
            raise RuntimeError(message)
        except RuntimeError as inner:
            raise ValueError("wrapped") from inner  # found anywhere in the chain
    except ValueError as exc:
        line = dist.collective_failure(exc)
    assert line.startswith("rank 1 of 2: a collective ")
    assert "in phase 'backward' of step 4" in line
    assert ("peer rank stopped" in line) == lost and ("after 5 s" in line) == (not lost)
    assert "\n" not in line


def test_other_errors_are_not_collective_failures():
    from pmd.dist import collective_failure

    assert collective_failure(RuntimeError("CUDA out of memory")) is None
    assert collective_failure(ValueError("Timed out waiting")) is None  # only the backends' RuntimeError
