"""Training: GRPO and SDPO exactly as TRL implements them, and PMD = SDPO + a memory-conditioned teacher.

One PMD step, in order (TRL's `SDPOTrainer` drives it; each phase names the function that does it):

  1. generate   TRL `sample_rollouts`: `prompts_per_step` problems x `num_generations` rollouts.
  2. reward     `rewards.EnvironmentReward.__call__`: the environment verifies each rollout; the reward goes to TRL,
                the verdict (feedback, passed) is kept for `take_verdicts`.
  3. retrieve   `teacher.MemoryTeacherContextBuilder.build` (TRL's `teacher_context_builder` seam) gathers the
                global batch and calls `memory.loop.MemoryLoop.retrieve`: memory as it was before this step.
  4. plan       `teacher.plan_teachers` (pure): per sample, active or not, with which sibling demonstration,
                feedback and memory. Memory alone can activate the teacher; that is PMD's difference from SDPO.
  5. render     `prompts.teacher_text` fills the run's `reprompt_template` ({memory} beside SDPO's fields);
                `teacher.fit_teacher_prompt` fits max_reprompt_len by cutting memory first, the problem last.
  6. record     `MemoryLoop.record`: the step's rollouts become experience; each teacher's retrieval is logged.
  7. loss       TRL's SDPO loss distils the teacher (EMA policy on the teacher prompt) into the student, which
                never sees memory, averaged as `train.distillation_normalization` says (`sdpo_loss.SDPOTrainer`:
                over active tokens as the SDPO reference, or TRL's all-sample mean), computed on the rollouts
                with an active teacher only (the others add exactly 0); the optimizer steps.
  8. reflect    `MemoryCallback.on_step_end` -> `MemoryLoop.end_step`: insights, then patterns, on their schedules.
  9. log, save  `MetricsJSONL.on_log` (TRL's logs + memory counts); `CheckpointCallback.on_save` (memory store, EMA
                teacher and loop counters beside TRL's checkpoint, at the same step).

Everything TRL already does (generation, losses, accelerate/DeepSpeed/FSDP, PEFT, vLLM, checkpoints, logging) stays
TRL's. SDPO runs the same order without memory: TRL's own builder, given per-rollout feedback, plans and renders
(4-5) by SDPO's rule, and there is nothing to retrieve, record or reflect (3, 6, 8). GRPO is 1, 2, 7 and 9.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import trl
from datasets import Dataset
from transformers import TrainerCallback

from .checkpoint import MEMORY_FILE, TEACHER_FILE, Manifest, restore_run_state, write_manifest
from .config import RunConfig
from .dist import Ranks, SharedGeneration
from .envs import EnvironmentSuite
from .errors import CheckpointError, RewardFunctionError
from .evaluate import PeriodicEval, evaluate_policy
from .memory.loop import LAST_REFLECTED, LoopStats, MemoryLoop
from .memory.reflect import FeedbackStatsReflector, ModelReflector, Reflector
from .memory.store import MemoryStore
from .phases import PhasedTrainer, optimizer_phase_callback, phase
from .precision import precision_used, run_cpu_bf16_hint, run_precision
from .prompts import student_messages
from .rewards import EnvironmentReward
from .sdpo_loss import SDPOTrainer
from .sharded import ema_teacher, load_teacher_weights, policy_for_generation, save_teacher_weights
from .teacher import FeedbackSDPOContextBuilder, MemoryTeacherContextBuilder
from .trl_args import lora_config, trl_config

logger = logging.getLogger(__name__)


class GRPOTrainer(PhasedTrainer, trl.GRPOTrainer):
    """TRL's GRPOTrainer, its phases named and timed (phases.PhasedTrainer); the algorithm is TRL's."""


def build_dataset(suite: EnvironmentSuite, split: str, system_prompt: str) -> Dataset:
    """Rows TRL understands: a conversational `prompt` plus `problem_uid` for the reward function."""
    problems = suite.problems(split)
    return Dataset.from_list([
        {"prompt": student_messages(suite.system_prompt(p, system_prompt), suite.format_prompt(p)),
         "problem_uid": p.uid} for p in problems
    ])


class MetricsJSONL(TrainerCallback):
    """One JSON object per logged step (TRL's logs + memory counts) for report.py; append-only, flushed per line."""

    def __init__(self, path: Path, memory: MemoryLoop | None = None, suite: EnvironmentSuite | None = None):
        self.path = path
        self.memory = memory
        self.suite = suite

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if _jsonable(v)}}
        if self.memory is not None:
            row.update(self.memory.metrics())
        failures = self.suite.reward_failures() if self.suite is not None else {}
        if failures:  # your reward functions' failures so far (this process's batches), scored 0
            row["env/reward_function_errors_total"] = float(sum(failures.values()))
        judged = self.suite.judge_errors() if self.suite is not None else {}
        if judged:  # the judge met an exception on the policy's output so far (this process's batches), scored 0
            row["env/judge_errors_total"] = float(sum(judged.values()))
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def _jsonable(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and math.isnan(v))


class MemoryCallback(TrainerCallback):
    """Step 8: the memory schedule after each optimizer step (before the Trainer logs and saves that step)."""

    def __init__(self, loop: MemoryLoop):
        self.loop = loop

    def on_step_end(self, args, state, control, **kwargs):
        self.loop.end_step(state.global_step - 1)  # the step whose rollouts were just recorded


class CheckpointCallback(TrainerCallback):
    """Completes each Trainer checkpoint with what TRL does not save (memory store, EMA teacher, memory-loop
    counters), then writes its manifest, which marks it complete. Added last, so it runs after the Trainer's save."""

    def __init__(self, trainer, loop: MemoryLoop | None, ranks: Ranks):
        self.trainer = trainer
        self.loop = loop
        self.ranks = ranks

    def on_save(self, args, state, control, **kwargs):
        with phase("save"):
            self._complete(args, state)

    def _complete(self, args, state) -> None:
        # Every rank writes its own files into the checkpoint (rng_state_R.pth); the manifest, which declares the
        # checkpoint complete and lists its files, comes after all of them.
        self.ranks.barrier()
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        teacher = ema_teacher(self.trainer)
        if teacher is not None:
            if state.is_world_process_zero:
                ckpt.mkdir(parents=True, exist_ok=True)
            save_teacher_weights(self.trainer, ckpt / TEACHER_FILE, state.is_world_process_zero)  # gathers
        if not state.is_world_process_zero:
            return
        ckpt.mkdir(parents=True, exist_ok=True)
        if self.loop is not None:
            self.loop.store.backup_to(ckpt / MEMORY_FILE)
        write_manifest(ckpt, state.global_step, has_memory=self.loop is not None, has_teacher=teacher is not None,
                       loop_stats=asdict(self.loop.stats) if self.loop is not None else None,
                       resumable=not args.save_only_model)


class LogPrecision(TrainerCallback):
    """After the first optimizer step (when AdamW's state exists), the run's log says what precision was actually
    used, read from the trainer's objects (precision.precision_used); summary.json keeps the same record. `hint`
    (precision.cpu_bf16_hint) follows it: the faster setting this CPU allows, or why the one asked for is slow."""

    def __init__(self, trainer, hint: str | None = None):
        self.trainer = trainer
        self.hint = hint

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1 and state.is_world_process_zero:
            used = precision_used(self.trainer)
            logger.warning("precision: %s", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in
                                                      {**used, "autocast": used["autocast"] or "off"}.items()))
            if self.hint:
                logger.warning("precision: %s", self.hint)


class StopOnRewardError(TrainerCallback):
    """`strict: true` on a dataset task: a reward function that raised stops training after this step, with a
    checkpoint, on every rank together (any rank's failure counts)."""

    def __init__(self, suite: EnvironmentSuite, ranks: Ranks):
        self.suite = suite
        self.ranks = ranks
        self.reason: str | None = None

    def on_step_end(self, args, state, control, **kwargs):
        reasons = [r for r in self.ranks.gather(self.suite.stop_reason()) if r]
        if reasons and self.reason is None:
            self.reason = f"{reasons[0]}; stopped after step {state.global_step}"
            control.should_save = True
            control.should_training_stop = True


class ScheduleOnResume(TrainerCallback):
    """On resume, the learning rate of the first resumed step comes from the schedule of *this* run's length.

    The checkpoint's optimizer holds the rate its own schedule set last; for a run extended with more
    `train.steps`, that is the old schedule's end (0 for a linear decay), and the first resumed step would not
    learn. The scheduler itself is rebuilt for the new length by the Trainer (its lambdas are not in the
    checkpoint), so the rate is taken from it. On a plain resume both agree and nothing changes."""

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        lambdas = getattr(lr_scheduler, "lr_lambdas", None)
        if not state.global_step or optimizer is None or lambdas is None:
            return
        rates = [base * fn(lr_scheduler.last_epoch) for base, fn in zip(lr_scheduler.base_lrs, lambdas)]
        held = [group["lr"] for group in optimizer.param_groups]
        if any(abs(a - b) > 1e-12 * max(1.0, abs(a)) for a, b in zip(rates, held)):
            logger.warning("resume: learning rate at step %d set to %.3g by the schedule for %d steps (the "
                           "checkpoint's optimizer held %.3g)", state.global_step, rates[0], state.max_steps, held[0])
            for group, rate in zip(optimizer.param_groups, rates):
                group["lr"] = rate


class _NoStepLeft(Exception):
    """Raised by `StopAtTheEnd` to leave `Trainer.train` before it trains a step past `max_steps`."""


class StopAtTheEnd(TrainerCallback):
    """A run resumed from the checkpoint of its last step (killed during the final save, evaluation or report, or
    finished and resumed again) has no step left; transformers would still train one more, because its loop checks
    `max_steps` only after a step. This leaves `train` at `on_train_begin`, once the checkpoint's weights, optimizer
    and state are loaded and the model is prepared, so the tail (evaluation, final save) runs on the same weights.
    It runs before every other callback, so no progress bar or tracker run is opened for a session that trains
    nothing."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            raise _NoStepLeft()


class SamplerReplayCallback(TrainerCallback):
    """On resume, replays the shuffles of the epochs already trained. TRL's RepeatSampler draws each epoch's order
    from one generator seeded once, and transformers 5 no longer iterates past finished epochs on resume, so
    without this a run resumed in epoch k would see epoch 0's order again."""

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if not state.global_step or train_dataloader is None:
            return
        sampler = _find_repeat_sampler(train_dataloader)
        if sampler is None or not getattr(sampler, "shuffle", False):
            return
        steps_per_epoch = max(1, len(train_dataloader) // args.gradient_accumulation_steps)
        for _ in range(state.global_step // steps_per_epoch):
            torch.randperm(sampler.num_samples, generator=sampler.generator)


def _find_repeat_sampler(loader):
    """TRL's RepeatSampler inside an accelerate-prepared DataLoader (wrapped in batch samplers), if any."""
    from trl.trainer.utils import RepeatSampler

    todo, seen = [loader], set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        if isinstance(obj, RepeatSampler):
            return obj
        todo.extend(getattr(obj, name, None) for name in ("sampler", "batch_sampler", "base_dataloader"))
    return None


def resume_trainer_state(trainer, loop: MemoryLoop | None, ckpt: Path, manifest: Manifest) -> None:
    """What `Trainer.train(resume_from_checkpoint=...)` does not restore: the EMA teacher, the memory loop's
    cumulative counters, and TRL's micro-step counter (which decides when rollouts are regenerated)."""
    teacher = ema_teacher(trainer)
    if teacher is not None:
        if not manifest.has_teacher:
            raise CheckpointError(f"{ckpt}: no EMA teacher weights in this checkpoint, but train.teacher_model_kind "
                                  "is 'ema'; resume with the config the run was started with")
        load_teacher_weights(trainer, ckpt / TEACHER_FILE, trainer.args.should_save)
        if getattr(trainer, "ema", None) is not None:
            trainer.ema.shadow.clear()  # an fp32 shadow (bf16 teacher storage) restarts from the saved weights
    if loop is not None and manifest.loop_stats is not None:
        loop.stats = LoopStats(**manifest.loop_stats)
    if hasattr(trainer, "_step"):
        trainer._step = manifest.step * trainer.args.gradient_accumulation_steps


class PolicyGenerator:
    """Greedy chat generation with the policy as it is now, for policy-written reflection (this rank's share)."""

    def __init__(self, trainer, tokenizer, max_new_tokens: int, batch_size: int):
        self.trainer = trainer
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def __call__(self, prompts: list[list[dict]]) -> list[str]:
        from .evaluate import generate

        with policy_for_generation(self.trainer) as model, self.trainer.accelerator.autocast():
            return generate(model, self.tokenizer, prompts, self.max_new_tokens, 1.0, True, self.batch_size)


class ModelGenerator:
    """Greedy chat generation with a separate reflector model (loaded once per rank on its device, never trained)."""

    def __init__(self, name_or_path: str, dtype: str, max_new_tokens: int, batch_size: int, device: str | None = None):
        from .models import load_model_and_tokenizer

        self.model, self.tokenizer = load_model_and_tokenizer(name_or_path, dtype, device=device)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def __call__(self, prompts: list[list[dict]]) -> list[str]:
        from .evaluate import generate

        return generate(self.model, self.tokenizer, prompts, self.max_new_tokens, 1.0, True, self.batch_size)


def make_reflector(cfg: RunConfig, trainer, tokenizer, ranks: Ranks) -> tuple[Reflector, SharedGeneration | None]:
    """`memory.reflector`: 'feedback-stats' (deterministic), 'policy', or a separate model's HF id / path. A model
    reflector's generation is shared by every rank (the policy may be sharded; a separate model is split by work)."""
    m = cfg.memory
    if m.reflector == "feedback-stats":
        return FeedbackStatsReflector(), None
    if m.reflector == "policy":
        local = PolicyGenerator(trainer, tokenizer, m.reflection_max_tokens, m.reflection_batch_size)
    else:
        local = ModelGenerator(m.reflector, run_precision(cfg).inference, m.reflection_max_tokens,
                               m.reflection_batch_size, device=str(trainer.accelerator.device))
    shared = SharedGeneration(ranks, local)
    return ModelReflector(shared, name=m.reflector), shared


def open_memory(cfg: RunConfig, run_dir: Path) -> MemoryStore:
    """The run's memory store; `memory.load_from` seeds it with a copy (the source file is never written). Main
    process only: one writer per SQLite file."""
    path = run_dir / MEMORY_FILE
    if cfg.memory.load_from and not path.exists():
        MemoryStore.restore(cfg.memory.load_from, path)
        store = MemoryStore(path)
        store.rebase_steps(meta_step_keys=(LAST_REFLECTED,))  # the seed is this run's past: steps < 0
        return store
    return MemoryStore(path)


def build_trainer(cfg: RunConfig, model_path: str, suite: EnvironmentSuite, run_dir: Path,
                  model=None, tokenizer=None, callbacks: list | None = None, ranks: Ranks | None = None):
    """Construct the TRL trainer for `cfg.train.algo` (grpo | sdpo | pmd). Returns (trainer, memory_loop | None)."""
    from transformers import AutoTokenizer

    ranks = ranks or Ranks.for_run(cfg.train.trl)
    algo = cfg.train.algo
    args = trl_config(cfg, str(run_dir / "checkpoints"), world_size=ranks.world)
    dataset = build_dataset(suite, "train", cfg.env.system_prompt)
    reward = EnvironmentReward(suite)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model if model is not None else model_path
    common = dict(model=model, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer,
                  callbacks=list(callbacks or []), peft_config=lora_config(cfg))
    loop = None
    if algo == "grpo":
        trainer = GRPOTrainer(**common)
    else:
        trainer = SDPOTrainer(**common)
        trainer.distillation_normalization = cfg.train.distillation_normalization
        if algo == "sdpo":
            trainer.teacher_context_builder = FeedbackSDPOContextBuilder(trainer, verdicts=reward)
        else:
            loop = attach_memory(cfg, trainer, reward, suite, run_dir, tokenizer, ranks)
    trainer.add_callback(optimizer_phase_callback())
    trainer.add_callback(LogPrecision(trainer, run_cpu_bf16_hint(cfg)))
    trainer.add_callback(SamplerReplayCallback())
    trainer.add_callback(ScheduleOnResume())
    trainer.add_callback(CheckpointCallback(trainer, loop, ranks))
    return trainer, loop


def attach_memory(cfg: RunConfig, trainer, reward: EnvironmentReward, suite: EnvironmentSuite, run_dir: Path,
                  tokenizer, ranks: Ranks) -> MemoryLoop:
    """PMD: the memory loop joins the trainer at two points, the teacher-context builder (steps 3-6) and the
    step-end callback (step 8). The store lives on the main process only."""
    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    reflector, shared = make_reflector(cfg, trainer, tokenizer, ranks)
    store = open_memory(cfg, run_dir) if ranks.is_main else None
    loop = MemoryLoop(store, cfg.memory, suite, count_tokens, reflector, ranks=ranks, shared=shared)
    trainer.teacher_context_builder = MemoryTeacherContextBuilder(trainer, memory=loop, verdicts=reward)
    trainer.add_callback(MemoryCallback(loop))
    return loop


def train(cfg: RunConfig, run_dir: Path, model_path: str, suite: EnvironmentSuite,
          resume_from: str | None = None, callbacks: list | None = None, ranks: Ranks | None = None,
          eval_every: int = 0, evaluate_trained: bool = False) -> dict[str, Any]:
    """Run training; saves the final weights to `run_dir/final` and returns a summary.

    With `resume_from` (a complete checkpoint dir), run_dir is first put back to that checkpoint's step (memory,
    metrics; see checkpoint.py) and training continues exactly where it stopped. Without, training starts over:
    state no checkpoint captured (a memory store, metrics rows, partial checkpoints) is discarded.

    Every rank calls this. `eval_every` > 0 evaluates the live policy during training (PeriodicEval);
    `evaluate_trained` evaluates the trained policy in place, before the trainer is gone (summary key
    `eval_trained`), so no rank has to read `final/` back from a filesystem it may not share."""
    ranks = ranks or Ranks.for_run(cfg.train.trl)
    ckpt = Path(resume_from) if resume_from else None
    # one writer for the run directory; the others wait for it, then receive the checkpoint's manifest
    manifest = ranks.on_main(lambda: _restore(run_dir, ckpt))
    trainer, loop = build_trainer(cfg, model_path, suite, run_dir, callbacks=callbacks, ranks=ranks)
    trainer.add_callback(MetricsJSONL(run_dir / "metrics.jsonl", loop, suite))
    guard = StopOnRewardError(suite, ranks)
    trainer.add_callback(guard)
    if eval_every:
        trainer.add_callback(PeriodicEval(trainer, cfg, suite, eval_every, ranks, out_dir=run_dir / "evals").attach())
    try:
        if ckpt is not None and manifest is not None:
            resume_trainer_state(trainer, loop, ckpt, manifest)
        trainer.callback_handler.callbacks.insert(0, StopAtTheEnd())  # first: no progress bar, no tracker run
        started = time.time()
        try:
            trainer.train(resume_from_checkpoint=resume_from)
        except _NoStepLeft:
            logger.info("resume: %s is at the last step (%d); redoing only the final save and evaluation", ckpt,
                        trainer.state.global_step)
            # resume dropped the end-of-training row with the rows after the checkpoint, and transformers logs it
            # only when its loop ends: log this session's (no step trained, so no train_loss)
            trainer.log({"train_runtime": round(time.time() - started, 4), "train_samples_per_second": 0.0,
                         "train_steps_per_second": 0.0, "total_flos": float(trainer.state.total_flos)})
        if guard.reason is not None:
            raise RewardFunctionError(f"{guard.reason} (its checkpoint is saved: fix the function, then "
                                      "pmd train --resume)")
        summary = {"algo": cfg.train.algo, "steps": trainer.state.global_step, "final_model": str(run_dir / "final"),
                   "precision": precision_used(trainer)}
        if failures := suite.reward_failures():
            summary["reward_function_errors"] = failures
        if judged := suite.judge_errors():
            summary["judge_errors"] = judged
        if evaluate_trained:
            t0 = time.time()
            summary["eval_trained"] = evaluate_policy(trainer, cfg, suite, ranks)
            summary["eval_trained_seconds"] = time.time() - t0
        _save_final(trainer, run_dir / "final", model_path)
        ranks.barrier()  # `final/` is whole before any rank goes on
        if loop is not None and loop.store is not None:
            summary["memory"] = loop.store.counts()
            summary["reflector"] = loop.reflector.name
    finally:
        if loop is not None and loop.store is not None:
            loop.store.close()
    return summary


def _restore(run_dir: Path, ckpt: Path | None) -> Manifest | None:
    run_dir.mkdir(parents=True, exist_ok=True)
    return restore_run_state(run_dir, ckpt)


def _save_final(trainer, final: Path, base_model: str) -> None:
    """Weights + tokenizer into a temp dir, then swapped in: `final/` is either the old or the new model, whole.

    With LoRA, `final/` holds the merged full weights, so it loads like any model (evaluation, serving) without
    peft, and `final/adapter/` the trained adapter alone, for PEFT users (`PeftModel.from_pretrained(base, ...)`,
    stacking, serving several adapters on one base). The adapter is saved by the Trainer on every rank, which
    gathers sharded parameters (ZeRO-3, FSDP); the merge then runs on the main process alone, on a whole copy of
    the base model loaded from `base_model`, never on the trained model's own (possibly partitioned) parameters.
    Only the student's adapter is kept: SDPO's EMA teacher, a second adapter named "teacher", is training state."""
    tmp = final.with_name(f".{final.name}-{uuid.uuid4().hex[:8]}.tmp")
    model = trainer.accelerator.unwrap_model(trainer.model)
    lora = hasattr(model, "merge_and_unload")
    trainer.save_model(str(tmp / "adapter" if lora else tmp))  # every rank (sharded models gather), main writes
    if not trainer.args.should_save:
        return
    if lora:
        for other in set(model.peft_config) - {model.active_adapter}:  # PEFT saves each adapter; keep the student's
            shutil.rmtree(tmp / "adapter" / other, ignore_errors=True)
        merge_adapter(base_model, tmp / "adapter", tmp, model.dtype)
    trainer.processing_class.save_pretrained(str(tmp))
    if final.exists():
        trash = final.with_name(f".{final.name}-{uuid.uuid4().hex[:8]}.trash")
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, final)


def merge_adapter(base_model: str, adapter: Path, out: Path, dtype: torch.dtype) -> None:
    """`base_model` with the adapter at `adapter` folded in, saved as plain weights at `out` (main process)."""
    from peft import PeftModel

    from .models import load_model_and_tokenizer

    base, _ = load_model_and_tokenizer(base_model, str(dtype).replace("torch.", ""), device="cpu")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out), is_main_process=True)
