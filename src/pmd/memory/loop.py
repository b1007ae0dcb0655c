"""Co-evolution: the policy's rollouts grow the memory; the memory shapes the teacher.

`MemoryLoop` is the memory's whole interface to training; the step (step.py) calls it in its phases:
- `retrieve(problem_uids, step)` (teacher_context): memory for each sample's teacher, as it was *before* this step;
  it reads, never writes (`memory.content: placebo` puts a note with no information in place of what it found);
- `record(step, judged, retrieved)` (after_update): every rollout becomes experience (with its structured outcome:
  the extracted answer and the failure kind), and what each teacher saw is logged;
- `maybe_reflect(step)`, then `maybe_consolidate(step)` (after_update): reflection (insights), then on the
  consolidation schedule ageing (insights that recent attempts contradict retire) and consolidation (patterns);
- `state_dict()` / `load_state_dict()`: its cumulative counters, saved with each checkpoint and restored on resume.

Freezing memory (`memory.mode: frozen`) stops recording, reflection and consolidation after
`freeze_after_steps`; retrieval continues from the frozen store.

On several processes only the main process holds the store: it retrieves for the global batch and broadcasts the
texts (so every rank builds its teachers from the same memory, with no filesystem shared between nodes), records,
reflects and consolidates. When the policy writes the reflections, the other ranks take part in its generation
(`SharedGeneration`), because sharded parameters need every rank in every forward pass.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..config import MemoryConfig
from ..dist import Ranks, SharedGeneration
from ..envs import EnvironmentSuite, Verdict
from ..rewards import Judged
from .ageing import age
from .patterns import ModelPatternWriter, consolidate
from .reflect import ReflectionResult, Reflector
from .retrieve import RetrievedMemory, placebo_memory, retrieve
from .store import Experience, MemoryStore

logger = logging.getLogger(__name__)
LAST_REFLECTED = "last_reflected_step"


@dataclass
class LoopStats:
    """Cumulative counters the trainer logs each step (saved with checkpoints, so resume continues them)."""

    reflections: int = 0
    proposed: int = 0
    accepted: int = 0
    promoted: int = 0
    retired: int = 0
    insights_retired: int = 0
    pattern_texts_rejected: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class MemoryLoop:
    def __init__(self, store: MemoryStore | None, cfg: MemoryConfig, suite: EnvironmentSuite,
                 count_tokens: Callable[[str], int], reflector: Reflector, ranks: Ranks | None = None,
                 shared: SharedGeneration | None = None, success_threshold: float = 1.0):
        self.success_threshold = success_threshold  # train.success_reward_threshold: what memory files as a success
        self.ranks = ranks or Ranks()
        self.shared = shared  # the reflector's generation, when every rank must take part in it
        if self.ranks.is_main == (store is None):
            raise ValueError("the main process holds the memory store, and only it")
        self.store = store
        self.cfg = cfg
        self.suite = suite
        self.count_tokens = count_tokens
        self.reflector = reflector
        self.stats = LoopStats()

    def state_dict(self) -> dict:
        """The cumulative counters a checkpoint keeps (its manifest's `loop_stats`)."""
        return asdict(self.stats)

    def load_state_dict(self, state: dict) -> None:
        self.stats = LoopStats(**state)

    def growing(self, step: int) -> bool:
        """Whether memory still learns at `step` (False once a frozen memory has been frozen)."""
        return self.cfg.mode == "evolving" or step < self.cfg.freeze_after_steps

    # ------------------------------------------------------------------------------------ teacher side

    def retrieve(self, problem_uids: list[str], step: int) -> list[RetrievedMemory]:
        """Memory for each sample's teacher (one retrieval per distinct problem), this step's rollouts excluded.
        Every rank calls this with the same global batch; the main process retrieves and broadcasts."""
        by_uid: dict[str, RetrievedMemory] = {}
        if self.store is not None:
            for uid in problem_uids:
                if uid not in by_uid:
                    problem = self.suite.problem(uid)
                    by_uid[uid] = retrieve(self.store, problem, self.count_tokens, self.cfg.retrieval,
                                           exclude_experience_step=step, prompt=self.suite.format_prompt(problem),
                                           success_threshold=self.success_threshold)
                    if self.cfg.content == "placebo":  # the pmd-placebo control: same activation, no information
                        by_uid[uid] = placebo_memory(by_uid[uid], self.count_tokens, self.cfg.retrieval.token_budget)
        by_uid = self.ranks.broadcast(by_uid)
        return [by_uid[uid] for uid in problem_uids]

    def record(self, step: int, judged: list[Judged], retrieved: list[RetrievedMemory]) -> None:
        """Log what each teacher saw and store this step's rollouts as experience (one transaction each)."""
        if self.store is None:
            return
        self.store.log_retrieval([m.to_record(step, j.problem.uid, i)
                                  for i, (j, m) in enumerate(zip(judged, retrieved, strict=True))])
        if not self.growing(step):
            return
        self.store.add_experiences([
            Experience(
                problem_uid=j.problem.uid, family=j.problem.family, prompt=self.suite.format_prompt(j.problem),
                response=j.response, reward=j.verdict.reward, passed=j.verdict.passed,
                feedback=j.verdict.feedback, step=step, sample_index=i,
                answer=j.verdict.extracted, failure_kind=failure_kind_of(j.verdict),
            )
            for i, j in enumerate(judged)
        ])

    # ------------------------------------------------------------------------------------ schedule

    def maybe_reflect(self, step: int) -> ReflectionResult | None:
        """Reflect on problems with attempts since the last reflection, every `reflect_every` steps. Every rank
        calls this; the others only serve the generation of a model reflector."""
        if not self.growing(step) or (step + 1) % self.cfg.reflect_every:
            return None
        shared = self.shared
        if self.store is None:
            if shared is not None:
                shared.serve()
            return None
        last = self.store.meta_get(LAST_REFLECTED, -1)
        uids = self.store.problems_with_experience_since(last + 1)
        attempts = {uid: self.store.experiences(problem_uid=uid, since_step=last + 1) for uid in uids}
        with shared.session() if shared is not None else contextlib.nullcontext():
            result = self.reflector.reflect(attempts, {uid: self.suite.problem(uid).question for uid in uids})
        with self.store.transaction():
            for uid, drafts in _by_problem(attempts, result).items():
                for d in drafts:
                    self.store.upsert_insight(uid, self.suite.problem(uid).family, d.kind, d.text,
                                              self.reflector.name, list(d.experience_ids), step, tag=d.tag)
            self.store.meta_set(LAST_REFLECTED, step)
        s = self.stats
        s.reflections += 1
        s.proposed += result.proposed
        s.accepted += result.accepted
        for k, v in result.rejected_reasons.items():
            s.rejected[k] = s.rejected.get(k, 0) + v
        return result

    def maybe_consolidate(self, step: int):
        """Every `consolidate_every` steps: retire the insights that the attempts since the last run contradict,
        then promote and retire cross-problem patterns. With `consolidation.mode: model` the reflector's model
        writes new patterns, so every rank calls this and the others serve that generation."""
        if not self.growing(step) or (step + 1) % self.cfg.consolidate_every:
            return None
        model = self.cfg.consolidation.mode == "model"
        generate = getattr(self.reflector, "generate", None)
        if model and generate is None:  # on every rank, before any waits for another
            raise ValueError("consolidation.mode 'model' needs a model reflector (config validation checks this)")
        shared = self.shared if model else None
        if self.store is None:
            if shared is not None:
                shared.serve()
            return None
        aged = age(self.store, step, step + 1 - self.cfg.consolidate_every, self.cfg.consolidation)
        writer = (ModelPatternWriter(generate, self.cfg.consolidation.model_notes,  # type: ignore[arg-type]
                                     getattr(self.reflector, "system_prompt", "")) if model else None)
        with shared.session() if shared is not None else contextlib.nullcontext():
            report = consolidate(self.store, step, self.cfg.consolidation, writer)
        s = self.stats
        s.insights_retired += aged.lessons + aged.strategies
        s.promoted += report.promoted
        s.retired += report.retired
        s.pattern_texts_rejected += report.rejected
        return report

    def metrics(self) -> dict[str, float]:
        """Memory counts and reflection totals (main process; other ranks hold no store and report nothing)."""
        if self.store is None:
            return {}
        counts = self.store.counts()
        s = self.stats
        out = {f"memory/{k}": float(v) for k, v in counts.items()}
        out["memory/reflection_acceptance_rate"] = s.accepted / s.proposed if s.proposed else 0.0
        out["memory/reflection_proposed_total"] = float(s.proposed)
        for reason, n in sorted(s.rejected.items()):  # which filter fires (e.g. "tautology", "copied")
            out[f"memory/reflection_rejected_{reason}_total"] = float(n)
        out["memory/patterns_promoted_total"] = float(s.promoted)
        out["memory/patterns_retired_total"] = float(s.retired)
        out["memory/insights_retired_total"] = float(s.insights_retired)
        out["memory/pattern_texts_rejected_total"] = float(s.pattern_texts_rejected)
        return out


def failure_kind_of(verdict: Verdict) -> str:
    """The failure kind an experience stores: "" exactly when the rollout passed, and "other" for a failure whose
    environment named no kind (so a failed experience is never mistaken for a passing one)."""
    return "" if verdict.passed else verdict.failure_kind or "other"


def _by_problem(attempts: dict[str, list[Experience]], result: ReflectionResult) -> dict[str, list]:
    """Map drafts back to their problem through the experience ids they cite."""
    owner = {e.id: uid for uid, exps in attempts.items() for e in exps}
    out: dict[str, list] = {}
    for d in result.insights:
        uids = {owner[i] for i in d.experience_ids if i in owner}
        if len(uids) == 1:
            out.setdefault(uids.pop(), []).append(d)
    return out
