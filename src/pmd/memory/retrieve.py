"""Retrieval for the self-teacher: the most useful memory for one problem, packed under a token budget by level.

Four levels, in priority order (within a level, earlier items win):
1. experience: this problem's best past attempt that passed (highest age-weighted reward, then most recent; where
   none passed, the best success, `pmd.rewards.is_success`: e.g. a right value without the format, labelled so),
   then its most useful failure (most recent attempt with non-empty feedback that is not a success);
2. insight: its own insights (strategies, then lessons, each by age-weighted support);
3. pattern: active patterns most similar to the problem (same family first, then BM25 over question + family);
4. similar: insights of the most similar other problems (same family first, then BM25 over their prompts), except
   those that carry their problem's numbers or quotes (`patterns.problem_specific`).

Budget by level (`pack`, a pure function). Each level has a reserved share of `token_budget`
(`memory.retrieval.level_shares`, default experience 0.35, insight 0.25, pattern 0.2, similar 0.2). Pass 1 adds, in
priority order, each item that fits its level's remaining share (each line counted alone) and the whole budget.
Pass 2 hands out everything left (unused shares, the unreserved rest) in priority order: an item that fits is added,
an attempt that does not is shortened in the middle to the room left. So raw attempts no longer crowd out insights
and patterns, and no budget is left unused while something would fit. The final text keeps priority order; the hard
cap is always checked with `count_tokens` on the whole text.

Duplicates (`dedupe`): items with the same normalised text are shown once, at the most general level: a pattern
over an own insight over a similar problem's insight. A pattern equal to one of this problem's insights is shown as
the pattern (it says the behaviour held across problems) and counts as the pattern level.

Ageing (`recency_weight`): an item's weight halves every `recency_half_life_steps` steps of age (0 = off): an
insight scores support x 0.5^((now - updated_step) / half_life), a passing attempt reward x 0.5^((now - step) /
half_life), so a lesson confirmed long ago gives way to a recent one. `now` is the current step (the step whose
rollouts are excluded), else the newest step in memory.

One answer form (`one_answer_form`): the verifier accepts several strict answer forms (a final line 'Answer: <answer>',
\\boxed{}, a final sentence 'The answer is <answer>'), so memory can hold advice for each: a lesson "finish with a
final line 'Answer: <answer>'" beside a pattern "end with one sentence 'The answer is <answer>'" (seen by `pmd explain`
in issue 13's runs). A teacher told two forms at once sharpens neither. So insights and patterns that advise a form
other than the one the student's prompt asks for (`advised_answer_form` of the prompt) are left out; when the prompt
names none, the first form in priority order is kept. Attempts are evidence, not advice, and are never dropped.

Item refs name the level and the row: `experience:ID`, `insight:ID`, `pattern:ID`, `similar:ID` (an insight of
another problem); `ref_level` reads the level back (per-step `pmd/memory_level_frac/*`, `pmd memory stats`).
Lexical similarity only: deterministic and independent of the policy's drift. Attempts from
`exclude_experience_step` are skipped, so the teacher does not see the current step's own rollouts.

Two controls of issue 25 (`pmd compare`'s pmd-same-problem and pmd-placebo arms): `scope: same_problem` keeps levels
1-2 only (this problem's attempts and insights: no pattern, no other problem), and `placebo_memory` replaces a
non-empty retrieval by a fixed note with no information (`prompts.PLACEBO_MEMORY`), so the teacher is active on the
same rows as with the real memory but learns nothing from it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pmd.config import RetrievalConfig
from pmd.envs.base import Problem
from pmd.memory.index import problem_index
from pmd.memory.patterns import problem_specific  # another problem's numbers or quotes never reach this teacher
from pmd.memory.store import Experience, Insight, MemoryStore, RetrievalRecord
from pmd.memory.text import normalize_text, tokenize
from pmd.prompts import ELLIPSIS, FAILED_ATTEMPT, PLACEBO_MEMORY, insight_line, pattern_line, success_label

LEVELS: tuple[str, ...] = ("experience", "insight", "pattern", "similar")
_DEDUPE_RANK = {"pattern": 0, "insight": 1, "similar": 2}  # which copy of a repeated text is kept (lowest)


def ref_level(ref: str) -> str:
    """The level an item ref names ("similar:12" -> "similar"); refs logged before levels were named
    ("insight:12" for a similar problem's insight too) read as their table."""
    return ref.split(":", 1)[0]


def token_counter(tokenizer) -> Callable[[str], int]:
    """Tokens of a text in `tokenizer`'s vocabulary, as the retrieval budget counts them (no special tokens)."""
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
    return count


def level_fractions(refs_per_call: Sequence[Sequence[str]]) -> dict[str, float]:
    """For each level, the fraction of teacher calls whose retrieved memory holds at least one item of it."""
    n = len(refs_per_call)
    counts = dict.fromkeys(LEVELS, 0)
    for refs in refs_per_call:
        for level in {ref_level(r) for r in refs}:
            if level in counts:
                counts[level] += 1
    return {level: (c / n if n else 0.0) for level, c in counts.items()}


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
class Item:
    """One candidate line: its level, ref, label (`head`), the part that may be shortened (`body`, an attempt's
    response; "" otherwise) and its normalised text for de-duplication ("" = never a duplicate)."""

    level: str
    ref: str
    head: str
    body: str = ""
    key: str = ""

    @property
    def line(self) -> str:
        return self.head + self.body


# ------------------------------------------------------------------------------------------- pure decisions


def recency_weight(age_steps: float, half_life_steps: float) -> float:
    """0.5^(age / half_life): 1 for an item from now, 0.5 one half-life ago; 1 always when ageing is off (0).
    A negative age (an item newer than `now`, e.g. a seeded store) counts as 0."""
    if half_life_steps <= 0:
        return 1.0
    return 0.5 ** (max(0.0, age_steps) / half_life_steps)


def rank_insights(insights: Sequence[Insight], now: int | None, half_life_steps: float) -> list[Insight]:
    """Strategies before lessons; within a kind by support x recency weight, then most recently confirmed, then id."""
    def key(i: Insight) -> tuple:
        w = recency_weight((now - i.updated_step) if now is not None else 0, half_life_steps)
        return (i.kind != "strategy", -i.support * w, -i.updated_step, i.id or 0)

    return sorted(insights, key=key)


def best_attempt(attempts: Sequence[tuple[int, float, int]], now: int | None, half_life_steps: float) -> int | None:
    """The id among (id, reward, step) with the highest reward x recency weight, then the most recent, then the
    latest id; None when there is none."""
    def key(a: tuple[int, float, int]) -> tuple:
        ident, reward, step = a
        return (reward * recency_weight((now - step) if now is not None else 0, half_life_steps), step, ident)

    return max(attempts, key=key)[0] if attempts else None


_FORM_CUES = {  # how a line names each strict answer form of `pmd.envs.answer.extract_answer`
    "answer_line": re.compile(r"[\'\"]Answer:", re.IGNORECASE),
    "boxed": re.compile(r"\\boxed\{"),
    "final_sentence": re.compile(r"[\'\"]The answer is\b", re.IGNORECASE),
}


def advised_answer_form(text: str) -> str | None:
    """The one strict answer form `text` tells the reader to use ("answer_line", "boxed", "final_sentence"), or None
    when it names none or several (feedback such as "no line 'Answer: <answer>' and no \\boxed{}" advises none)."""
    named = [form for form, cue in _FORM_CUES.items() if cue.search(text)]
    return named[0] if len(named) == 1 else None


def one_answer_form(items: Sequence[Item], asked: str | None) -> list[Item]:
    """`items` without the insights and patterns that advise an answer form other than `asked` (the form the
    student's prompt asks for) or, when `asked` is None, other than the first form advised in priority order.
    Attempts (the experience level) are kept whatever form they used."""
    keep = asked
    out: list[Item] = []
    for it in items:
        form = None if it.level == "experience" else advised_answer_form(it.line)
        if form is not None:
            keep = keep or form
            if form != keep:
                continue
        out.append(it)
    return out


def dedupe(items: Sequence[Item]) -> list[Item]:
    """Items in their order, each normalised text kept once: at the most general level (pattern, then own insight,
    then similar problem's insight), the earliest among equals."""
    keep: dict[str, Item] = {}
    for it in items:
        if it.key and (it.key not in keep or _DEDUPE_RANK.get(it.level, 9) < _DEDUPE_RANK.get(keep[it.key].level, 9)):
            keep[it.key] = it
    return [it for it in items if not it.key or keep[it.key] is it]


def pack(items: Sequence[Item], count_tokens: Callable[[str], int], budget: int,
         shares: Mapping[str, float]) -> tuple[list[tuple[Item, str]], bool]:
    """Choose the lines to show under `budget` (see the module docstring: pass 1 by reserved share, pass 2 the rest
    in priority order, shortening attempts). Returns (item, line) in `items` order and whether anything was left out
    or shortened. Deterministic given `count_tokens`; the result's joined text always counts <= `budget`."""
    chosen: dict[int, str] = {}

    def fits(index: int, line: str) -> bool:
        lines = [chosen[i] if i != index else line for i in sorted({*chosen, index})]
        return count_tokens("\n".join(lines)) <= budget

    if budget > 0:
        quota = {level: int(shares.get(level, 0.0) * budget) for level in LEVELS}
        used = dict.fromkeys(LEVELS, 0)
        for i, it in enumerate(items):  # pass 1: each level within its reserved share
            cost = count_tokens(it.line)
            if used.get(it.level, 0) + cost <= quota.get(it.level, 0) and fits(i, it.line):
                chosen[i] = it.line
                used[it.level] = used.get(it.level, 0) + cost
        for i, it in enumerate(items):  # pass 2: what is left, in priority order
            if i in chosen:
                continue
            if fits(i, it.line):
                chosen[i] = it.line
            elif it.body:
                shortened = _shorten(it, lambda line, i=i: fits(i, line))
                if shortened is not None:
                    chosen[i] = shortened
    out = [(items[i], chosen[i]) for i in sorted(chosen)]
    truncated = len(out) < len(items) or any(line != it.line for it, line in out)
    return out, truncated


# ------------------------------------------------------------------------------------------- candidates


def _insight_item(ins: Insight, similar: bool) -> Item:
    text = " ".join(ins.text.split())
    level = "similar" if similar else "insight"
    return Item(level, f"{level}:{ins.id}", insight_line(ins.kind, text, ins.support, similar), "",
                normalize_text(text))


def _candidates(store: MemoryStore, problem: Problem, config: RetrievalConfig, exclude_step: int | None,
                now: int | None, success_threshold: float = 1.0) -> list[Item]:
    half_life = config.recency_half_life_steps
    now = now if now is not None else store.newest_step()
    items: list[Item] = []
    if config.include_experience:
        # successes (`pmd.rewards.is_success`), a verifier's pass first: a right value without the format is shown
        # (and labelled so) only where nothing passed, and is never filed with the failures
        best_id = best_attempt(store.passing_attempts(problem.uid, exclude_step, math.inf)
                               or store.passing_attempts(problem.uid, exclude_step, success_threshold), now, half_life)
        best = store.experience(best_id) if best_id is not None else None
        if best is not None:
            items.append(Item("experience", f"experience:{best.id}", success_label(best.passed, best.failure_kind),
                              best.response.strip()))
        fail: Experience | None = store.latest_failure_with_feedback(problem.uid, exclude_step, success_threshold)
        if fail is not None:
            feedback = " ".join(fail.feedback.split())
            if len(feedback) > config.max_feedback_chars:
                feedback = feedback[: config.max_feedback_chars].rstrip() + "..."
            items.append(Item("experience", f"experience:{fail.id}", FAILED_ATTEMPT.format(feedback=feedback),
                              fail.response.strip()))
    if not (config.include_insights or config.include_patterns):
        return items
    index = problem_index(store)
    if config.include_insights:
        own = rank_insights(store.active_insights_of([problem.uid]).get(problem.uid, []), now, half_life)
        items += [_insight_item(i, similar=False) for i in own[: config.max_own_insights]]
    if config.scope == "same_problem":  # the pmd-same-problem control: no pattern, no other problem's insight
        return items
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
            items.append(Item("pattern", f"pattern:{p.id}", pattern_line(text, p.support_problems), "",
                              normalize_text(text)))
    if config.include_insights and config.max_similar_problems > 0:
        for theirs in _similar_insights(store, index, query, problem, config.max_similar_problems):
            ranked_theirs = [i for i in rank_insights(theirs, now, half_life) if not problem_specific(i.text)]
            items += [_insight_item(i, similar=True) for i in ranked_theirs[: config.max_insights_per_similar_problem]]
    return items


def _similar_insights(store: MemoryStore, index, query: list[str], problem: Problem, k: int) -> list[list[Insight]]:
    """Active insights of the `k` most similar other problems that have any (problems whose insights all retired
    are passed over): ask the index for a few more candidates than needed, widening until enough or none left."""
    want = k + 4
    while True:
        uids = index.ranked_problems(query, problem.family, problem.uid, want)
        found = store.active_insights_of(uids)
        picked = [found[u] for u in uids if u in found][:k]
        if len(picked) >= k or len(uids) < want:
            return picked
        want *= 4


def _shorten(item: Item, fits: Callable[[str], bool]) -> str | None:
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
    now: int | None = None,
    prompt: str = "",
    success_threshold: float = 1.0,
) -> RetrievedMemory:
    """Pack the memory most useful to the teacher for `problem` (see the module docstring). Deterministic. `now`:
    the step ages are measured from (default: `exclude_experience_step`, else the newest step in memory). `prompt`:
    the student's prompt for `problem` (question and answer instruction), whose answer form memory must not
    contradict ("" = the first form memory advises). `success_threshold`: the run's train.success_reward_threshold;
    an attempt at or above it is shown as a success, never as a failure (`pmd.rewards.is_success`)."""
    now = now if now is not None else exclude_experience_step
    candidates = _candidates(store, problem, config, exclude_experience_step, now, success_threshold)
    items = dedupe(one_answer_form(candidates, advised_answer_form(prompt)))
    chosen, truncated = pack(items, count_tokens, config.token_budget, config.level_shares)
    text = "\n".join(line for _, line in chosen)
    return RetrievedMemory(text=text, item_refs=[it.ref for it, _ in chosen],
                           n_tokens=count_tokens(text) if text else 0, truncated=truncated)


def placebo_memory(found: RetrievedMemory, count_tokens: Callable[[str], int], budget: int) -> RetrievedMemory:
    """`memory.content: placebo` (the pmd-placebo control): what the teacher reads instead of `found`. Empty stays
    empty and anything else becomes `PLACEBO_MEMORY`, so PMD's activation rule (memory present or not) fires on
    exactly the rows the real memory would: what differs is content, not activation or dilution. Its lines are kept
    within `budget` as retrieval's are, but never fewer than the first: dropping it would change the activation.
    No item refs: no stored item reaches the teacher (the per-level fractions are 0, the retrieval log says so)."""
    if not found.text:
        return found
    lines = PLACEBO_MEMORY.split("\n")
    kept = lines[:1]
    for line in lines[1:]:
        if count_tokens("\n".join([*kept, line])) > budget:
            break
        kept.append(line)
    text = "\n".join(kept)
    return RetrievedMemory(text=text, item_refs=[], n_tokens=count_tokens(text), truncated=len(kept) < len(lines))
