"""Retrieval by level: reserved shares and the second pass (pure `pack`), de-duplication across levels, ageing,
per-level metrics (`MemoryLoop.metrics`, `pmd memory stats`), and the incremental index against a fresh build."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pmd.config import RetrievalConfig, load_config
from pmd.envs.base import Problem
from pmd.errors import ConfigError
from pmd.memory.index import ProblemIndex, problem_index
from pmd.memory.retrieve import (
    LEVELS,
    Item,
    best_attempt,
    dedupe,
    level_fractions,
    pack,
    rank_insights,
    recency_weight,
    ref_level,
    retrieve,
)
from pmd.memory.store import Experience, Insight, MemoryStore
from pmd.memory.text import tokenize

DEFAULT_SHARES = RetrievalConfig().level_shares
NO_SHARES = dict.fromkeys(LEVELS, 0.0)


def words(text: str) -> int:
    return len(text.split())


def item(level: str, n: int, tag: str, body: str = "") -> Item:
    return Item(level, f"{level}:{tag}", " ".join(f"{tag}{i}" for i in range(n)) + (" " if body else ""), body)


def crowded() -> list[Item]:
    """Many long attempts first, then a few short insights, patterns and similar-problem insights."""
    return ([item("experience", 10, f"e{k}") for k in range(4)] + [item("insight", 5, f"i{k}") for k in range(2)]
            + [item("pattern", 5, f"p{k}") for k in range(2)] + [item("similar", 5, f"s{k}") for k in range(2)])


def test_shares_keep_every_level_in_the_prompt() -> None:
    greedy, _ = pack(crowded(), words, 40, NO_SHARES)
    assert {it.level for it, _ in greedy} == {"experience"}  # the old failure: attempts take the whole budget
    shared, truncated = pack(crowded(), words, 40, DEFAULT_SHARES)
    assert {it.level for it, _ in shared} == set(LEVELS) and truncated
    assert words("\n".join(line for _, line in shared)) <= 40
    refs = [it.ref for it, _ in shared]
    assert refs == [it.ref for it in crowded() if it.ref in refs]  # priority order is kept in the text


def test_unused_share_flows_to_other_levels() -> None:
    only_attempts = [item("experience", 10, f"e{k}") for k in range(3)]
    chosen, truncated = pack(only_attempts, words, 30, DEFAULT_SHARES)  # experience's own share is 10 tokens
    assert [it.ref for it, _ in chosen] == [it.ref for it in only_attempts] and not truncated


def test_second_pass_shortens_an_attempt_into_the_room_left() -> None:
    long = item("experience", 2, "head", body=" ".join(f"w{i}" for i in range(200)))
    items = [long, item("insight", 5, "i"), item("pattern", 5, "p")]
    chosen, truncated = pack(items, words, 40, DEFAULT_SHARES)
    lines = {it.level: line for it, line in chosen}
    assert set(lines) == {"experience", "insight", "pattern"} and truncated
    assert "[...]" in lines["experience"] and lines["experience"].endswith("w199")
    assert 38 <= words("\n".join(line for _, line in chosen)) <= 40  # no budget left on the table


@pytest.mark.parametrize("shares", [DEFAULT_SHARES, NO_SHARES, {"experience": 0.0, "insight": 0.0, "pattern": 1.0,
                                                                 "similar": 0.0}])
def test_pack_respects_the_hard_cap_for_every_budget(shares: dict) -> None:
    items = crowded() + [item("experience", 3, "x", body="a b c d e f g h")]
    for counter in (words, len):
        for budget in range(0, 130, 3):
            chosen, _ = pack(items, counter, budget, shares)
            assert counter("\n".join(line for _, line in chosen)) <= budget
            assert chosen == sorted(chosen, key=lambda c: items.index(c[0]))


def test_dedupe_keeps_the_most_general_level() -> None:
    own = Item("insight", "insight:1", "Lesson: ", "", "check the sign")
    sim = Item("similar", "similar:2", "Lesson from a similar problem: ", "", "check the sign")
    pat = Item("pattern", "pattern:3", "Pattern: ", "", "check the sign")
    other = Item("similar", "similar:4", "Lesson: ", "", "carry")
    attempt = Item("experience", "experience:5", "A past attempt: ", "x")
    assert [i.ref for i in dedupe([attempt, own, pat, sim, other])] == ["experience:5", "pattern:3", "similar:4"]
    assert [i.ref for i in dedupe([own, sim])] == ["insight:1"]


def test_recency_weight() -> None:
    assert recency_weight(40, 0) == 1.0
    assert recency_weight(20, 20) == pytest.approx(0.5)
    assert recency_weight(40, 20) == pytest.approx(0.25)
    assert recency_weight(-5, 20) == 1.0  # newer than "now" (a seeded store) is not boosted


def _ins(ident: int, kind: str, support: int, updated: int) -> Insight:
    return Insight("p", "f", kind, f"t{ident}", "policy", support, [], 0, updated, id=ident)  # type: ignore[arg-type]


def test_rank_insights_prefers_recent_evidence() -> None:
    old, fresh, strat = _ins(1, "lesson", 4, 0), _ins(2, "lesson", 2, 40), _ins(3, "strategy", 1, 0)
    assert [i.id for i in rank_insights([old, fresh, strat], now=40, half_life_steps=20)] == [3, 2, 1]  # 4*.25 < 2
    assert [i.id for i in rank_insights([old, fresh, strat], now=40, half_life_steps=0)] == [3, 1, 2]  # by support


def test_best_attempt_weighs_reward_by_age() -> None:
    attempts = [(1, 1.0, 0), (2, 0.8, 40), (3, 0.8, 39)]
    assert best_attempt(attempts, now=40, half_life_steps=20) == 2
    assert best_attempt(attempts, now=40, half_life_steps=0) == 1
    assert best_attempt([(1, 1.0, 3), (2, 1.0, 3)], now=3, half_life_steps=0) == 2  # tie: latest id
    assert best_attempt([], now=3, half_life_steps=20) is None


def test_level_fractions_from_refs() -> None:
    assert ref_level("similar:3") == "similar" and ref_level("insight:3") == "insight"
    frac = level_fractions([["experience:1", "insight:2", "pattern:3"], ["experience:4", "similar:5"], []])
    assert frac == {"experience": 2 / 3, "insight": 1 / 3, "pattern": 1 / 3, "similar": 1 / 3}
    assert level_fractions([]) == dict.fromkeys(LEVELS, 0.0)


def test_level_shares_config() -> None:
    cfg = load_config(None, ["memory.retrieval.level_shares={pattern: 0.3, experience: 0.25}"])
    assert cfg.memory.retrieval.level_shares == {"experience": 0.25, "insight": 0.25, "pattern": 0.3, "similar": 0.2}
    for bad, message in [("{patterns: 0.1}", "unknown level 'patterns'"), ("{pattern: -0.1}", "expected a finite"),
                         ("{pattern: 0.6}", "add up to 1.4"), ("{pattern: yes}", "expected a finite")]:
        with pytest.raises(ConfigError, match=message) as err:
            load_config(None, [f"memory.retrieval.level_shares={bad}"])
        assert "memory.retrieval.level_shares" in str(err.value)
    with pytest.raises(ConfigError, match="recency_half_life_steps"):
        load_config(None, ["memory.retrieval.recency_half_life_steps=-1"])


# ------------------------------------------------------------------------------------------- against a store


@pytest.fixture
def store(tmp_path: Path):
    with MemoryStore(tmp_path / "memory.db") as s:
        yield s


def exp(uid: str, step: int, i: int, passed: bool = False, prompt: str = "", family: str = "arith",
        reward: float | None = None) -> Experience:
    return Experience(uid, family, prompt or f"Solve {uid}", f"answer {uid} {step} {i}",
                      (1.0 if passed else 0.0) if reward is None else reward, passed, "Wrong." if not passed else "",
                      step, i)


def test_retrieve_ages_insights_and_attempts(store: MemoryStore) -> None:
    store.add_experiences([exp("a", 0, 0, passed=True), exp("a", 30, 0, passed=True, reward=0.9)])
    old = store.upsert_insight("a", "arith", "lesson", "Old lesson.", "policy", [], 0)
    for _ in range(2):
        store.upsert_insight("a", "arith", "lesson", "Old lesson.", "policy", [], 0)  # support 3, last at step 0
    new = store.upsert_insight("a", "arith", "lesson", "New lesson.", "policy", [], 59)
    problem = Problem("a", "arith", "Solve a")
    # At step 60: 3 x 0.5^3 < 1 x 0.5^(1/20); a pass of reward 0.9 at step 30 beats 1.0 at step 0.
    aged = retrieve(store, problem, words, RetrievalConfig(token_budget=1000), exclude_experience_step=60)
    assert aged.item_refs[1:] == [f"insight:{new}", f"insight:{old}"]
    assert "answer a 30 0" in aged.text  # the recent pass beats the older, higher-reward one
    flat = retrieve(store, problem, words, RetrievalConfig(token_budget=1000, recency_half_life_steps=0))
    assert flat.item_refs[1:] == [f"insight:{old}", f"insight:{new}"] and "answer a 0 0" in flat.text


def test_problems_whose_insights_retired_are_passed_over(store: MemoryStore) -> None:
    store.add_experiences([exp(u, 0, 0, prompt=f"Add the numbers {u}") for u in ("a", "b", "c")])
    ib = store.upsert_insight("b", "arith", "lesson", "Lesson of b.", "policy", [], 0)
    ic = store.upsert_insight("c", "arith", "lesson", "Lesson of c.", "policy", [], 0)
    cfg = RetrievalConfig(token_budget=1000, max_similar_problems=1, include_experience=False)
    problem = Problem("a", "arith", "Add the numbers a")
    assert retrieve(store, problem, words, cfg).item_refs == [f"similar:{ib}"]
    store.retire_insight(ib, 1)
    assert retrieve(store, problem, words, cfg).item_refs == [f"similar:{ic}"]


def test_insight_only_problem_is_reindexed_by_its_prompt(store: MemoryStore) -> None:
    i = store.upsert_insight("b", "arith", "lesson", "Carry the tens.", "policy", [], 0)
    index = problem_index(store)
    first_doc = index.doc_of["b"]
    store.add_experiences([exp("b", 1, 0, prompt="Multiply seven by eight")])
    index = problem_index(store)
    assert index.doc_of["b"] != first_doc and index.bm25.n_live == 1
    got = retrieve(store, Problem("z", "geometry", "Multiply eight by nine"), words, RetrievalConfig(token_budget=99))
    assert got.item_refs == [f"similar:{i}"]  # found through the prompt's words, not the insight's


def test_incremental_index_matches_a_fresh_build(store: MemoryStore) -> None:
    # (Problems known only from insights are left out: their place in the tie order depends on when a sync saw them.)
    rng = random.Random(0)
    vocab = "add sum carry digit multiply divide prime factor square root area circle angle knight knave".split()
    families = ["arith", "geo", "logic"]
    index = problem_index(store)  # built empty, then only ever updated
    for step in range(12):
        uids = [f"q{rng.randrange(40)}" for _ in range(6)]
        rows = [Experience(u, families[int(u[1:]) % 3], " ".join(rng.sample(vocab, 4)) + f" {u}", "r", 0.0, False,
                           "Wrong.", step, k) for k, u in enumerate(uids)]
        store.add_experiences(rows)
        for u in uids[:3]:
            store.upsert_insight(u, families[int(u[1:]) % 3], "lesson", f"lesson {rng.choice(vocab)}", "policy", [],
                                 step)
        index = problem_index(store)
    assert index.syncs >= 12
    fresh = ProblemIndex()
    fresh.sync(store)
    assert sorted(fresh.doc_of) == sorted(index.doc_of)
    for _ in range(30):
        query = tokenize(" ".join(rng.sample(vocab, 3)))
        fam, own = rng.choice(families), f"q{rng.randrange(40)}"
        assert index.ranked_problems(query, fam, own, 5) == fresh.ranked_problems(query, fam, own, 5)
        got = index.bm25.scores(query)[[index.doc_of[u] for u in sorted(index.doc_of)]]
        want = fresh.bm25.scores(query)[[fresh.doc_of[u] for u in sorted(fresh.doc_of)]]
        assert got.tolist() == pytest.approx(want.tolist())


def test_memory_loop_retrieval_carries_its_levels_and_writes_nothing(store: MemoryStore) -> None:
    """Retrieval returns what the step's record needs for its level fractions, and leaves the loop and the store as
    they were (recording is its own phase: step.PMDStep.after_update)."""
    from pmd.config import MemoryConfig
    from pmd.memory.loop import MemoryLoop

    store.add_experiences([exp("a", 0, 0, passed=True), exp("b", 0, 0)])
    store.upsert_insight("a", "arith", "lesson", "Lesson of a.", "policy", [], 0)

    loop = MemoryLoop(store, MemoryConfig(), Suite(), words, reflector=None)  # type: ignore[arg-type]
    before, counts = loop.metrics(), store.counts()
    got = loop.retrieve(["a", "a", "b", "c"], step=1)
    assert loop.metrics() == before and store.counts() == counts and store.retrievals() == []
    m = level_fractions([r.item_refs for r in got])
    assert m["experience"] == 0.75  # a, a (its pass), b (its failure); c has nothing
    assert m["insight"] == 0.5  # a's own lesson
    assert m["similar"] == 0.5  # b and c see a's lesson
    assert m["pattern"] == 0.0


class Suite:
    """The two calls MemoryLoop.retrieve makes of an EnvironmentSuite; the prompt asks for `form`."""

    def __init__(self, instruction: str = "") -> None:
        self.instruction = instruction

    def problem(self, uid: str) -> Problem:
        return Problem(uid, "arith", f"Solve {uid}")

    def format_prompt(self, problem: Problem) -> str:
        return f"{problem.question}\n{self.instruction}"


def test_memory_loop_shows_only_the_answer_form_the_prompt_asks_for(store: MemoryStore) -> None:
    from pmd.config import MemoryConfig
    from pmd.memory.loop import MemoryLoop
    from pmd.memory.reflect import LESSON_TEXTS

    store.upsert_insight("a", "arith", "lesson", LESSON_TEXTS["no_answer"], "feedback-stats", [], 0, tag="no_answer")
    for instruction, shown in (("Give the final result on a line 'Answer: <answer>'.", 1),
                               ("Put the final result in \\boxed{}.", 0)):
        loop = MemoryLoop(store, MemoryConfig(), Suite(instruction), words, reflector=None)  # type: ignore[arg-type]
        (got,) = loop.retrieve(["a"], step=1)
        assert len(got.item_refs) == shown, instruction


def test_memory_stats_shows_level_fractions(store: MemoryStore, capsys) -> None:
    from pmd.cli import main
    from pmd.memory.store import RetrievalRecord

    store.log_retrieval([RetrievalRecord(0, "a", 0, "x", ["experience:1", "pattern:2"], 2),
                         RetrievalRecord(0, "a", 1, "", [], 0)])
    assert main(["memory", "stats", str(store.path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["teacher_calls"] == 2
    assert out["level_fraction"] == {"experience": 0.5, "insight": 0.0, "pattern": 0.5, "similar": 0.0}
