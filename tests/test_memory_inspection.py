"""memory/inspection.py: what `pmd memory show` and `stats` say, read as library calls (no CLI, no stdout)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmd.errors import PMDError
from pmd.memory import inspection
from pmd.memory.store import Experience, MemoryStore, RetrievalRecord


def _exp(uid: str, step: int, reward: float, passed: bool) -> Experience:
    return Experience(uid, "arith", f"prompt {uid}", f"  answer {uid} at {step}  ", reward, passed, "fb", step, 0)


def _text(lines: list[str]) -> str:
    """What `pmd memory show` prints: one line per item."""
    return "".join(f"{line}\n" for line in lines)


@pytest.fixture
def store(tmp_path: Path):
    with MemoryStore(tmp_path / "memory.sqlite") as s:
        s.add_experiences([_exp("p1", 0, 0.0, False), _exp("p1", 1, 1.0, True), _exp("p2", 1, 0.0, False)])
        s.upsert_insight("p1", "arith", "strategy", "Carry the one.", "test", [2], 1)
        s.upsert_insight("p1", "arith", "strategy", "Carry the one.", "test", [2], 2)  # support 2
        retired = s.upsert_insight("p2", "arith", "lesson", "Check the sign.", "test", [3], 1)
        s.retire_insight(retired, 3)
        s.log_retrieval([RetrievalRecord(1, "p1", 0, "Strategy: carry the one.", ["insight:1", "experience:2"], 7),
                         RetrievalRecord(1, "p2", 0, "", [], 0)])  # a call that was shown nothing
        yield s


def test_show_lists_every_level_with_retired_insights_apart(store: MemoryStore) -> None:
    assert _text(inspection.show(store)) == (
        "# insights\n"
        "[strategy x2] p1: Carry the one.\n"
        "# retired insights\n"
        "[lesson x1, retired at step 4] p2: Check the sign.\n"
        "# patterns\n"  # no retired pattern: no listing for them
        "# experiences\n"
        "[step 1] p1 reward=0.00: 'answer p1 at 0'\n"  # steps as metrics.jsonl numbers them: stored + 1
        "[step 2] p1 reward=1.00: 'answer p1 at 1'\n"
        "[step 2] p2 reward=0.00: 'answer p2 at 1'\n"
    )


def test_show_keeps_the_latest_attempts_and_says_how_many_were_left_out(store: MemoryStore) -> None:
    assert _text(inspection.show(store, level="experiences", limit=1)) == (
        "# experiences (latest 1 of 3; --limit N for more)\n[step 2] p2 reward=0.00: 'answer p2 at 1'\n")
    assert _text(inspection.show(store, level="retrievals")) == (
        "# retrievals\n[step 2] p1 (7 tokens): 'Strategy: carry the one.'\n[step 2] p2 (0 tokens): ''\n")


def test_show_one_problem_gives_its_attempts_insights_and_what_its_teacher_saw(store: MemoryStore) -> None:
    facts = inspection.ProblemFacts("What is 1 + 1?\nAnswer on the last line.", "2")
    text = _text(inspection.show(store, problem="p1", limit=1, facts=facts))
    assert text == (
        "# problem p1\n"
        "question: What is 1 + 1?\n  Answer on the last line.\n"
        "reference: 2\n"
        "# attempts (latest 1 of 2; --limit N for more)\n"
        "[step 2 #0] reward=1.00 passed=True answer=None: 'answer p1 at 1'\n    feedback: fb\n"
        "# insights\n"
        "[strategy x2, step 3] Carry the one.\n"
        "# what its teacher saw\n"
        "[teacher saw at step 2, 7 tokens, ['insight:1', 'experience:2']]\nStrategy: carry the one.\n"
    )
    # without the run's config, the question is the one memory kept, and the reference says why it is missing
    lines = inspection.show(store, problem="p1", facts=inspection.ProblemFacts(unknown="no config.yaml beside it"))
    assert lines[1:3] == ["question: prompt p1", "reference: unknown (no config.yaml beside it)"]


def test_problem_facts_reads_the_runs_environments(tmp_path: Path) -> None:
    from pmd.config import load_config, save_config
    from pmd.envs import EnvironmentSuite

    cfg = load_config(None, ["env.tasks=[{name: basic_arithmetic}]", "env.train_size=2", "env.eval_size=2"])
    save_config(cfg, tmp_path / "config.yaml")
    problem = EnvironmentSuite.from_config(cfg.env).problems("train")[0]
    facts = inspection.problem_facts(tmp_path / "config.yaml", problem.uid)
    assert facts.reference == problem.answer and problem.question in facts.question and not facts.unknown
    assert "no problem 'nope'" in inspection.problem_facts(tmp_path / "config.yaml", "nope").unknown
    assert inspection.problem_facts(tmp_path / "missing.yaml", "x").unknown == "no missing.yaml beside the store"


def test_show_of_an_unknown_problem_names_the_store(store: MemoryStore) -> None:
    with pytest.raises(PMDError, match=r"memory\.sqlite: no problem 'p9' in this memory"):
        inspection.show(store, problem="p9")


def test_stats_counts_levels_and_teacher_calls(store: MemoryStore) -> None:
    stats = inspection.stats(store)
    assert {k: stats[k] for k in ("experiences", "insights", "strategies", "lessons", "problems")} == \
        {"experiences": 3, "insights": 2, "strategies": 1, "lessons": 1, "problems": 2}
    assert stats["teacher_calls"] == 2
    assert stats["level_fraction"] == {"experience": 0.5, "insight": 0.5, "pattern": 0.0, "similar": 0.0}
