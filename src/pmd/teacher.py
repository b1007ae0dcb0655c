"""Who gets a teacher, and with what: PMD's activation rule as a pure function, plus thin glue for TRL's seam.

TRL's SDPOTrainer calls `trainer.teacher_context_builder.build(output, prompts, rewards, feedbacks)` right after the
rewards; the teacher input is `[teacher prompt, left-padded] + completion_ids` and both passes keep the last
`logits_to_keep` positions, so any teacher prompt works without remapping. `StepTeacherContext` is that seam, a
thin adapter to the step's `teacher_context` phase (step.py), which uses this module's parts:

- `plan_teachers` (pure): per sample, active or not, with which demonstration, feedback and memory;
- `TeacherRenderer`: the teacher prompt (prompts.teacher_text) tokenized within `max_reprompt_len`;
- `teacher_metrics`: what the step logs about them.

PMD's rule differs from SDPO's in one place: a sample's teacher is also active when memory holds something for
its problem or family, not only when a sibling succeeded or feedback exists. That is the cross-episode signal.
Everything else follows TRL's SDPO builder and the SDPO reference (lasgroup/SDPO): `use_successful_as_teacher`,
`dont_reprompt_on_self_success`, `include_environment_feedback`, `environment_feedback_only_without_solution`,
`remove_thinking_from_demonstration` and `reprompt_template` (whose {memory} field holds the memory block) mean
the same here; with every memory empty PMD's teacher prompts are TRL's, token for token
(tests/test_teacher_prompt.py runs both on one batch), as long as both pick the same demonstration: PMD shows the
best-reward successful sibling (`train.demo_choice: best`, `choose_demo`), TRL the first; they differ only where
successes score differently (graded rewards, e.g. lenient credit), and `demo_choice: first` is TRL's rule. SDPO
runs the same plan with no memory (step.py), so SDPO and PMD show the same sibling; under `demo_choice: first`
SDPO's teacher is TRL's builder itself.

One deliberate difference: a teacher prompt over `max_reprompt_len` is not simply cut from the left (TRL), which
drops the problem statement first; `fit_teacher_prompt` cuts memory first, then the demonstration, then the
feedback, and the problem only as a last resort (each counted per step: pmd/teacher_*_cut_fraction). The SDPO
baseline under `demo_choice: first` keeps TRL's builder and its left cut; where no prompt exceeds the limit, the
two agree exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from transformers.utils import logging
from trl.experimental.sdpo.sdpo_trainer import SuccessfulRolloutTeacherContextBuilder, _extract_last_user_text
from trl.trainer.utils import pad

from .phases import phase
from .prompts import teacher_text

if TYPE_CHECKING:
    from .memory.retrieve import RetrievedMemory

logger = logging.get_logger(__name__)


# ------------------------------------------------------------------------------------------- the pure plan


@dataclass(frozen=True)
class PlanSettings:
    """The SDPO settings the activation rule reads (a subset of SDPOConfig)."""

    group_size: int  # rollouts per problem; siblings are the other rollouts of the same group
    success_threshold: float  # reward at or above which a sibling is a demonstration
    use_successful_as_teacher: bool = True  # show a successful sibling's completion
    dont_reprompt_on_self_success: bool = True  # a rollout is never its own demonstration
    include_feedback: bool = True  # show this rollout's verifier feedback
    feedback_only_without_solution: bool = False  # show feedback only where no demonstration is shown
    demo_choice: str = "best"  # train.demo_choice: the best-reward sibling, or TRL's first above the threshold

    @classmethod
    def from_args(cls, args: Any, group_size: int, demo_choice: str = "best") -> PlanSettings:
        return cls(group_size, args.success_reward_threshold, args.use_successful_as_teacher,
                   args.dont_reprompt_on_self_success, args.include_environment_feedback,
                   args.environment_feedback_only_without_solution, demo_choice)


@dataclass(frozen=True)
class TeacherPlan:
    """What one sample's teacher sees. Inactive samples keep the student's prompt and are not distilled."""

    active: bool
    demo: int | None  # index (in the global batch) of the sibling whose completion is shown, if any
    feedback: str | None  # this rollout's feedback to show, if any
    memory: str  # retrieved memory to show ('' = none)


def choose_demo(rewards: Sequence[float], candidates: Sequence[int], threshold: float, choice: str = "best"
                ) -> int | None:
    """The sibling (an index among `candidates`, in group order) whose completion the teacher is shown, or None.

    "first": the first candidate with reward >= `threshold`, TRL's rule (trl/experimental/sdpo/sdpo_trainer.py,
    `SuccessfulRolloutTeacherContextBuilder.build`: `successful` collects the group's j >= threshold in order, self
    skipped under dont_reprompt_on_self_success, and the demo is `successful[0]`). "best" (default): the candidate
    with the highest reward among those >= `threshold`, the first of equals, so with graded rewards a strictly
    correct sibling (1.0) is shown before one with the right value but no format (lenient credit); with binary
    rewards every successful sibling ties and "best" is "first", TRL's choice exactly."""
    above = [j for j in candidates if rewards[j] >= threshold]
    if not above:
        return None
    if choice == "first":
        return above[0]
    return max(above, key=lambda j: (rewards[j], -j))


def plan_teachers(rewards: Sequence[float], feedback: Sequence[str | None], memory: Sequence[str],
                  settings: PlanSettings) -> list[TeacherPlan]:
    """PMD's activation rule for a global batch laid out group by group (`settings.group_size` rollouts each).

    Per sample: the demonstration is a sibling with reward >= threshold (itself excluded if so set), as in SDPO, the
    best-reward one or TRL's first (`choose_demo`, `settings.demo_choice`); feedback is shown when enabled and
    non-empty (and, with `feedback_only_without_solution`, only where there is no demonstration); memory is whatever
    retrieval returned for the problem. Active = any of the three.
    With every memory empty this is exactly SDPO's rule when the demonstrations agree: `demo_choice` "first", or
    rewards where every success scores the same (binary).
    """
    if not len(rewards) == len(feedback) == len(memory):
        raise ValueError(f"plan_teachers: {len(rewards)} rewards, {len(feedback)} feedbacks, {len(memory)} memories")
    n = settings.group_size
    plans = []
    for i, (fb, mem) in enumerate(zip(feedback, memory)):
        start = (i // n) * n
        demo = None
        if settings.use_successful_as_teacher:
            demo = choose_demo(rewards, [j for j in range(start, start + n)
                                         if not (settings.dont_reprompt_on_self_success and j == i)],
                               settings.success_threshold, settings.demo_choice)
        shown_feedback = fb if settings.include_feedback and isinstance(fb, str) and fb.strip() else None
        if settings.feedback_only_without_solution and demo is not None:
            shown_feedback = None
        plans.append(TeacherPlan(bool(mem) or demo is not None or shown_feedback is not None, demo, shown_feedback,
                                 mem))
    return plans


def plan_metrics(plans: Sequence[TeacherPlan], rewards: Sequence[float], settings: PlanSettings) -> dict[str, float]:
    """Per-step fractions over the global batch, including what SDPO's rule would have activated on the same
    rollouts and how often memory alone activated the teacher (PMD's difference from SDPO, measured)."""
    n = max(1, len(plans))
    g = max(1, settings.group_size)
    groups = max(1, len(plans) // g)
    active = sum(p.active for p in plans)
    with_memory = sum(bool(p.memory) for p in plans)
    has_demo = [p.demo is not None for p in plans]
    has_feedback = [p.feedback is not None for p in plans]
    return {
        "self_distillation/reprompt_sample_fraction": active / n,
        "self_distillation/success_sample_fraction": sum(has_demo) / n,
        "self_distillation/success_group_fraction": sum(
            any(rewards[j] >= settings.success_threshold for j in range(k * g, (k + 1) * g)) for k in range(groups)
        ) / groups,
        "self_distillation/feedback_used_fraction": sum(has_feedback) / n,
        "pmd/memory_context_fraction": with_memory / n,
        "pmd/memory_only_active_fraction": sum(
            bool(p.memory) and not d and not f for p, d, f in zip(plans, has_demo, has_feedback)
        ) / n,
        "pmd/sdpo_teacher_active_fraction": sum(d or f for d, f in zip(has_demo, has_feedback)) / n,
    }


def remove_thinking(text: str) -> str:
    """SDPO's `remove_thinking_from_demonstration`: drop <think>…</think> from a demonstration (TRL's rule)."""
    return re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL).strip()


# ------------------------------------------------------------------------------------------- fitting the limit


@dataclass(frozen=True)
class TeacherParts:
    """The cuttable parts of one active teacher prompt, as text: memory lines, the demonstration (a sibling's
    completion), this rollout's feedback ('' = absent). The problem is not a part: it is what fitting keeps."""

    memory: str = ""
    demo: str | None = None  # None = no demonstration ('' = one whose text is empty, still shown as in SDPO)
    feedback: str | None = None


CUT_ORDER = ("memory", "demo", "feedback")  # what goes first when a teacher prompt is over the limit


def cut_plan(excess: int, sizes: Mapping[str, int]) -> dict[str, int]:
    """Tokens to cut from each part (`sizes`: tokens per part) to remove `excess` tokens: memory first (PMD's
    addition, and retrieval packs its most useful lines first), then the demonstration, then the feedback (SDPO's
    context), and under 'problem' whatever the parts cannot absorb (cut from the left, as TRL does)."""
    cuts = {}
    left = max(excess, 0)
    for name in CUT_ORDER:
        cuts[name] = min(left, max(sizes.get(name, 0), 0))
        left -= cuts[name]
    cuts["problem"] = left
    return cuts


def shorten(text: str, drop: int, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str],
            by_lines: bool = False) -> str:
    """`text` less about `drop` tokens from its end: whole lines for memory (a half line misleads), tokens
    otherwise (the start of a demonstration or of feedback is its most useful part)."""
    if drop <= 0:
        return text
    target = len(encode(text)) - drop
    if target <= 0:
        return ""
    if by_lines:
        lines = text.split("\n")
        while lines and len(encode("\n".join(lines))) > target:
            lines.pop()
        return "\n".join(lines)
    return decode(encode(text)[:target])


def fit_teacher_prompt(parts: TeacherParts, limit: int, tokens_of: Callable[[TeacherParts], list[int]],
                       encode: Callable[[str], list[int]], decode: Callable[[list[int]], str],
                       rounds: int = 4) -> tuple[list[int], set[str]]:
    """The token ids of the prompt `tokens_of(parts)` renders, within `limit`, and which parts were cut.

    Parts are cut by `cut_plan` and the prompt re-rendered (a chat template's tokens do not add up exactly, so a
    few rounds); what still does not fit is cut from the left, as TRL does, and reported as 'problem'."""
    ids = tokens_of(parts)
    cut: set[str] = set()
    for _ in range(rounds):
        if len(ids) <= limit:
            break
        plan = cut_plan(len(ids) - limit, {n: len(encode(getattr(parts, n) or "")) for n in CUT_ORDER})
        shorter = replace(parts, **{n: shorten(getattr(parts, n) or "", plan[n], encode, decode,
                                               by_lines=n == "memory") or ("" if n == "memory" else None)
                                    for n in CUT_ORDER if plan[n]})
        if shorter == parts:
            break
        cut |= {n for n in CUT_ORDER if getattr(shorter, n) != getattr(parts, n)}
        parts, ids = shorter, tokens_of(shorter)
    if len(ids) > limit:
        cut.add("problem")
        ids = ids[len(ids) - limit:]
    return ids, cut


# ------------------------------------------------------------------------------------------- rendering


def teacher_metrics(plans: Sequence[TeacherPlan], rewards: Sequence[float], settings: PlanSettings,
                    retrieved: Sequence[RetrievedMemory], cuts: Sequence[set[str]]) -> dict[str, float]:
    """The step's teacher metrics: `plan_metrics` over the global batch, the memory's size and budget cuts, and
    how often this rank's teacher prompts were cut to fit `max_reprompt_len` (by part)."""
    n = max(1, len(plans))
    n_local = max(1, len(cuts))
    return {
        **plan_metrics(plans, rewards, settings),
        "pmd/memory_tokens_mean": sum(m.n_tokens for m in retrieved) / n,
        "pmd/memory_budget_cut_fraction": sum(m.truncated for m in retrieved) / n,
        "pmd/teacher_prompt_truncated_fraction": sum(bool(c) for c in cuts) / n_local,
        **{f"pmd/teacher_{name}_cut_fraction": sum(name in c for c in cuts) / n_local
           for name in (*CUT_ORDER, "problem")},
    }


class TeacherRenderer:
    """Renders and tokenizes PMD's teacher prompts with the trainer's tokenizer and SDPO templates."""

    def __init__(self, trainer):
        self.trainer = trainer

    def parts(self, plan: TeacherPlan, all_completion_ids: torch.Tensor) -> TeacherParts | None:
        """What an active sample's teacher is shown besides the problem (None: inactive, the student's prompt).
        The demonstration is decoded and stripped of thinking as TRL's builder does."""
        if not plan.active:
            return None
        demo_text = None
        if plan.demo is not None:
            demo = all_completion_ids[plan.demo]
            demo = demo[demo != self.trainer._tokenizer.pad_token_id]
            demo_text = self.trainer.processing_class.decode(demo, skip_special_tokens=True)
            if self.trainer.args.remove_thinking_from_demonstration:
                demo_text = remove_thinking(demo_text)
        return TeacherParts(plan.memory, demo_text, plan.feedback)

    def prompt(self, original: Any, parts: TeacherParts | None) -> Any:
        """The teacher prompt for one sample: the student's prompt when inactive, else the reprompt as SDPO builds
        it (the last user turn rewritten by `reprompt_template`, system turns kept), memory in its {memory} field."""
        if parts is None:
            return original
        args = self.trainer.args
        solution = ("" if parts.demo is None
                    else args.solution_template.format(successful_previous_attempt=parts.demo))
        feedback = "" if parts.feedback is None else args.feedback_template.format(feedback_raw=parts.feedback)
        if isinstance(original, list):
            text = teacher_text(_extract_last_user_text(original), parts.memory, solution, feedback,
                                args.reprompt_template)
            return original[:-1] + [{"role": "user", "content": text}]
        return teacher_text(original, parts.memory, solution, feedback, args.reprompt_template)

    def render(self, originals: list, parts: list[TeacherParts | None]
               ) -> tuple[dict[str, torch.Tensor], list[set[str]]]:
        """TRL's `_tokenize_teacher_messages` (tokenize, fit max_reprompt_len, left-pad), except that an active
        prompt over the limit is fitted by `fit_teacher_prompt` (memory cut first, the problem last) instead of cut
        from the left. Returns the tensors and, per sample, the parts that were cut."""
        tr = self.trainer
        device = tr.accelerator.device
        limit = tr.args.max_reprompt_len
        tok = tr._tokenizer
        ids_list = tr._tokenize_prompts_untruncated([self.prompt(o, p) for o, p in zip(originals, parts)])
        cuts: list[set[str]] = [set() for _ in ids_list]
        for i, ids in enumerate(ids_list):
            if len(ids) <= limit:
                continue
            if parts[i] is None:  # inactive: the student's prompt, not distilled; cut as TRL does
                ids_list[i], cuts[i] = ids[-limit:], {"problem"}
                continue
            ids_list[i], cuts[i] = fit_teacher_prompt(
                parts[i], limit,
                tokens_of=lambda p, o=originals[i]: tr._tokenize_prompts_untruncated([self.prompt(o, p)])[0],
                encode=lambda text: tok(text, add_special_tokens=False)["input_ids"],
                decode=lambda ids: tok.decode(ids),
            )
        if any(cuts):
            logger.warning_once("PMD: teacher prompts exceeded max_reprompt_len and were cut (memory first, the "
                                "problem last; pmd/teacher_*_cut_fraction count them each step)")
        ids = [torch.as_tensor(x, device=device) for x in ids_list]
        masks = [torch.ones(len(x), dtype=torch.long, device=device) for x in ids]
        return {
            "prompt_ids": pad(ids, padding_value=tok.pad_token_id, padding_side="left"),
            "prompt_mask": pad(masks, padding_value=0, padding_side="left"),
        }, cuts


# ------------------------------------------------------------------------------------------- TRL's seam


class StepTeacherContext(SuccessfulRolloutTeacherContextBuilder):
    """TRL's `teacher_context_builder` seam, a thin adapter: `build` is the step's `teacher_context` phase. SDPO's
    TRL's own builder (`super().build`) is handed to the step as `trl_rule`: SDPO's teacher under
    `train.demo_choice: first`."""

    def __init__(self, trainer, step):
        super().__init__(trainer)
        self.step = step

    def build(self, output, prompts, rewards, feedbacks=None):
        def trl_rule(feedback):
            batch = SuccessfulRolloutTeacherContextBuilder.build(self, output, prompts, rewards, feedbacks=feedback)
            return batch, dict(self.last_metrics)

        with phase("teacher_context"):
            batch, self.last_metrics = self.step.teacher_context(output, prompts, rewards, trl_rule)
        return batch
