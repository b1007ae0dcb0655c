"""Retrieval for the self-teacher: the most useful memory for one problem, packed under a token budget.

Priority order (earlier items win the budget):
1. this problem's best past attempt that passed (highest reward, then most recent);
2. its most useful failure (most recent failed attempt with non-empty feedback);
3. its own insights (strategies, then lessons, each by support);
4. active patterns most similar to the problem (same family first, then BM25 over question + family);
5. insights of the most similar other problems (same family first, then BM25 over their prompts).

Each item is one labelled line; lines are joined with "\\n" and added greedily while `count_tokens` of the whole
text stays within `token_budget` (items that do not fit are skipped; a first item that is an attempt is shortened
in the middle rather than dropped). Lexical similarity only: deterministic and independent of the policy's drift.
Attempts from `exclude_experience_step` are skipped, so the teacher does not see the current step's own rollouts.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from pmd.config import RetrievalConfig
from pmd.envs.base import Problem
from pmd.memory.store import Experience, Insight, MemoryStore, Pattern, RetrievalRecord
from pmd.memory.text import BM25, normalize_text, tokenize
from pmd.prompts import ELLIPSIS, FAILED_ATTEMPT, PASSED_ATTEMPT, insight_line, pattern_line


@dataclass
class RetrievedMemory:
    """The packed memory text, which stored items it holds, its size, and whether the budget cut anything
    (`truncated` feeds the per-step `pmd/memory_budget_cut_fraction`)."""

    text: str
    item_refs: list[str]
    n_tokens: int
    truncated: bool

    def to_record(self, step: int, problem_uid: str, sample_index: int) -> RetrievalRecord:
        """The row to `MemoryStore.log_retrieval` for this teacher call."""
        return RetrievalRecord(step, problem_uid, sample_index, self.text, list(self.item_refs), self.n_tokens)


@dataclass(frozen=True)
class _Item:
    ref: str
    head: str  # label (and anything before the body)
    body: str  # the part that may be shortened (an attempt's response); "" for insights/patterns
    key: str = ""  # normalised text for de-duplication ("" = never a duplicate)

    @property
    def line(self) -> str:
        return self.head + self.body


@dataclass
class _Index:
    """Everything retrieval needs that does not depend on the query problem; rebuilt only when the store changes."""

    insights_by_problem: dict[str, list[Insight]]
    patterns: list[Pattern]
    pattern_families: list[set[str]]
    pattern_bm25: BM25
    problem_uids: list[str]
    problem_families: list[str]
    problem_bm25: BM25


_CACHE: weakref.WeakKeyDictionary[MemoryStore, tuple[tuple[int, int], _Index]] = weakref.WeakKeyDictionary()


def _build_index(store: MemoryStore) -> _Index:
    insights = store.insights()
    by_problem: dict[str, list[Insight]] = {}
    family_of_insight: dict[int, str] = {}
    for ins in insights:
        by_problem.setdefault(ins.problem_uid, []).append(ins)
        family_of_insight[ins.id or 0] = ins.family
    patterns = sorted(store.patterns("active"), key=lambda p: p.id or 0)
    families = [{family_of_insight[i] for i in p.insight_ids if i in family_of_insight} for p in patterns]
    prompts = store.latest_prompts()
    uids = sorted(by_problem)
    docs, fams = [], []
    for uid in uids:
        family, prompt = prompts.get(uid, (by_problem[uid][0].family, ""))
        fams.append(family)
        docs.append(tokenize(prompt or " ".join(i.text for i in by_problem[uid])))
    return _Index(
        insights_by_problem=by_problem,
        patterns=patterns,
        pattern_families=families,
        pattern_bm25=BM25([tokenize(p.text) for p in patterns]),
        problem_uids=uids,
        problem_families=fams,
        problem_bm25=BM25(docs),
    )


def _index(store: MemoryStore) -> _Index:
    key = store.revision()
    cached = _CACHE.get(store)
    if cached is None or cached[0] != key:
        cached = (key, _build_index(store))
        _CACHE[store] = cached
    return cached[1]


def _insight_item(ins: Insight, similar: bool) -> _Item:
    text = " ".join(ins.text.split())
    return _Item(f"insight:{ins.id}", insight_line(ins.kind, text, ins.support, similar), "", normalize_text(text))


def _ordered_insights(insights: list[Insight]) -> list[Insight]:
    """Strategies before lessons, each by support (the store's order within a kind is kept)."""
    return [i for i in insights if i.kind == "strategy"] + [i for i in insights if i.kind == "lesson"]


def _candidates(store: MemoryStore, problem: Problem, config: RetrievalConfig, exclude_step: int | None) -> list[_Item]:
    items: list[_Item] = []
    if config.include_experience:
        best = store.best_passing_experience(problem.uid, exclude_step)
        if best is not None:
            items.append(_Item(f"experience:{best.id}", PASSED_ATTEMPT, best.response.strip()))
        fail: Experience | None = store.latest_failure_with_feedback(problem.uid, exclude_step)
        if fail is not None:
            feedback = " ".join(fail.feedback.split())
            if len(feedback) > config.max_feedback_chars:
                feedback = feedback[: config.max_feedback_chars].rstrip() + "..."
            items.append(_Item(f"experience:{fail.id}", FAILED_ATTEMPT.format(feedback=feedback), fail.response.strip()))
    if not (config.include_insights or config.include_patterns):
        return items
    index = _index(store)
    if config.include_insights:
        own = _ordered_insights(index.insights_by_problem.get(problem.uid, []))
        items += [_insight_item(i, similar=False) for i in own[: config.max_own_insights]]
    query = tokenize(f"{problem.question} {problem.family}")
    if config.include_patterns and index.patterns:
        scores = index.pattern_bm25.scores(query)
        ranked = sorted(
            (
                (problem.family in fams, score, p)
                for p, fams, score in zip(index.patterns, index.pattern_families, scores)
                if problem.family in fams or score > 0
            ),
            key=lambda t: (not t[0], -t[1], -t[2].support_problems, t[2].id or 0),
        )
        for _, _, p in ranked[: config.max_patterns]:
            text = " ".join(p.text.split())
            items.append(_Item(f"pattern:{p.id}", pattern_line(text, p.support_problems), "", normalize_text(text)))
    if config.include_insights and config.max_similar_problems > 0 and index.problem_uids:
        scores = index.problem_bm25.scores(query)
        ranked_uids = sorted(
            (
                (fam == problem.family, score, uid)
                for uid, fam, score in zip(index.problem_uids, index.problem_families, scores)
                if uid != problem.uid and (fam == problem.family or score > 0)
            ),
            key=lambda t: (not t[0], -t[1], t[2]),
        )
        for _, _, uid in ranked_uids[: config.max_similar_problems]:
            theirs = _ordered_insights(index.insights_by_problem[uid])
            items += [_insight_item(i, similar=True) for i in theirs[: config.max_insights_per_similar_problem]]
    return items


def _shorten(item: _Item, fits: Callable[[str], bool]) -> str | None:
    """The longest middle-elided version of `item` (start and end of its body kept) that fits, or None when no
    version with any of the body fits. Binary search; the result is always re-checked, so a counter that is not
    monotone in the text length can cost length but never break the budget."""
    body = item.body
    worded = re.search(r"\s", body) is not None  # text with words is cut between words; a single blob by chars

    def version(keep: int) -> str:
        if keep >= len(body):
            return item.line
        first = body[: (keep + 1) // 2]
        last = body[len(body) - keep // 2 :] if keep // 2 else ""
        if worded and first and not body[len(first)].isspace():  # cut at a word boundary, never mid-word
            first = first[: max((m.start() for m in re.finditer(r"\s", first)), default=0)]
        if worded and last and not body[-len(last) - 1].isspace():
            found = re.search(r"\s", last)
            last = last[found.start() :] if found else ""
        return item.head + " ".join(p for p in (first.rstrip(), ELLIPSIS, last.lstrip()) if p)

    lo, hi = 0, len(body) - 1  # invariant: version(lo) fits or lo == 0; the full body is known not to fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(version(mid)):
            lo = mid
        else:
            hi = mid - 1
    shortened = version(lo)
    # An attempt reduced to its label and "[...]" teaches nothing: drop it instead.
    return shortened if lo > 0 and shortened != version(0) and fits(shortened) else None


def retrieve(
    store: MemoryStore,
    problem: Problem,
    count_tokens: Callable[[str], int],
    config: RetrievalConfig = RetrievalConfig(),
    exclude_experience_step: int | None = None,
) -> RetrievedMemory:
    """Pack the memory most useful to the teacher for `problem` (see the module docstring). Deterministic."""
    lines: list[str] = []
    refs: list[str] = []
    seen_texts: set[str] = set()
    truncated = False

    def fits(candidate_line: str) -> bool:
        return count_tokens("\n".join([*lines, candidate_line])) <= config.token_budget

    for item in _candidates(store, problem, config, exclude_experience_step):
        if item.key and item.key in seen_texts:  # e.g. a pattern whose text is this problem's own insight
            continue
        if config.token_budget > 0 and fits(item.line):
            line = item.line
        elif config.token_budget > 0 and not lines and item.body:
            shortened = _shorten(item, fits)
            truncated = True
            if shortened is None:
                continue
            line = shortened
        else:
            truncated = True
            continue
        lines.append(line)
        refs.append(item.ref)
        seen_texts.add(item.key)
    text = "\n".join(lines)
    return RetrievedMemory(text=text, item_refs=refs, n_tokens=count_tokens(text) if text else 0, truncated=truncated)
