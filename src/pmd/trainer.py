"""Training: GRPO and SDPO exactly as TRL implements them, and PMD = SDPO + a memory-conditioned teacher.

Everything TRL already does (generation, losses, accelerate/DeepSpeed/FSDP, PEFT, vLLM, checkpoints, logging) stays
TRL's. What this module adds: the environment as reward + per-rollout feedback, the PMD teacher-context builder,
the memory loop's hooks (record / reflect / consolidate / snapshot with checkpoints), and a per-step metrics JSONL.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import TrainerCallback

from .checkpoint import (MEMORY_FILE, TEACHER_FILE, Manifest, load_teacher, read_manifest, restore_run_state,
                         save_teacher, write_manifest)
from .config import RunConfig
from .envs import EnvironmentSuite
from .errors import CheckpointError
from .memory.loop import LoopStats, MemoryLoop
from .memory.reflect import FeedbackStatsReflector, ModelReflector
from .memory.store import MemoryStore
from .prompts import student_messages
from .rewards import EnvironmentReward
from .teacher import FeedbackSDPOContextBuilder, MemoryTeacherContextBuilder

logger = logging.getLogger(__name__)


def build_dataset(suite: EnvironmentSuite, split: str, system_prompt: str) -> Dataset:
    """Rows TRL understands: a conversational `prompt` plus `problem_uid` for the reward function."""
    problems = suite.problems(split)
    return Dataset.from_list([
        {"prompt": student_messages(system_prompt, suite.format_prompt(p)), "problem_uid": p.uid} for p in problems
    ])


def trl_config(cfg: RunConfig, output_dir: str):
    """Translate our config into TRL's GRPOConfig / SDPOConfig with CPU-safe precision defaults."""
    t = cfg.train
    on_gpu = torch.cuda.is_available()
    common: dict[str, Any] = dict(
        output_dir=output_dir,
        max_steps=t.steps,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.prompts_per_step * t.num_generations,
        gradient_accumulation_steps=1,
        num_generations=t.num_generations,
        max_completion_length=t.max_completion_length,
        temperature=t.temperature,
        top_p=t.top_p,
        activation_checkpointing=t.gradient_checkpointing,
        seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        report_to=t.report_to,
        remove_unused_columns=False,
        use_cpu=not on_gpu,
        bf16=on_gpu and cfg.model.dtype in ("auto", "bfloat16"),
        fp16=False,
        use_vllm=t.use_vllm,
        disable_tqdm=False,
        beta=0.0,
    )
    if t.algo == "grpo":
        from trl import GRPOConfig

        return GRPOConfig(**common, loss_type="dapo")
    from trl.experimental.sdpo import SDPOConfig

    topk = t.distillation_mode == "topk_logits"
    return SDPOConfig(
        **common,
        max_prompt_length=t.max_prompt_length,
        distillation_mode=t.distillation_mode,
        distillation_topk=t.distillation_topk if topk else None,
        distillation_add_tail=t.distillation_add_tail if topk else False,
        distillation_alpha=1.0 if t.distillation_mode == "sampled_token" else 0.5,
        distillation_weight=t.distillation_weight,
        teacher_model_kind="base" if (t.algo == "pmd" and cfg.memory.teacher == "frozen") else t.teacher_model_kind,
        max_reprompt_len=t.max_reprompt_len,
        include_environment_feedback=t.include_environment_feedback,
        success_reward_threshold=t.success_reward_threshold,
    )


class MetricsJSONL(TrainerCallback):
    """One JSON object per logged step (TRL's logs + memory counts) for report.py; append-only, flushed per line."""

    def __init__(self, path: Path, extra=None):
        self.path = path
        self.extra = extra

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if _jsonable(v)}}
        if self.extra is not None:
            row.update(self.extra())
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def _jsonable(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and math.isnan(v))


class MemoryCallback(TrainerCallback):
    """Runs the memory schedule after each optimizer step (before the Trainer logs and saves that step)."""

    def __init__(self, loop: MemoryLoop):
        self.loop = loop

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step - 1
        self.loop.maybe_reflect(step)
        self.loop.maybe_consolidate(step)
        self.loop.current_step = state.global_step


class CheckpointCallback(TrainerCallback):
    """Completes each Trainer checkpoint with what TRL does not save (memory store, EMA teacher, memory-loop
    counters), then writes its manifest, which marks it complete. Added last, so it runs after the Trainer's save."""

    def __init__(self, trainer, loop: MemoryLoop | None):
        self.trainer = trainer
        self.loop = loop

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        ckpt.mkdir(parents=True, exist_ok=True)
        teacher = ema_teacher(self.trainer)
        if self.loop is not None:
            self.loop.store.backup_to(ckpt / MEMORY_FILE)
        if teacher is not None:
            save_teacher(teacher, ckpt / TEACHER_FILE)
        write_manifest(ckpt, state.global_step, has_memory=self.loop is not None, has_teacher=teacher is not None,
                       loop_stats=asdict(self.loop.stats) if self.loop is not None else None)


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


def ema_teacher(trainer) -> torch.nn.Module | None:
    """SDPO's separate EMA teacher, or None where there is nothing extra to save: GRPO, a live teacher (the policy),
    a frozen base teacher (rebuilt identically from the model path), or a LoRA-adapter teacher."""
    if getattr(trainer.args, "teacher_model_kind", None) != "ema":
        return None
    teacher = getattr(trainer, "teacher_model", None)
    if teacher is None or teacher is trainer.model:
        return None
    return trainer.accelerator.unwrap_model(teacher)


def resume_trainer_state(trainer, loop: MemoryLoop | None, ckpt: Path, manifest: Manifest) -> None:
    """What `Trainer.train(resume_from_checkpoint=...)` does not restore: the EMA teacher, the memory loop's
    cumulative counters, and TRL's micro-step counter (which decides when rollouts are regenerated)."""
    teacher = ema_teacher(trainer)
    if teacher is not None:
        if not manifest.has_teacher:
            raise CheckpointError(f"{ckpt}: no EMA teacher weights in this checkpoint, but train.teacher_model_kind "
                                  "is 'ema'; resume with the config the run was started with")
        load_teacher(teacher, ckpt / TEACHER_FILE)
    if loop is not None and manifest.loop_stats is not None:
        loop.stats = LoopStats(**manifest.loop_stats)
    if hasattr(trainer, "_step"):
        trainer._step = manifest.step * trainer.args.gradient_accumulation_steps


def _make_reflector(cfg: RunConfig, trainer_ref: dict, tokenizer):
    from .evaluate import generate

    source = cfg.memory.reflector
    if source == "feedback-stats":
        return FeedbackStatsReflector()
    if source == "policy":
        def gen(prompts):
            trainer = trainer_ref["trainer"]
            model = trainer.accelerator.unwrap_model(trainer.model)
            return generate(model, tokenizer, prompts, cfg.memory.reflection_max_tokens, 1.0, True, 16)

        return ModelReflector(gen, name="policy")
    from .models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(source, cfg.model.dtype)

    def gen_other(prompts):
        return generate(model, tok, prompts, cfg.memory.reflection_max_tokens, 1.0, True, 16)

    return ModelReflector(gen_other, name=source)


def open_memory(cfg: RunConfig, run_dir: Path) -> MemoryStore:
    """The run's memory store; `memory.load_from` seeds it with a copy (the source file is never written)."""
    path = run_dir / MEMORY_FILE
    if cfg.memory.load_from and not path.exists():
        MemoryStore.restore(cfg.memory.load_from, path)
    return MemoryStore(path)


def lora_config(cfg: RunConfig):
    """A PEFT LoRA config on all linear layers when `train.lora_r > 0` (TRL wraps the model); None otherwise."""
    if cfg.train.lora_r <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.train.lora_r, lora_alpha=2 * cfg.train.lora_r, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def build_trainer(cfg: RunConfig, model_path: str, suite: EnvironmentSuite, run_dir: Path,
                  model=None, tokenizer=None, callbacks: list | None = None):
    """Construct the TRL trainer for `cfg.train.algo` (grpo | sdpo | pmd). Returns (trainer, memory_loop | None)."""
    from transformers import AutoTokenizer

    algo = cfg.train.algo
    args = trl_config(cfg, str(run_dir / "checkpoints"))
    dataset = build_dataset(suite, "train", cfg.env.system_prompt)
    reward = EnvironmentReward(suite)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model if model is not None else model_path
    loop = None
    callbacks = list(callbacks or [])
    peft_config = lora_config(cfg)
    if algo == "grpo":
        from trl import GRPOTrainer

        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)
    else:
        from trl.experimental.sdpo import SDPOTrainer

        trainer = SDPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)
        if algo == "sdpo":
            trainer.teacher_context_builder = FeedbackSDPOContextBuilder(trainer, reward.failure_feedback)
        else:
            loop = _attach_memory(cfg, trainer, reward, suite, run_dir, tokenizer)
    trainer.pmd_reward = reward
    trainer.add_callback(SamplerReplayCallback())
    trainer.add_callback(CheckpointCallback(trainer, loop))
    return trainer, loop


def _attach_memory(cfg, trainer, reward: EnvironmentReward, suite, run_dir: Path, tokenizer) -> MemoryLoop:
    trainer_ref = {"trainer": trainer}
    store = open_memory(cfg, run_dir)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    loop = MemoryLoop(store, cfg.memory, suite, count_tokens, _make_reflector(cfg, trainer_ref, tokenizer),
                      is_writer=trainer.accelerator.is_main_process)

    def on_built(samples):
        step = trainer.state.global_step
        loop.current_step = step
        judged = gather_object(reward.last)
        loop.record(step, judged, [(s.problem_uid, s.memory_text, s.memory_refs, s.memory_tokens) for s in samples])

    def memory_for(uid: str):
        loop.current_step = trainer.state.global_step
        return loop.memory_for(uid)

    trainer.teacher_context_builder = MemoryTeacherContextBuilder(
        trainer,
        feedback_source=reward.failure_feedback,
        uid_source=lambda: [j.problem.uid for j in reward.last],
        memory_for=memory_for,
        on_built=on_built,
    )
    trainer.add_callback(MemoryCallback(loop))
    return loop


def train(cfg: RunConfig, run_dir: Path, model_path: str, suite: EnvironmentSuite,
          resume_from: str | None = None, callbacks: list | None = None) -> dict[str, Any]:
    """Run training; saves the final weights to `run_dir/final` and returns a summary.

    With `resume_from` (a complete checkpoint dir), run_dir is first put back to that checkpoint's step (memory,
    metrics; see checkpoint.py) and training continues exactly where it stopped. Without, training starts over:
    state no checkpoint captured (a memory store, metrics rows, partial checkpoints) is discarded."""
    from accelerate import PartialState

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Path(resume_from) if resume_from else None
    ranks = PartialState(cpu=not torch.cuda.is_available())  # as trl_config decides use_cpu
    if ranks.is_main_process:  # one writer for the run directory; the other ranks wait, then read
        manifest = restore_run_state(run_dir, ckpt)
    ranks.wait_for_everyone()
    if not ranks.is_main_process:
        manifest = read_manifest(ckpt) if ckpt is not None else None
    metrics_path = run_dir / "metrics.jsonl"
    holder: dict[str, MemoryLoop | None] = {"loop": None}
    callback = MetricsJSONL(metrics_path, extra=lambda: holder["loop"].metrics() if holder["loop"] else {})
    trainer, loop = build_trainer(cfg, model_path, suite, run_dir, callbacks=[callback, *(callbacks or [])])
    holder["loop"] = loop
    try:
        if ckpt is not None and manifest is not None:
            resume_trainer_state(trainer, loop, ckpt, manifest)
        trainer.train(resume_from_checkpoint=resume_from)
        _save_final(trainer, run_dir / "final")
        summary = {"algo": cfg.train.algo, "steps": trainer.state.global_step, "final_model": str(run_dir / "final")}
        if loop is not None:
            summary["memory"] = loop.store.counts()
            summary["reflector"] = loop.reflector.name
    finally:
        if loop is not None:
            loop.store.close()
    return summary


def _save_final(trainer, final: Path) -> None:
    """Weights + tokenizer into a temp dir, then swapped in: `final/` is either the old or the new model, whole."""
    tmp = final.with_name(f".{final.name}-{uuid.uuid4().hex[:8]}.tmp")
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        # LoRA: save merged full weights, so `final/` loads like any model (evaluation, serving) without peft.
        if trainer.args.should_save:
            model.merge_and_unload().save_pretrained(str(tmp))
    else:
        trainer.save_model(str(tmp))  # every rank (sharded models gather), only the main one writes
    if not trainer.args.should_save:
        return
    trainer.processing_class.save_pretrained(str(tmp))
    if final.exists():
        trash = final.with_name(f".{final.name}-{uuid.uuid4().hex[:8]}.trash")
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, final)
