"""Cross-problem consolidation: insights that recur across problems become patterns; patterns whose evidence
stops holding are retired, so memory forgets what the current policy no longer does.

The algorithm, run on a schedule by the trainer (`consolidate(store, step)`):

1. Group insights of the same kind by lexical similarity (token-set Jaccard over normalised, stemmed content
   words; identical normalised text counts as 1.0). Existing patterns seed the groups, so a recurring behaviour is
   matched to its pattern instead of being promoted twice. An insight already listed by a pattern stays with it;
   others join the most similar pattern, else the most similar new group (its leader = its most-supported
   member, whose text becomes the pattern text), else start a new group. Insights are visited most-supported
   first, so every choice is deterministic.
2. A group's evidence holds when its insights were confirmed (updated_step) within `stale_after_steps` of `step`
   by at least `min_problems` distinct problems.
3. Among groups whose evidence holds, the `max_active` best (most supporting problems, then most fresh problems,
   then most total support; existing patterns win ties) are active: new ones are promoted, retired ones
   re-activated, active ones updated when their insights/support changed. Every other pattern is retired.

`plan` is pure (insights + patterns in, actions out); `consolidate` applies a plan in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pmd.config import ConsolidationConfig
from pmd.memory.store import Insight, MemoryStore, Pattern
from pmd.memory.text import jaccard, normalize_text, tokenize


@dataclass(frozen=True)
class ConsolidationReport:
    """What one consolidation changed (for logs)."""

    promoted: int = 0  # new active patterns
    updated: int = 0  # active patterns whose insights/support changed
    retired: int = 0  # active -> retired (stale evidence or over max_active)
    reactivated: int = 0  # retired -> active (evidence returned)


@dataclass(frozen=True)
class PatternAction:
    """One change to apply: `pattern_id` None means create."""

    pattern_id: int | None
    kind: str
    text: str
    status: str
    support_problems: int
    insight_ids: tuple[int, ...]
    counted_as: str | None  # "promoted" | "updated" | "retired" | "reactivated" | None (silent bookkeeping)


@dataclass
class _Group:
    kind: str
    text: str
    norm: str
    tokens: frozenset[str]
    pattern: Pattern | None = None
    leader_id: int = 0
    members: list[Insight] = field(default_factory=list)


def _similarity(a_norm: str, a_tokens: frozenset[str], b: _Group) -> float:
    return 1.0 if a_norm == b.norm else jaccard(a_tokens, b.tokens)


def _best(groups: list[_Group], norm: str, tokens: frozenset[str], threshold: float) -> _Group | None:
    """The most similar group at or above the threshold; the earliest one on ties."""
    best, best_sim = None, threshold
    for g in groups:
        sim = _similarity(norm, tokens, g)
        if sim > best_sim or (best is None and sim >= best_sim):
            best, best_sim = g, sim
    return best


def group_insights(
    insights: list[Insight], patterns: list[Pattern], threshold: float
) -> tuple[list[_Group], list[_Group]]:
    """Step 1 of the module docstring: (groups seeded by existing patterns, new groups)."""
    seeded = [
        _Group(p.kind, p.text, normalize_text(p.text), frozenset(tokenize(p.text)), pattern=p)
        for p in sorted(patterns, key=lambda p: p.id or 0)
    ]
    sticky: dict[int, _Group] = {}
    for g in seeded:
        for iid in g.pattern.insight_ids:  # type: ignore[union-attr]
            sticky.setdefault(iid, g)
    new: list[_Group] = []
    for ins in sorted(insights, key=lambda i: (-i.support, -i.updated_step, i.id or 0)):
        norm, tokens = normalize_text(ins.text), frozenset(tokenize(ins.text))
        g = sticky.get(ins.id or -1)
        if g is None or g.kind != ins.kind:
            g = _best([s for s in seeded if s.kind == ins.kind], norm, tokens, threshold)
        if g is None:
            g = _best([n for n in new if n.kind == ins.kind], norm, tokens, threshold)
        if g is None:
            g = _Group(ins.kind, ins.text, norm, tokens, leader_id=ins.id or 0)
            new.append(g)
        g.members.append(ins)
    return seeded, new


def plan(
    insights: list[Insight], patterns: list[Pattern], step: int, config: ConsolidationConfig = ConsolidationConfig()
) -> list[PatternAction]:
    """Pure core of `consolidate`: the pattern changes that make memory agree with the insights at `step`."""
    seeded, new = group_insights(insights, patterns, config.similarity_threshold)

    def problems(g: _Group) -> int:
        return len({m.problem_uid for m in g.members})

    def fresh(g: _Group) -> int:
        return len({m.problem_uid for m in g.members if step - m.updated_step <= config.stale_after_steps})

    def rank(g: _Group) -> tuple:
        existing = g.pattern is not None
        return (-problems(g), -fresh(g), -sum(m.support for m in g.members), not existing,
                g.pattern.id if existing else g.leader_id)  # type: ignore[union-attr]

    holding = sorted((g for g in seeded + new if fresh(g) >= config.min_problems), key=rank)
    active = {id(g) for g in holding[: config.max_active]}

    actions: list[PatternAction] = []
    for g in seeded:
        p = g.pattern
        assert p is not None
        ids = tuple(sorted(m.id for m in g.members if m.id is not None))
        support = problems(g)
        changed = ids != tuple(sorted(p.insight_ids)) or support != p.support_problems
        if id(g) in active:
            counted = "reactivated" if p.status == "retired" else ("updated" if changed else None)
            status = "active"
        else:
            counted = "retired" if p.status == "active" else None
            status = "retired"
        if counted is not None or changed:
            actions.append(PatternAction(p.id, p.kind, p.text, status, support, ids, counted))
    for g in new:
        if id(g) in active:
            ids = tuple(sorted(m.id for m in g.members if m.id is not None))
            actions.append(PatternAction(None, g.kind, g.text, "active", problems(g), ids, "promoted"))
    return actions


def consolidate(
    store: MemoryStore, step: int, config: ConsolidationConfig = ConsolidationConfig()
) -> ConsolidationReport:
    """Bring the store's patterns in line with its insights at `step` (see the module docstring), atomically."""
    actions = plan(store.insights(), store.patterns(status=None), step, config)
    counts = {"promoted": 0, "updated": 0, "retired": 0, "reactivated": 0}
    with store.transaction():
        for a in actions:
            if a.pattern_id is None:
                store.add_pattern(
                    a.kind, a.text, a.insight_ids, a.support_problems, step, status=a.status  # type: ignore[arg-type]
                )
            else:
                store.update_pattern(
                    a.pattern_id, step, status=a.status, support_problems=a.support_problems,  # type: ignore[arg-type]
                    insight_ids=a.insight_ids,
                )
            if a.counted_as is not None:
                counts[a.counted_as] += 1
    return ConsolidationReport(**counts)
