"""Retrieval: priority order, exact token budget, empty memory, excluded step, similar-problem selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmd.envs.base import Problem
from pmd.memory.retrieve import RetrievalConfig, RetrievedMemory, retrieve
from pmd.memory.store import Experience, MemoryStore


def words(text: str) -> int:
    return len(text.split())


PROBLEM = Problem(uid="arith-1", family="arith", question="What is 17 + 25? Add the two numbers.")
BIG = RetrievalConfig(token_budget=10_000)


def attempt(uid: str, step: int, i: int, response: str, passed: bool, reward: float, feedback: str = "",
            family: str = "arith", prompt: str | None = None) -> Experience:
    return Experience(uid, family, prompt or f"Solve: {uid}", response, reward, passed, feedback, step, i)


@pytest.fixture
def store(tmp_path: Path):
    with MemoryStore(tmp_path / "memory.db") as s:
        yield s


@pytest.fixture
def filled(store: MemoryStore) -> dict[str, int]:
    q = "Solve: What is 17 + 25? Add the two numbers."
    ids = store.add_experiences([
        attempt("arith-1", 1, 0, "17 + 25 = 32", False, 0.0, "Expected 42, got 32.", prompt=q),
        attempt("arith-1", 1, 1, "no idea", False, 0.0, "", prompt=q),
        attempt("arith-1", 2, 0, "7 + 5 = 12, carry 1; 1 + 1 + 2 = 4. Answer: 42", True, 1.0, "Correct.", prompt=q),
        attempt("arith-1", 3, 0, "Answer: 42 (current step)", True, 1.0, "Correct.", prompt=q),
        attempt("arith-1", 3, 1, "Answer: 43", False, 0.0, "Expected 42, got 43.", prompt=q),
        attempt("arith-2", 1, 0, "x", False, 0.0, "", prompt="Solve: What is 38 + 47? Add the two numbers."),
        attempt("logic-1", 1, 0, "x", False, 0.0, "", family="logic",
                prompt="Knights always tell the truth and knaves always lie. Who is the knave?"),
        attempt("logic-2", 1, 0, "x", False, 0.0, "", family="logic",
                prompt="Add the two numbers of knights and knaves on the island."),
    ])
    out = {"fail1": ids[0], "pass2": ids[2], "pass3": ids[3], "fail3": ids[4]}
    def insight(uid: str, kind: str, text: str, exp_ids: list[int], step: int) -> int:
        return store.upsert_insight(uid, uid.split("-")[0], kind, text, "policy", exp_ids, step)  # type: ignore[arg-type]

    out["strategy"] = insight("arith-1", "strategy", "Add the ones column first, then carry.", [ids[2]], 2)
    insight("arith-1", "strategy", "Add the ones column first, then carry.", [ids[3]], 3)
    out["lesson"] = insight("arith-1", "lesson", "Forgot to carry the one.", [ids[0]], 2)
    out["sim_arith"] = insight("arith-2", "strategy", "Line up digits by place value.", [], 2)
    out["sim_logic"] = insight("logic-1", "lesson", "Test each speaker's claim for contradiction.", [], 2)
    out["sim_logic2"] = insight("logic-2", "lesson", "Count knights before answering.", [], 2)
    out["pattern"] = store.add_pattern("lesson", "Re-check carries in multi-digit sums.",
                                       [out["lesson"], out["sim_arith"]], 2, step=3)
    out["pattern_logic"] = store.add_pattern("lesson", "Assume a speaker is a knight and look for a contradiction.",
                                             [out["sim_logic"], out["sim_logic2"]], 2, step=3)
    return out


def test_empty_memory(store: MemoryStore) -> None:
    got = retrieve(store, PROBLEM, words)
    assert got == RetrievedMemory(text="", item_refs=[], n_tokens=0, truncated=False)


def test_priority_order(store: MemoryStore, filled: dict[str, int]) -> None:
    got = retrieve(store, PROBLEM, words, BIG)
    assert got.item_refs == [
        f"experience:{filled['pass3']}",  # best pass: reward ties -> most recent
        f"experience:{filled['fail3']}",  # most recent failure with feedback
        f"insight:{filled['strategy']}",
        f"insight:{filled['lesson']}",
        f"pattern:{filled['pattern']}",  # the logic pattern shares no word with the question
        f"similar:{filled['sim_arith']}",  # same family first
        f"similar:{filled['sim_logic2']}",  # other family, but lexically similar ("add the two numbers")
    ]
    lines = got.text.split("\n")
    assert lines[0] == "A past attempt that passed: Answer: 42 (current step)"
    assert lines[1] == "A past attempt that failed (feedback: Expected 42, got 43.): Answer: 43"
    assert lines[2] == "Strategy (seen 2x): Add the ones column first, then carry."
    assert lines[3] == "Lesson: Forgot to carry the one."
    assert lines[4] == "Pattern across problems (2 problems): Re-check carries in multi-digit sums."
    assert lines[5] == "Strategy from a similar problem: Line up digits by place value."
    assert got.n_tokens == words(got.text) and not got.truncated
    assert retrieve(store, PROBLEM, words, BIG) == got  # deterministic


def test_exclude_experience_step(store: MemoryStore, filled: dict[str, int]) -> None:
    got = retrieve(store, PROBLEM, words, BIG, exclude_experience_step=3)
    assert got.item_refs[:2] == [f"experience:{filled['pass2']}", f"experience:{filled['fail1']}"]
    assert "(current step)" not in got.text and "Answer: 43" not in got.text


def test_best_pass_prefers_reward_over_recency(store: MemoryStore) -> None:
    store.add_experiences([
        attempt("arith-1", 1, 0, "good", True, 1.0),
        attempt("arith-1", 2, 0, "partial", True, 0.7),
    ])
    assert retrieve(store, PROBLEM, words, BIG).text == "A past attempt that passed: good"


def test_budget_is_respected_exactly(store: MemoryStore, filled: dict[str, int]) -> None:
    full = retrieve(store, PROBLEM, words, BIG)
    for budget in range(0, words(full.text) + 2):
        got = retrieve(store, PROBLEM, words, RetrievalConfig(token_budget=budget))
        assert got.n_tokens == words(got.text) <= budget
        assert got.truncated == (got.text != full.text)
        # Greedy in priority order: whatever is kept appears in the same order as with an unlimited budget.
        kept = set(got.item_refs)
        assert [r for r in full.item_refs if r in kept] == got.item_refs
    assert retrieve(store, PROBLEM, words, RetrievalConfig(token_budget=words(full.text))) == full


def test_zero_shares_pack_greedily_in_priority_order(store: MemoryStore, filled: dict[str, int]) -> None:
    # With nothing reserved, pass 2 alone packs in priority order and skips what does not fit.
    none = {level: 0.0 for level in ("experience", "insight", "pattern", "similar")}
    full = retrieve(store, PROBLEM, words, BIG).text.split("\n")
    budget = words("\n".join(full[:3])) + 1  # the lesson (5 words) no longer fits, the 6-word pattern neither
    got = retrieve(store, PROBLEM, words, RetrievalConfig(token_budget=budget, level_shares=none))
    assert got.text.split("\n")[:3] == full[:3]
    assert f"insight:{filled['lesson']}" not in got.item_refs
    assert got.truncated and got.n_tokens <= budget


def test_long_first_attempt_is_shortened_not_dropped(store: MemoryStore) -> None:
    response = " ".join(f"w{i}" for i in range(500))
    store.add_experiences([attempt("arith-1", 1, 0, response, True, 1.0)])
    store.upsert_insight("arith-1", "arith", "lesson", "Be brief.", "policy", [], 1)
    got = retrieve(store, PROBLEM, words, RetrievalConfig(token_budget=40))
    assert got.truncated and got.n_tokens == words(got.text) <= 40
    assert got.n_tokens >= 38  # it uses the budget instead of dropping the attempt
    first = got.text.split("\n")[0]
    assert first.startswith("A past attempt that passed: w0 w1") and first.endswith("w499") and "[...]" in first
    # Character-level counter too: the result always fits.
    got = retrieve(store, PROBLEM, len, RetrievalConfig(token_budget=100))
    assert len(got.text) <= 100 and got.text.startswith("A past attempt that passed: w0")


def test_similar_problem_selection(store: MemoryStore, filled: dict[str, int]) -> None:
    cfg = RetrievalConfig(token_budget=10_000, include_experience=False, include_patterns=False, max_similar_problems=1)
    got = retrieve(store, PROBLEM, words, cfg)
    assert got.item_refs[-1] == f"similar:{filled['sim_arith']}"
    # A logic problem: its family first, ranked by BM25 ("knave"/"lie" match logic-1 better than logic-2).
    logic = Problem(uid="logic-9", family="logic", question="Islanders may lie. Who is the knave?")
    got = retrieve(store, logic, words, RetrievalConfig(token_budget=10_000, include_patterns=False))
    assert got.item_refs == [f"similar:{filled['sim_logic']}", f"similar:{filled['sim_logic2']}"]
    # An unseen family with no lexical overlap gets nothing from other problems.
    other = Problem(uid="geo-1", family="geometry", question="Compute the area of a circle of radius 3.")
    assert retrieve(store, other, words, BIG).item_refs == []


def test_family_patterns_first(store: MemoryStore, filled: dict[str, int]) -> None:
    logic = Problem(uid="logic-9", family="logic", question="Add the numbers of knights.")
    got = retrieve(store, logic, words, RetrievalConfig(token_budget=10_000, include_insights=False))
    assert got.item_refs == [f"pattern:{filled['pattern_logic']}"]


def test_include_switches(store: MemoryStore, filled: dict[str, int]) -> None:
    only_exp = RetrievalConfig(token_budget=10_000, include_insights=False, include_patterns=False)
    assert all(r.startswith("experience:") for r in retrieve(store, PROBLEM, words, only_exp).item_refs)
    no_exp = RetrievalConfig(token_budget=10_000, include_experience=False)
    refs = retrieve(store, PROBLEM, words, no_exp).item_refs
    assert refs and not any(r.startswith("experience:") for r in refs)


def test_duplicate_texts_are_shown_once_at_the_pattern_level(store: MemoryStore) -> None:
    i = store.upsert_insight("arith-1", "arith", "lesson", "Check the sign.", "policy", [], 1)
    j = store.upsert_insight("arith-2", "arith", "lesson", "Check the sign.", "policy", [], 1)
    p = store.add_pattern("lesson", "check the sign", [i, j], 2, step=1)
    # The pattern equals this problem's own insight and a similar problem's: shown once, as the pattern.
    assert retrieve(store, PROBLEM, words, BIG).item_refs == [f"pattern:{p}"]
    # Without patterns the own insight wins over the similar problem's copy.
    no_patterns = RetrievalConfig(token_budget=10_000, include_patterns=False)
    assert retrieve(store, PROBLEM, words, no_patterns).item_refs == [f"insight:{i}"]


def test_record_round_trip_and_cache_sees_new_writes(store: MemoryStore, filled: dict[str, int]) -> None:
    got = retrieve(store, PROBLEM, words, BIG)
    store.log_retrieval([got.to_record(step=4, problem_uid=PROBLEM.uid, sample_index=1)])
    (rec,) = store.retrievals(step=4)
    assert (rec.text, rec.item_refs, rec.n_tokens) == (got.text, got.item_refs, got.n_tokens)
    new = store.upsert_insight("arith-1", "arith", "lesson", "Write the carry above the column.", "policy", [], 4)
    assert f"insight:{new}" in retrieve(store, PROBLEM, words, BIG).item_refs


def test_index_syncs_on_memory_writes_only(store: MemoryStore, filled: dict[str, int]) -> None:
    from pmd.memory.index import problem_index

    index = problem_index(store)
    syncs = index.syncs
    got = retrieve(store, PROBLEM, words, BIG)
    store.log_retrieval([got.to_record(step=4, problem_uid=PROBLEM.uid, sample_index=0)])
    store.meta_set("last_reflected_step", 4)
    assert problem_index(store) is index and index.syncs == syncs  # logging what the teacher saw: no work
    store.add_experiences([attempt("arith-3", 4, 0, "x", False, 0.0)])
    assert problem_index(store) is index and index.syncs == syncs + 1  # updated in place, not rebuilt
    assert "arith-3" in index.doc_of
    with MemoryStore(store.path) as other:  # a write through another connection is seen too
        other.upsert_insight("arith-3", "arith", "lesson", "Another lesson.", "policy", [], 4)
    assert problem_index(store).syncs == syncs + 2


def test_advised_answer_form_reads_the_shipped_texts() -> None:
    from pmd.envs.answer import NO_ANSWER
    from pmd.memory.reflect import LESSON_TEXTS, STRATEGY_TEXTS
    from pmd.memory.retrieve import advised_answer_form
    from pmd.prompts import ANSWER_INSTRUCTION, MCQ_BY_LETTER, STRATEGY_PATTERNS

    assert advised_answer_form(ANSWER_INSTRUCTION) == "answer_line"
    assert advised_answer_form(MCQ_BY_LETTER) == "answer_line"
    assert advised_answer_form(LESSON_TEXTS["no_answer"]) == "answer_line"
    for form in ("answer_line", "boxed", "final_sentence"):
        assert advised_answer_form(STRATEGY_TEXTS[form]) == form
        assert advised_answer_form(STRATEGY_PATTERNS[form]) == form
    assert advised_answer_form(NO_ANSWER) is None  # names two forms: advises neither
    assert advised_answer_form(LESSON_TEXTS["wrong_value"]) is None
    assert advised_answer_form("The answer '7' was given repeatedly and is wrong; recheck the computation.") is None


def test_one_answer_form_keeps_the_asked_form_and_every_attempt() -> None:
    from pmd.memory.retrieve import Item, one_answer_form

    line = Item("insight", "insight:1", "Lesson: finish with a final line 'Answer: <answer>'.")
    sentence = Item("pattern", "pattern:2", "Pattern: end with one sentence 'The answer is <answer>'.")
    boxed = Item("similar", "similar:3", "Strategy: put the result in \\boxed{}.")
    plain = Item("insight", "insight:4", "Lesson: recompute the sum.")
    attempt = Item("experience", "experience:5", "A past attempt that passed: ", "The answer is 7.")
    items = [attempt, line, plain, sentence, boxed]
    assert one_answer_form(items, "final_sentence") == [attempt, plain, sentence]
    assert one_answer_form(items, "boxed") == [attempt, plain, boxed]
    assert one_answer_form(items, None) == [attempt, line, plain]  # none asked: the first advised form wins
    assert one_answer_form([plain, attempt], "answer_line") == [plain, attempt]


def test_memory_never_advises_another_answer_form_than_the_prompt(store: MemoryStore) -> None:
    from pmd.memory.reflect import LESSON_TEXTS, STRATEGY_TEXTS
    from pmd.prompts import ANSWER_INSTRUCTION, STRATEGY_PATTERNS

    lesson = store.upsert_insight("arith-1", "arith", "lesson", LESSON_TEXTS["no_answer"], "feedback-stats", [], 1,
                                  tag="no_answer")
    said = STRATEGY_TEXTS["final_sentence"]
    mine = store.upsert_insight("arith-2", "arith", "strategy", said, "feedback-stats", [], 1, tag="final_sentence")
    theirs = store.upsert_insight("arith-3", "arith", "strategy", said, "feedback-stats", [], 1, tag="final_sentence")
    sentence = store.add_pattern("strategy", STRATEGY_PATTERNS["final_sentence"], [mine, theirs], 2, step=1)
    asked_line = retrieve(store, PROBLEM, words, BIG, prompt=f"{PROBLEM.question}\n{ANSWER_INSTRUCTION}")
    assert asked_line.item_refs == [f"insight:{lesson}"]
    asked_sentence = retrieve(store, PROBLEM, words, BIG, prompt="What is 17 + 25? End with 'The answer is N'.")
    assert asked_sentence.item_refs == [f"pattern:{sentence}", f"similar:{mine}"]  # one copy of the same strategy
    assert retrieve(store, PROBLEM, words, BIG).item_refs == asked_line.item_refs  # none asked: the first form wins


# ------------------------------------------------------------------------------------------- issue 25's controls


def test_same_problem_scope_retrieves_nothing_from_other_problems(store: MemoryStore, filled: dict[str, int]) -> None:
    """pmd-same-problem: this problem's attempts and insights only; the full scope, on the same store, does reach
    other problems (a pattern, a similar problem's strategy), so the restriction is what removes them."""
    full = retrieve(store, PROBLEM, words, BIG)
    assert {r.split(":")[0] for r in full.item_refs} == {"experience", "insight", "pattern", "similar"}
    own = retrieve(store, PROBLEM, words, RetrievalConfig(token_budget=10_000, scope="same_problem"))
    assert own.item_refs == [r for r in full.item_refs if r.split(":")[0] in ("experience", "insight")]
    own_insights = {i.id for i in store.active_insights_of(["arith-1"])["arith-1"]}
    for ref in own.item_refs:
        level, ident = ref.split(":")
        if level == "experience":
            assert store.experience(int(ident)).problem_uid == "arith-1"
        else:
            assert int(ident) in own_insights
    for other in ("Line up digits by place value.", "Re-check carries", "Count knights"):  # other problems' texts
        assert other in full.text and other not in own.text
    # another problem of the same family gets only its own memory: none of arith-1's attempts or insights
    arith2 = Problem(uid="arith-2", family="arith", question="What is 38 + 47? Add the two numbers.")
    theirs = retrieve(store, arith2, words, RetrievalConfig(token_budget=10_000, scope="same_problem"))
    assert "Add the ones column" not in theirs.text and "Forgot to carry" not in theirs.text
    assert theirs.item_refs == [f"insight:{filled['sim_arith']}"]


def test_placebo_memory_replaces_what_was_found_and_keeps_what_was_not() -> None:
    from pmd.memory.retrieve import placebo_memory
    from pmd.prompts import PLACEBO_MEMORY

    empty = RetrievedMemory(text="", item_refs=[], n_tokens=0, truncated=False)
    assert placebo_memory(empty, words, 192) == empty  # nothing found: the teacher stays as PMD's would be
    found = RetrievedMemory(text="Lesson: carry the one.", item_refs=["insight:3"], n_tokens=4, truncated=True)
    got = placebo_memory(found, words, 192)
    assert got == RetrievedMemory(text=PLACEBO_MEMORY, item_refs=[], n_tokens=words(PLACEBO_MEMORY), truncated=False)
    lines = PLACEBO_MEMORY.split("\n")
    short = placebo_memory(found, words, words("\n".join(lines[:2])))  # the budget holds its first two lines
    assert short.text == "\n".join(lines[:2]) and short.truncated and short.n_tokens <= words(short.text)
    assert placebo_memory(found, words, 1).text == lines[0]  # never empty: that would change the activation
