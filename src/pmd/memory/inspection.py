"""What `pmd memory show` and `pmd memory stats` say about a store, as text and data the CLI only prints.

Kept apart from the CLI (which parses, checks paths and prints) so that a notebook or a test reads a run's memory
the way the command shows it, without a subprocess or captured stdout. Both read only: the caller opens the store
read-only (`MemoryStore.open_existing(..., read_only=True)`), and nothing here writes. `pmd memory export` is the
store's own `export_jsonl`.

Steps are shown as metrics.jsonl and the trackers number them (the Trainer's 1-based `global_step`). The store
keeps the 0-based step whose rollouts were trained on (what resume, retrieval and ageing compare), so the display
adds one (`shown_step`) and never the stored value: a memory seeded from an earlier run (`memory.load_from`) has
steps < 0 there, shown as <= 0.

`show` bounds every listing to `limit` entries (the first insights and patterns, which are ordered by support; the
latest attempts and retrievals) and says in the listing's header when some were left out, so its output stays
readable on a paper-scale store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import PMDError
from .retrieve import level_fractions
from .store import Insight, MemoryStore

_T = TypeVar("_T")


def shown_step(step: int) -> int:
    """A stored (0-based) memory step as metrics.jsonl numbers it (1-based global_step)."""
    return step + 1


def stats(store: MemoryStore) -> dict[str, Any]:
    """`pmd memory stats`: the size of every level, the number of logged teacher calls, and which fraction of
    what those calls were shown came from each level."""
    refs = [r for _, r in store.retrieval_item_refs()]  # each logged teacher call
    return {**store.counts(), "teacher_calls": len(refs), "level_fraction": level_fractions(refs)}


def listing(title: str, items: list[_T], limit: int, latest: bool = False) -> tuple[str, list[_T]]:
    """(header, the first or latest `limit` items): the header says when some were left out."""
    shown = items[-limit:] if latest else items[:limit]
    more = (f" ({'latest' if latest else 'first'} {len(shown)} of {len(items)}; --limit N for more)"
            if len(shown) < len(items) else "")
    return f"# {title}{more}", shown


def _section(title: str, items: list[_T], limit: int, entry: Callable[[_T], str], latest: bool = False) -> list[str]:
    """A listing's header, then one entry per shown item."""
    header, shown = listing(title, items, limit, latest)
    return [header, *(entry(item) for item in shown)]


def show(store: MemoryStore, problem: str | None = None, level: str = "all", limit: int = 20,
         facts: ProblemFacts | None = None) -> list[str]:
    """`pmd memory show`, one printed line per item (an entry may span lines): one problem's history (attempts,
    insights, what its teacher saw) when `problem` is given, else the listings of `level` (all = insights, patterns,
    experiences). Every listing holds at most `limit` entries. Raises PMDError naming the store for a problem it
    does not hold. Lines, not one string: the CLI prints them one by one, so a reader that leaves early (`| head`)
    is still seen as a closed stdout (one write of the whole text can fit in the pipe before the reader leaves).
    `facts`: the problem's question and reference answer from the run's config (`problem_facts`)."""
    return _problem(store, problem, limit, facts) if problem else _levels(store, level, limit)


@dataclass(frozen=True)
class ProblemFacts:
    """A problem's question and reference answer, or why they are unknown (`problem_facts`)."""

    question: str | None = None
    reference: str | None = None
    unknown: str = ""  # why the run's environments could not say (empty: they did)


def problem_facts(config: Path, problem: str) -> ProblemFacts:
    """The question and reference answer of `problem`, from the run's environments (`config`, the run's
    config.yaml beside its store); never raises: a store without its run, or a run whose data moved, still shows
    its memory, saying why the reference is missing."""
    if not config.is_file():
        return ProblemFacts(unknown=f"no {config.name} beside the store")
    from ..config import load_config
    from ..envs import EnvironmentSuite

    try:
        suite = EnvironmentSuite.from_config(load_config(config).env)
        p = suite.problem(problem)
    except KeyError:
        return ProblemFacts(unknown=f"the run's environments ({config}) have no problem {problem!r}")
    except Exception as exc:  # the run's data or config unreadable now: shown, not raised (read-only inspection)
        return ProblemFacts(unknown=f"the run's environments could not be loaded ({' '.join(str(exc).split())[:200]})")
    return ProblemFacts(suite.format_prompt(p), p.answer)


def _problem(store: MemoryStore, problem: str, limit: int, facts: ProblemFacts | None = None) -> list[str]:
    experiences = store.experiences(problem_uid=problem)
    insights = store.insights(problem_uid=problem, status=None)
    retrievals = store.retrievals(problem_uid=problem)
    if not (experiences or insights or retrievals):
        raise PMDError(f"{store.path}: no problem {problem!r} in this memory (problem ids: pmd memory show RUN "
                       "--level experiences)")

    def insight(i: Insight) -> str:
        retired = f", retired at step {shown_step(i.retired_step)}" if i.status == "retired" else ""
        return f"[{i.kind} x{i.support}, step {shown_step(i.updated_step)}{retired}] {i.text}"

    facts = facts or ProblemFacts(unknown="not looked up")
    question = facts.question or (experiences[0].prompt if experiences else None)  # memory keeps the question
    reference = (facts.reference if facts.reference is not None
                 else f"unknown ({facts.unknown})" if facts.unknown else "none (the task has no reference answer)")
    return [
        f"# problem {problem}",
        *(f"question: {line}" if i == 0 else f"  {line}"
          for i, line in enumerate((question or "unknown").splitlines())),
        f"reference: {reference}",
        *_section("attempts", experiences, limit, latest=True,
                  entry=lambda e: f"[step {shown_step(e.step)} #{e.sample_index}] reward={e.reward:.2f} "
                                  f"passed={e.passed} answer={e.answer!r}: {e.response.strip()[:160]!r}\n"
                                  f"    feedback: {e.feedback}"),
        *_section("insights", insights, limit, insight),
        *_section("what its teacher saw", retrievals, limit, latest=True,
                  entry=lambda r: f"[teacher saw at step {shown_step(r.step)}, {r.n_tokens} tokens, {r.item_refs}]\n"
                                  f"{r.text}"),
    ]


def _levels(store: MemoryStore, level: str, limit: int) -> list[str]:
    lines: list[str] = []
    if level in ("insights", "all"):  # retired ones (contradicted by recent attempts) get their own listing
        lines += _section("insights", store.insights(), limit,
                          lambda i: f"[{i.kind} x{i.support}] {i.problem_uid}: {i.text}")
        retired = store.insights(status="retired")
        if retired:
            lines += _section("retired insights", retired, limit,
                              lambda i: f"[{i.kind} x{i.support}, retired at step {shown_step(i.retired_step)}] "
                                        f"{i.problem_uid}: {i.text}")
    if level in ("patterns", "all"):
        lines += _section("patterns", store.patterns(), limit,
                          lambda p: f"[{p.kind}, {p.support_problems} problems, since step "
                                    f"{shown_step(p.created_step)}] {p.text}")
        retired = store.patterns(status="retired")
        if retired:
            lines += _section("retired patterns", retired, limit,
                              lambda p: f"[{p.kind}, {p.support_problems} problems, retired, last changed at step "
                                        f"{shown_step(p.updated_step)}] {p.text}")
    if level in ("experiences", "all"):
        lines += _section("experiences", store.experiences(), limit, latest=True,
                          entry=lambda e: f"[step {shown_step(e.step)}] {e.problem_uid} reward={e.reward:.2f}: "
                                          f"{e.response.strip()[:120]!r}")
    if level == "retrievals":
        lines += _section("retrievals", store.retrievals(), limit, latest=True,
                          entry=lambda r: f"[step {shown_step(r.step)}] {r.problem_uid} ({r.n_tokens} tokens): "
                                          f"{r.text[:200]!r}")
    return lines
