"""Training: GRPO and SDPO exactly as TRL implements them, and PMD = SDPO + a memory-conditioned teacher.

The order of one step is step.py's `PMDStep`, in code. This module wires it to TRL's trainers: the step's `score` is
the reward function TRL calls, its `teacher_context` sits behind TRL's `teacher_context_builder` seam
(teacher.StepTeacherContext), one callback (`StepEvents`) hands TRL's step-end and save events to `after_update`
and `save`, and the trainer's `log` lets the step add its row. GRPO and SDPO build the same step with phases off.

Everything TRL already does (generation, losses, accelerate/DeepSpeed/FSDP, PEFT, vLLM, checkpoints, logging) stays
TRL's. What stays here besides the wiring: building the trainer for `train.algo`, the reflector's generator, the
memory store's opening, resume fixes for transformers/TRL (`SamplerReplayCallback`, `ScheduleOnResume`,
`StopAtTheEnd`) and the final model's save.
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
from pathlib import Path
from typing import Any

import torch
import trl
from datasets import Dataset
from transformers import TrainerCallback

from . import quiet
from .atomic import atomic_write_text
from .checkpoint import MEMORY_FILE, Manifest
from .rundir import restore_run_state
from .completions import CompletionsLog
from .config import RunConfig
from .dist import Ranks, SharedGeneration
from .envs import EnvironmentSuite
from .errors import RewardFunctionError
from .evaluate import evaluate_policy
from .memory.loop import LAST_REFLECTED, MemoryLoop
from .memory.reflect import FeedbackStatsReflector, ModelReflector, Reflector
from .memory.retrieve import token_counter
from .memory.store import MemoryStore
from .model_card import write_model_cards
from .phases import PhasedTrainer, optimizer_phase_callback, phase
from .precision import precision_used, run_cpu_bf16_hint, run_precision
from .prompts import student_messages
from .sdpo_loss import SDPOTrainer
from .sharded import policy_for_generation
from .step import PeriodicEval, Phases, PMDStep
from .teacher import StepTeacherContext
from .trl_args import lora_config, trl_config, trl_rejected

logger = logging.getLogger(__name__)


class StepSeams:
    """The trainer's side of the step: `log` lets the step add its part of each row (before TRL merges its own
    metrics), so it reaches metrics.jsonl and every tracker. The other seams are wired in `build_trainer`."""

    pmd_step: PMDStep | None = None

    def log(self, logs, start_time=None):
        if self.pmd_step is not None:
            logs = self.pmd_step.log(logs)
        return super().log(logs, start_time)


class GRPOTrainer(StepSeams, PhasedTrainer, trl.GRPOTrainer):
    """TRL's GRPOTrainer, its phases named and timed (phases.PhasedTrainer); the algorithm is TRL's."""


class DistillationTrainer(StepSeams, SDPOTrainer):
    """SDPO and PMD: TRL's SDPOTrainer with pmd's loss changes (sdpo_loss.SDPOTrainer)."""


def build_dataset(suite: EnvironmentSuite, split: str, system_prompt: str) -> Dataset:
    """Rows TRL understands: a conversational `prompt` plus `problem_uid` for the reward function."""
    problems = suite.problems(split)
    return Dataset.from_list([
        {"prompt": student_messages(suite.system_prompt(p, system_prompt), suite.format_prompt(p)),
         "problem_uid": p.uid} for p in problems
    ])


class MetricsJSONL(TrainerCallback):
    """One JSON object per logged row (TRL's logs + what the step added) for report.py; append-only, flushed per
    line. A logging integration like `report_to`'s, on the main process."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if _jsonable(v)}}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def _jsonable(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and math.isnan(v))


class StepEvents(TrainerCallback):
    """TRL's events to the step: after each optimizer step `after_update`, at each checkpoint `save`. Added last, so
    a checkpoint is completed after the Trainer's own save and every other callback's."""

    def __init__(self, step: PMDStep):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        self.step.after_update(state, control)

    def on_save(self, args, state, control, **kwargs):
        with phase("save"):
            self.step.save(args, state)


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


class GreedyChat:
    """Greedy chat generation for model-written reflection, with a model that `open_model()` lends for each call:
    the policy as it is now (this rank's share; sharded parameters gathered) or a separate reflector model."""

    def __init__(self, open_model, tokenizer, max_new_tokens: int, batch_size: int):
        self.open_model = open_model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def __call__(self, prompts: list[list[dict]]) -> list[str]:
        from .evaluate import generate

        with self.open_model() as model:
            return generate(model, self.tokenizer, prompts, self.max_new_tokens, 1.0, True, self.batch_size)


@contextlib.contextmanager
def _live_policy(trainer):
    with policy_for_generation(trainer) as model, trainer.accelerator.autocast():
        yield model


def make_reflector(cfg: RunConfig, trainer, tokenizer, ranks: Ranks) -> tuple[Reflector, SharedGeneration | None]:
    """`memory.reflector`: 'feedback-stats' (deterministic), 'policy', or a separate model's HF id / path. A model
    reflector's generation is shared by every rank (the policy may be sharded; a separate model is split by work)."""
    m = cfg.memory
    if m.reflector == "feedback-stats":
        return FeedbackStatsReflector(cfg.train.success_reward_threshold), None
    if m.reflector == "policy":
        local = GreedyChat(lambda: _live_policy(trainer), tokenizer, m.reflection_max_tokens, m.reflection_batch_size)
    else:  # loaded once per rank on its device, never trained
        from .models import load_model_and_tokenizer

        model, own_tokenizer = load_model_and_tokenizer(m.reflector, run_precision(cfg).inference,
                                                        device=str(trainer.accelerator.device))
        local = GreedyChat(lambda: contextlib.nullcontext(model), own_tokenizer, m.reflection_max_tokens,
                           m.reflection_batch_size)
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
                  model=None, tokenizer=None, callbacks: list | None = None, ranks: Ranks | None = None,
                  eval_every: int = 0):
    """The TRL trainer for `cfg.train.algo` (grpo | sdpo | pmd) with its step (`trainer.pmd_step`) wired to TRL's
    seams, and every callback pmd adds, registered here. `eval_every` > 0 evaluates the live policy during
    training. Returns (trainer, memory_loop | None)."""
    from transformers import AutoTokenizer

    ranks = ranks or Ranks.for_run(cfg.train.trl)
    quiet.install()  # known-harmless library warnings off, TRL's per-step SDPO diagnostics thinned (quiet.py)
    t = cfg.train
    phases = Phases.for_algo(t.algo)
    args = trl_config(cfg, str(run_dir / "checkpoints"), world_size=ranks.world)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    completions = (CompletionsLog(run_dir, t.trl.get("num_completions_to_print"), t.report_to)
                   if phases.teacher and t.trl.get("log_completions") else None)  # GRPO: TRL's own table
    step = PMDStep(suite, phases, ranks, PeriodicEval(cfg, eval_every, run_dir / "evals") if eval_every else None,
                   completions, demo_choice=t.demo_choice)
    common = dict(model=model if model is not None else model_path, reward_funcs=[step.reward_function()], args=args,
                  train_dataset=build_dataset(suite, "train", cfg.env.system_prompt), processing_class=tokenizer,
                  callbacks=list(callbacks or []), peft_config=lora_config(cfg))
    try:
        if phases.teacher:
            trainer = DistillationTrainer(**common, distillation_normalization=t.distillation_normalization,
                                          distil_active_rows_only=t.distil_active_rows_only,
                                          length_groups=t.length_groups)
        else:
            trainer = GRPOTrainer(**common)
    except ValueError as exc:  # TRL checks some train.trl options only here (against each other, the model, PEFT)
        if not t.trl:
            raise
        error = trl_rejected("SDPOTrainer" if phases.teacher else "GRPOTrainer", t.trl, exc)
        error.every_rank = ranks.distributed  # every rank builds the same trainer: said once, and left together
        raise error from None
    loop = memory_loop(cfg, trainer, suite, run_dir, tokenizer, ranks) if phases.memory else None
    tensorboard_into(trainer, run_dir / TENSORBOARD_DIR)
    trainer.pmd_step = step.attach(trainer, loop)
    if phases.teacher:
        trainer.teacher_context_builder = StepTeacherContext(trainer, step)
    for callback in (optimizer_phase_callback(), LogPrecision(trainer, run_cpu_bf16_hint(cfg)), SamplerReplayCallback(),
                     ScheduleOnResume(), MetricsJSONL(run_dir / "metrics.jsonl"), StepEvents(step)):
        trainer.add_callback(callback)
    # first: a resumed run with no step left leaves train() before any progress bar or tracker run opens
    trainer.callback_handler.callbacks.insert(0, StopAtTheEnd())
    return trainer, loop


# Where `report_to: tensorboard` writes its event files, inside the run directory (`tensorboard --logdir RUN/tb`).
TENSORBOARD_DIR = "tb"


def tensorboard_into(trainer, logdir: Path) -> None:
    """Point transformers' TensorBoardCallback at `logdir` instead of its default, `<output_dir>/runs/<date>_<host>`
    (RUN/checkpoints/runs/...), unless TENSORBOARD_LOGGING_DIR says otherwise: transformers 5 has no
    `logging_dir` argument; the callback reads that variable when the Trainer is built, and its directory later."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(logdir)


def memory_loop(cfg: RunConfig, trainer, suite: EnvironmentSuite, run_dir: Path, tokenizer,
                ranks: Ranks) -> MemoryLoop:
    """PMD's memory: the store lives on the main process only; a model reflector's generation is shared by every
    rank."""
    reflector, shared = make_reflector(cfg, trainer, tokenizer, ranks)
    store = open_memory(cfg, run_dir) if ranks.is_main else None
    return MemoryLoop(store, cfg.memory, suite, token_counter(tokenizer), reflector, ranks=ranks, shared=shared,
                      success_threshold=cfg.train.success_reward_threshold)


def train(cfg: RunConfig, run_dir: Path, model_path: str, suite: EnvironmentSuite,
          resume_from: str | None = None, callbacks: list | None = None, ranks: Ranks | None = None,
          eval_every: int = 0, evaluate_trained: bool = False) -> dict[str, Any]:
    """Run training; saves the final weights to `run_dir/final` and returns a summary.

    With `resume_from` (a complete checkpoint dir), run_dir is first put back to that checkpoint's step (memory,
    metrics; see rundir.restore_run_state) and training continues exactly where it stopped. Without, training starts
    over: state no checkpoint captured (a memory store, metrics rows, partial checkpoints) is discarded.

    Every rank calls this. `eval_every` > 0 evaluates the live policy during training; `evaluate_trained`
    evaluates the trained policy in place, before the trainer is gone (summary key `eval_trained`), so no rank has
    to read `final/` back from a filesystem it may not share."""
    ranks = ranks or Ranks.for_run(cfg.train.trl)
    ckpt = Path(resume_from) if resume_from else None
    # one writer for the run directory; the others wait for it, then receive the checkpoint's manifest
    manifest = ranks.on_main(lambda: _restore(run_dir, ckpt))
    trainer, loop = build_trainer(cfg, model_path, suite, run_dir, callbacks=callbacks, ranks=ranks,
                                  eval_every=eval_every)
    step = trainer.pmd_step
    try:
        if ckpt is not None and manifest is not None:
            step.load(ckpt, manifest)
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
        if step.stop_reason is not None:
            raise RewardFunctionError(f"{step.stop_reason} (its checkpoint is saved: fix the function, then "
                                      "pmd train --resume)")
        summary = {"algo": cfg.train.algo, "steps": trainer.state.global_step, "final_model": str(run_dir / "final"),
                   "precision": precision_used(trainer)}
        if failures := suite.reward_failures():
            summary["reward_function_errors"] = failures
        if judged := suite.judge_errors():
            summary["judge_errors"] = judged
        if evaluate_trained:
            summary["eval_trained"], summary["eval_trained_seconds"] = _final_evaluation(trainer, cfg, suite, ranks)
        _save_final(trainer, run_dir / "final", model_path, cfg)
        ranks.barrier()  # `final/` is whole before any rank goes on
        if loop is not None and loop.store is not None:
            summary["memory"] = loop.store.counts()
            summary["reflector"] = loop.reflector.name
    finally:
        if loop is not None and loop.store is not None:
            loop.store.close()
    return summary


def _final_evaluation(trainer, cfg: RunConfig, suite: EnvironmentSuite, ranks: Ranks) -> tuple[dict, float]:
    """The trained policy's evaluation and its seconds. With `eval.every_steps`, the periodic evaluation at the last
    step has already evaluated these very weights (same problems, seed and policy): it is reused, not redone, so the
    last step is evaluated once. That evaluation owns metrics.jsonl's `eval/...` row and evals/eval-step-N.json;
    the run writes the same result as eval_trained.json. A resumed run with no step left evaluates here."""
    last = trainer.pmd_step.last_eval
    if last is not None and last[0] == trainer.state.global_step:
        return last[1], 0.0  # its time was counted in training's (time/eval)
    t0 = time.time()
    return evaluate_policy(trainer, cfg, suite, ranks, desc="eval trained"), time.time() - t0


def _restore(run_dir: Path, ckpt: Path | None) -> Manifest | None:
    run_dir.mkdir(parents=True, exist_ok=True)
    return restore_run_state(run_dir, ckpt)


def _save_final(trainer, final: Path, base_model: str, cfg: RunConfig) -> None:
    """Weights + tokenizer + model card into a temp dir, then swapped in: `final/` is either the old or the new
    model, whole. `config.json` says `use_cache: true` (training turns the KV cache off; serving wants it on). The
    card (model_card.py) has no results yet: `run.Run` rewrites it once the run's evaluation is recorded.

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
    enable_kv_cache(tmp)
    write_model_cards(tmp, cfg, {"algo": cfg.train.algo, "steps": trainer.state.global_step,
                                 "precision": precision_used(trainer)})
    if final.exists():
        trash = final.with_name(f".{final.name}-{uuid.uuid4().hex[:8]}.trash")
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, final)


def enable_kv_cache(folder: Path) -> None:
    """`use_cache: true` in the saved config.json: TRL and gradient checkpointing turn the KV cache off on the model
    they train, and `save_pretrained` records that, so generation from `final/` would recompute every past token."""
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("use_cache") is not True:
        config["use_cache"] = True
        atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def merge_adapter(base_model: str, adapter: Path, out: Path, dtype: torch.dtype) -> None:
    """`base_model` with the adapter at `adapter` folded in, saved as plain weights at `out` (main process)."""
    from peft import PeftModel

    from .models import load_model_and_tokenizer

    base, _ = load_model_and_tokenizer(base_model, str(dtype).replace("torch.", ""), device="cpu")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out), is_main_process=True)
