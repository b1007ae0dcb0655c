"""Teacher contexts for TRL's SDPO seam (`trainer.teacher_context_builder`).

TRL builds the teacher input as `[teacher prompt, left-padded] + completion_ids` and keeps the last
`logits_to_keep` positions of both passes, so any teacher prompt works without remapping. We provide two builders:

- `FeedbackSDPOContextBuilder`: TRL's own SDPO builder, fed with per-rollout verifier feedback (TRL's
  `privileged_context` is per dataset row, so it cannot describe a particular rollout). This is the SDPO baseline.
- `MemoryTeacherContextBuilder` (PMD): teacher prompt = problem + retrieved memory (+ SDPO's successful sibling and
  this rollout's feedback). Unlike SDPO, the teacher is also active on groups with no success whenever memory holds
  something for the problem or its family: that is the cross-episode signal.

Both record per-step metrics, including the teacher-active fraction, in `last_metrics` (TRL logs them).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather_object
from trl.experimental.sdpo.sdpo_trainer import SuccessfulRolloutTeacherContextBuilder, _extract_last_user_text
from trl.trainer.utils import pad

logger = logging.getLogger(__name__)

MEMORY_TEMPLATE = "\nNotes from your earlier practice on this and similar problems:\n{memory}\n"
REPROMPT_TEMPLATE = "{prompt}{memory}{solution}{feedback}\n\nCorrectly solve the original question.\n"


def build_teacher_text(prompt: str, memory: str, solution: str, feedback: str) -> str:
    """The exact user text the PMD teacher sees (pure; tested against a given memory)."""
    memory_block = MEMORY_TEMPLATE.format(memory=memory) if memory else ""
    return REPROMPT_TEMPLATE.format(prompt=prompt, memory=memory_block, solution=solution, feedback=feedback)


class RateLimitedWarning:
    """Warn at most once every `interval` seconds per key: silent zero-signal training must be visible, not spammy."""

    def __init__(self, interval: float = 60.0):
        self.interval = interval
        self._last: dict[str, float] = {}

    def __call__(self, key: str, message: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.interval:
            return False
        self._last[key] = now
        logger.warning(message)
        return True


class FeedbackSDPOContextBuilder(SuccessfulRolloutTeacherContextBuilder):
    """TRL's SDPO builder with per-rollout feedback from the environment reward's last call."""

    def __init__(self, trainer, feedback_source: Callable[[], list[str | None]]):
        super().__init__(trainer)
        self.feedback_source = feedback_source

    def build(self, output, prompts, rewards, feedbacks=None):
        result = super().build(output, prompts, rewards, feedbacks=self.feedback_source())
        self.last_metrics["self_distillation/teacher_active_fraction"] = self.last_metrics[
            "self_distillation/reprompt_sample_fraction"
        ]
        return result


@dataclass
class TeacherSample:
    """What one sample's teacher saw; handed to the memory loop so retrieval can be logged and inspected."""

    index: int
    problem_uid: str
    memory_text: str
    memory_refs: list[str]
    memory_tokens: int
    has_solution: bool
    has_feedback: bool
    active: bool


class MemoryTeacherContextBuilder(SuccessfulRolloutTeacherContextBuilder):
    """PMD's builder: memory-conditioned self-teacher plugged into TRL's SDPO seam.

    `memory_for(problem_uid) -> (text, refs, n_tokens)` retrieves from the memory *before* this step's rollouts are
    recorded; `on_built(samples, gathered)` is called afterwards (on every rank, with gathered data) so the memory
    loop can record experience and log retrievals on the main process only.
    """

    def __init__(
        self,
        trainer,
        feedback_source: Callable[[], list[str | None]],
        uid_source: Callable[[], list[str]],
        memory_for: Callable[[str], tuple[str, list[str], int]],
        on_built: Callable[[list[TeacherSample]], None] | None = None,
    ):
        super().__init__(trainer)
        self.feedback_source = feedback_source
        self.uid_source = uid_source
        self.memory_for = memory_for
        self.on_built = on_built
        self.warn = RateLimitedWarning()
        self.last_samples: list[TeacherSample] = []

    def _tokenize_counting_truncation(self, messages: list) -> tuple[dict[str, torch.Tensor], int]:
        """TRL's `_tokenize_teacher_messages` (left-truncate to max_reprompt_len, left-pad), also counting how many
        prompts were truncated: silently cut memory is a failure mode worth reporting."""
        tr = self.trainer
        device = tr.accelerator.device
        limit = tr.args.max_reprompt_len
        ids_list = tr._tokenize_prompts_untruncated(messages)
        truncated = sum(len(ids) > limit for ids in ids_list)
        ids = [torch.as_tensor(x[-limit:], device=device) for x in ids_list]
        masks = [torch.ones(len(x), dtype=torch.long, device=device) for x in ids]
        return {
            "prompt_ids": pad(ids, padding_value=tr._tokenizer.pad_token_id, padding_side="left"),
            "prompt_mask": pad(masks, padding_value=0, padding_side="left"),
        }, truncated

    def build(self, output: dict[str, Any], prompts: list[Any], rewards: torch.Tensor, feedbacks=None):
        tr = self.trainer
        args = tr.args
        device = tr.accelerator.device
        mode = "train" if tr.model.training else "eval"
        n_gen = tr.num_generations if mode == "train" else tr.num_generations_eval
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        num_local = len(prompts)
        start = tr.accelerator.process_index * num_local

        all_rewards = tr.accelerator.gather(rewards)
        padded = tr.accelerator.pad_across_processes(completion_ids, dim=1, pad_index=tr._tokenizer.pad_token_id)
        all_completion_ids = tr.accelerator.gather(padded)
        all_prompts = gather_object(prompts)
        all_feedback = gather_object(self.feedback_source())
        all_uids = gather_object(self.uid_source())
        total = all_rewards.shape[0]
        threshold = args.success_reward_threshold

        memory_cache: dict[str, tuple[str, list[str], int]] = {}
        samples: list[TeacherSample] = []
        solutions: list[int | None] = [None] * total
        for i in range(total):
            g0 = (i // n_gen) * n_gen
            successes = [
                j for j in range(g0, g0 + n_gen)
                if not (args.dont_reprompt_on_self_success and j == i) and all_rewards[j].item() >= threshold
            ] if args.use_successful_as_teacher else []
            solutions[i] = successes[0] if successes else None
            feedback = all_feedback[i]
            has_feedback = bool(args.include_environment_feedback and isinstance(feedback, str) and feedback.strip())
            uid = all_uids[i]
            if uid not in memory_cache:
                memory_cache[uid] = self.memory_for(uid)
            text, refs, n_tokens = memory_cache[uid]
            active = bool(text) or successes != [] or has_feedback
            samples.append(TeacherSample(i, uid, text, refs, n_tokens, bool(successes), has_feedback, active))

        teacher_messages = []
        for i in range(start, start + num_local):
            s = samples[i]
            original = all_prompts[i]
            if not s.active:
                teacher_messages.append(original)
                continue
            solution = ""
            if solutions[i] is not None:
                demo = all_completion_ids[solutions[i]]
                demo = demo[demo != tr._tokenizer.pad_token_id]
                demo_text = tr.processing_class.decode(demo, skip_special_tokens=True)
                if args.remove_thinking_from_demonstration:
                    demo_text = re.sub(r"<think>.*?</think>", "", demo_text, flags=re.DOTALL).strip()
                solution = args.solution_template.format(successful_previous_attempt=demo_text)
            feedback = args.feedback_template.format(feedback_raw=all_feedback[i]) if s.has_feedback else ""
            if isinstance(original, list):
                text = build_teacher_text(_extract_last_user_text(original), s.memory_text, solution, feedback)
                teacher_messages.append(original[:-1] + [{"role": "user", "content": text}])
            else:
                teacher_messages.append(build_teacher_text(original, s.memory_text, solution, feedback))

        teacher, truncated = self._tokenize_counting_truncation(teacher_messages)
        mask = torch.tensor([float(s.active) for s in samples[start : start + num_local]], device=device)

        n = max(1, total)
        active = sum(s.active for s in samples)
        with_memory = sum(bool(s.memory_text) for s in samples)
        memory_only = sum(bool(s.memory_text) and not s.has_solution and not s.has_feedback for s in samples)
        groups = max(1, total // max(1, n_gen))
        self.last_metrics = {
            "self_distillation/teacher_active_fraction": active / n,
            "self_distillation/reprompt_sample_fraction": active / n,
            "self_distillation/success_sample_fraction": sum(s.has_solution for s in samples) / n,
            "self_distillation/success_group_fraction": sum(
                any(all_rewards[j].item() >= threshold for j in range(g * n_gen, (g + 1) * n_gen))
                for g in range(groups)
            ) / groups,
            "self_distillation/feedback_used_fraction": sum(s.has_feedback for s in samples) / n,
            "pmd/memory_context_fraction": with_memory / n,
            "pmd/memory_only_active_fraction": memory_only / n,
            # What TRL's SDPO builder would have activated on these same rollouts (sibling success or feedback).
            "pmd/sdpo_teacher_active_fraction": sum(s.has_solution or s.has_feedback for s in samples) / n,
            "pmd/memory_tokens_mean": sum(s.memory_tokens for s in samples) / n,
            "pmd/teacher_prompt_truncated_fraction": truncated / max(1, num_local),
        }
        if with_memory == 0:
            self.warn("empty", "PMD: retrieval returned nothing for every sample this step (memory still empty?)")
        if active == 0:
            self.warn("inactive", "PMD: the teacher is inactive for every sample: no memory, success or feedback")
        if truncated:
            self.warn("truncated", f"PMD: {truncated} teacher prompts exceeded max_reprompt_len and were left-truncated")
        self.last_samples = samples
        if self.on_built is not None:
            self.on_built(samples)
        return {
            "teacher_input_ids": torch.cat([teacher["prompt_ids"], completion_ids], dim=1),
            "teacher_attention_mask": torch.cat([teacher["prompt_mask"], completion_mask], dim=1),
            "self_distillation_mask": mask,
        }
