"""Ageing of insights: an insight that recent evidence contradicts is retired, so the teacher stops reading advice
about a policy that no longer exists.

Without this only patterns retired (issue 12, point 3): a lesson about a mistake the policy stopped making 50 steps
ago kept its place in every teacher prompt. The evidence is the problem's own attempts since the insight was last
confirmed (`updated_step`; reflection re-confirms an insight each time it sees it again, and a re-confirmed retired
insight becomes active again, see `MemoryStore.upsert_insight`):

- a lesson is retired once the last `lesson_stale_after_attempts` of those attempts show no recurrence of its
  mistake: no failure of its failure kind (its tag), or, for an untagged lesson, no failure at all;
- a strategy is retired once the last `strategy_failed_attempts` of those attempts all failed: what it describes
  no longer gets this policy to a pass on its own problem.

Patterns follow their insights: consolidation (memory/patterns.py) reads active insights only, so a pattern whose
insights all retired has no evidence left and retires too.

`retirements` is pure (insights + attempts in, insight ids out); `age` applies it to the problems that had new
attempts since the previous run of the schedule (a decision changes only when its problem gets new attempts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pmd.config import ConsolidationConfig
from pmd.memory.store import Experience, Insight, MemoryStore


@dataclass(frozen=True)
class AgeingReport:
    """What one ageing pass retired (for logs)."""

    lessons: int = 0
    strategies: int = 0


def _since(ins: Insight, attempts: Sequence[Experience]) -> list[Experience]:
    """The attempts on the insight's problem after it was last confirmed, oldest first."""
    return sorted((e for e in attempts if e.step > ins.updated_step), key=lambda e: (e.step, e.sample_index))


def lesson_contradicted(ins: Insight, attempts: Sequence[Experience], n: int) -> bool:
    """True when the last `n` attempts since the lesson was confirmed show no recurrence of its mistake (a failure
    of kind `ins.tag`; any failure when the lesson has no tag). `n` = 0 never retires."""
    recent = _since(ins, attempts)[-n:] if n > 0 else []
    if len(recent) < n or n == 0:
        return False
    return not any((not e.passed) and (e.failure_kind == ins.tag if ins.tag else True) for e in recent)


def strategy_contradicted(ins: Insight, attempts: Sequence[Experience], k: int) -> bool:
    """True when the last `k` attempts since the strategy was confirmed all failed. `k` = 0 never retires."""
    recent = _since(ins, attempts)[-k:] if k > 0 else []
    return k > 0 and len(recent) == k and not any(e.passed for e in recent)


def retirements(insights: Sequence[Insight], attempts: Mapping[str, Sequence[Experience]],
                config: ConsolidationConfig = ConsolidationConfig()) -> list[int]:
    """Ids of the active insights that their problem's `attempts` contradict, in id order."""
    out = []
    for ins in insights:
        if ins.status != "active" or ins.id is None:
            continue
        exps = attempts.get(ins.problem_uid, ())
        if ins.kind == "lesson" and lesson_contradicted(ins, exps, config.lesson_stale_after_attempts):
            out.append(ins.id)
        elif ins.kind == "strategy" and strategy_contradicted(ins, exps, config.strategy_failed_attempts):
            out.append(ins.id)
    return sorted(out)


def age(store: MemoryStore, step: int, since_step: int,
        config: ConsolidationConfig = ConsolidationConfig()) -> AgeingReport:
    """Retire, at `step`, the active insights of problems with attempts at step >= `since_step` that those
    attempts contradict (see the module docstring). One transaction."""
    if config.lesson_stale_after_attempts == 0 and config.strategy_failed_attempts == 0:
        return AgeingReport()
    retire: list[Insight] = []
    for uid in store.problems_with_experience_since(since_step):
        insights = store.insights(problem_uid=uid)
        if not insights:
            continue
        exps = store.experiences(problem_uid=uid, since_step=min(i.updated_step for i in insights) + 1)
        ids = set(retirements(insights, {uid: exps}, config))
        retire += [i for i in insights if i.id in ids]
    with store.transaction():
        for ins in retire:
            store.retire_insight(ins.id, step)  # type: ignore[arg-type]
    return AgeingReport(lessons=sum(i.kind == "lesson" for i in retire),
                        strategies=sum(i.kind == "strategy" for i in retire))
