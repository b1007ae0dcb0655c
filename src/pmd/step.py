"""One PMD step, in code. Read this file top to bottom to know what PMD does in one optimizer step.

TRL's SDPOTrainer drives the step (generation, the loss, the optimizer) and calls this object at its seams;
trainer.py wires each seam to one method here. The methods below come in the order they run, each timed as verl's
`fit()` times its phases (`time/<phase>` in every step's log row, metrics.jsonl and every tracker):

  generate         TRL: `prompts_per_step` problems x `num_generations` rollouts             time/generate
  score            the environment verifies each rollout: rewards to TRL, verdicts onto     time/reward
                   this step's `StepRecord` (by value; nothing is left on another object);   rewards/<term>/mean,
                   each reward term of a dataset task logged as TRL logs a reward function   rewards/<term>/std
  teacher_context  gather the global batch -> retrieve -> plan -> render: each rollout's     time/teacher_context,
                   teacher prompt (memory as it was before this step; writes nothing)        retrieve, plan, render
  loss             TRL's SDPO loss distils the teacher (EMA policy on that prompt) into      time/loss_forward,
                   the student, who never sees memory (sdpo_loss.SDPOTrainer); optimizer     backward, optimizer
  after_update     record -> reflect -> consolidate -> completions table -> stop check ->    time/record, reflect,
                   periodic evaluation                                                       consolidate, eval
  log              the step's metrics, memory counts and phase times join TRL's log row
  save             memory, EMA teacher and a manifest beside TRL's checkpoint, same step    time/save

GRPO and SDPO run this same object with phases switched off (`Phases.for_algo`): GRPO has no teacher and no memory
(score, loss, after_update's checks, log, save); SDPO has no memory to retrieve, record, reflect or save, and its
teacher is planned as PMD's with every memory empty, so that the two pick the same demonstration
(`train.demo_choice`); under `demo_choice: first` it is TRL's own builder, given each rollout's verifier feedback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import gather_object

from .checkpoint import MEMORY_FILE, TEACHER_FILE, Manifest, write_manifest
from .completions import CompletionsLog, completion_rows, teacher_prompts
from .dist import Ranks
from .envs import EnvironmentSuite
from .errors import CheckpointError
from .evaluate import eval_metrics, evaluate_policy, write_eval
from .memory.retrieve import LEVELS, RetrievedMemory, level_fractions
from .phases import phase
from .rewards import TRL_REWARD_KWARGS, Judged, completion_text, failure_feedback
from .sharded import ema_teacher, load_teacher_weights, save_teacher_weights
from .teacher import PlanSettings, TeacherRenderer, plan_teachers, teacher_metrics

if TYPE_CHECKING:
    from .config import RunConfig
    from .memory.loop import MemoryLoop

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phases:
    """Which phases of the PMD step an algorithm runs: GRPO and SDPO are PMD with phases off."""

    teacher: bool  # teacher_context: a self-teacher re-scores the rollouts (SDPO, PMD)
    memory: bool  # retrieve, record, reflect, consolidate, and the store in checkpoints (PMD)

    @classmethod
    def for_algo(cls, algo: str) -> Phases:
        return {"grpo": cls(teacher=False, memory=False), "sdpo": cls(teacher=True, memory=False),
                "pmd": cls(teacher=True, memory=True)}[algo]


@dataclass
class StepRecord:
    """What one step's phases hand each other, by value: opened by `score`, closed by `after_update`."""

    step: int  # the optimizer step being trained, 0-based (memory's numbering; metrics.jsonl's is 1-based)
    judged: list[Judged]  # score: this rank's rollouts with their verdicts
    batch: list[Judged] = field(default_factory=list)  # teacher_context: the global batch, gathered (PMD)
    retrieved: list[RetrievedMemory] = field(default_factory=list)  # retrieve: each global rollout's memory (PMD)
    metrics: dict[str, float] = field(default_factory=dict)  # teacher_context: activation, memory and cut fractions
    completions: list[dict] = field(default_factory=list)  # teacher_context: this rank's completions-table rows


@dataclass(frozen=True)
class PeriodicEval:
    """Memory-free held-out evaluation of the live policy every `every` steps and at the last (0: never)."""

    cfg: RunConfig
    every: int = 0
    out_dir: Path | None = None  # the main rank writes each whole result there (eval-step-N.json)

    def due(self, step: int, max_steps: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == max_steps)


class PMDStep:
    """The step's phases as methods, in order, for one trainer. `memory` is the MemoryLoop (PMD only)."""

    def __init__(self, suite: EnvironmentSuite, phases: Phases, ranks: Ranks | None = None,
                 periodic_eval: PeriodicEval | None = None, completions: CompletionsLog | None = None,
                 demo_choice: str = "best"):
        self.suite = suite
        self.demo_choice = demo_choice  # train.demo_choice: PMD's demonstration, the best sibling or TRL's first
        self.completions = completions  # train.trl.log_completions for SDPO/PMD (GRPO: TRL's own table)
        self.phases = phases
        self.ranks = ranks or Ranks()
        self.periodic_eval = periodic_eval
        self.trainer = None  # attach: the TRL trainer that drives the step
        self.memory: MemoryLoop | None = None  # attach: the memory loop (PMD)
        self.renderer: TeacherRenderer | None = None
        self.record: StepRecord | None = None  # the step in flight, from score to after_update
        self.stop_reason: str | None = None  # why training stopped early (a strict reward function raised)
        self._eval_row: dict[str, float] = {}  # this step's evaluation, for its log row
        # dataset tasks' reward terms (the same on every rank: each rank gathers their scores in `score`, or none does)
        self._reward_terms = suite is not None and any(getattr(env, "terms", None)
                                                       for env in suite.environments.values())
        self.last_eval: tuple[int, dict] | None = None  # (global step, result) of the latest periodic evaluation

    def attach(self, trainer, memory: MemoryLoop | None = None) -> PMDStep:
        """Join the trainer, which is built with `reward_function()` and so after this object."""
        if self.phases.memory != (memory is not None):
            raise ValueError("a step with memory phases needs a MemoryLoop, and only it")
        self.trainer, self.memory = trainer, memory
        self.renderer = TeacherRenderer(trainer) if self.phases.teacher else None
        return self

    # ------------------------------------------------------------------------------------------ score

    def reward_function(self) -> Callable[..., list[float]]:
        """`score` as the one reward function TRL calls (named env_reward in TRL's logs, as before)."""
        def env_reward(prompts, completions, problem_uid, completion_ids=None, **kwargs) -> list[float]:
            # TRL's extra reward arguments reach your own reward functions (dataset tasks) unchanged
            return self.score(kwargs["trainer_state"].global_step, completions, problem_uid, completion_ids,
                              {k: kwargs[k] for k in TRL_REWARD_KWARGS if k in kwargs})
        return env_reward

    def score(self, step: int, completions: list, problem_uids: list[str], completion_ids=None,
              trl_kwargs: dict[str, Any] | None = None) -> list[float]:
        """The environment verifies this rank's rollouts of `step`; the verdicts open the step's record."""
        problems = [self.suite.problem(uid) for uid in problem_uids]
        responses = [completion_text(c) for c in completions]
        verdicts = self.suite.verify_batch(problems, responses, completion_ids, trl_kwargs or {})
        judged = [Judged(p, r, v) for p, r, v in zip(problems, responses, verdicts, strict=True)]
        self.record = StepRecord(step=step, judged=judged)
        self._log_reward_terms(verdicts)
        return [j.verdict.reward for j in judged]

    def _log_reward_terms(self, verdicts: list) -> None:
        """Each reward term of a dataset task, over the global batch, as TRL logs each reward function:
        `rewards/<name>/mean` and `/std` (unweighted; a rollout whose task has no such term does not count, as
        TRL's NaN). TRL sees one reward function, `env_reward`: GRPO logs rewards/env_reward/* itself; SDPO's TRL
        trainer logs self_distillation/rewards/env_reward instead, so for SDPO and PMD they are added here, and
        every algorithm's row holds the whole family. Into TRL's own metrics, averaged over a logging period as
        TRL's are."""
        if not self._reward_terms or self.trainer is None:
            return
        rows = [{**v.details.get("terms", {}), **({"env_reward": v.reward} if self.phases.teacher else {})}
                for v in verdicts]
        rows = gather_object(rows)  # every rank scores its share of the batch; TRL's statistics are global
        metrics = self.trainer._metrics["train" if self.trainer.model.training else "eval"]
        for name in sorted({k for row in rows for k in row}):
            values = torch.tensor([row[name] for row in rows if name in row], dtype=torch.float64)
            metrics[f"rewards/{name}/mean"].append(values.mean().item())
            metrics[f"rewards/{name}/std"].append(values.std().item() if len(values) > 1 else float("nan"))

    # ------------------------------------------------------------------------------------------ teacher_context

    def teacher_context(self, output: dict[str, Any], prompts: list[Any], rewards: torch.Tensor,
                        trl_rule: Callable[[list[str | None]], tuple[dict, dict[str, float]]]
                        ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Each rollout's teacher input and the step's teacher metrics: gather -> retrieve -> plan -> render, every
        rank on the whole global batch, so groups that span ranks are planned whole. Reads memory, never writes it
        (recording is after the update). SDPO retrieves nothing, so its plan is SDPO's rule with PMD's choice of
        demonstration (`train.demo_choice`; the arms of a comparison then differ only in memory); under
        `demo_choice: first` SDPO's teacher is `trl_rule`, TRL's own builder given each rollout's feedback."""
        rec = self._record_of(len(prompts))
        if not self.phases.memory and self.demo_choice == "first":
            batch, rec.metrics = trl_rule(failure_feedback(rec.judged, self.trainer.args.success_reward_threshold))
            self._note_completions(rec, prompts, batch, output)
            return batch, rec.metrics
        tr = self.trainer
        n_local = len(prompts)
        start = tr.accelerator.process_index * n_local
        all_rewards, all_completion_ids, all_prompts, rec.batch = self._gather(output, prompts, rewards, rec.judged)
        if self.phases.memory:
            with phase("retrieve"):  # memory.content: placebo swaps what was found for a note, keeping the activation
                rec.retrieved = self.memory.retrieve([j.problem.uid for j in rec.batch], rec.step)
        else:  # SDPO: no memory
            rec.retrieved = [RetrievedMemory("", [], 0, False)] * len(rec.batch)
        with phase("plan"):
            settings = PlanSettings.from_args(tr.args, tr.num_generations if tr.model.training
                                              else tr.num_generations_eval, self.demo_choice)
            plans = plan_teachers(all_rewards, failure_feedback(rec.batch, settings.success_threshold),
                                  [m.text for m in rec.retrieved], settings)
        with phase("render"):
            mine = range(start, start + n_local)
            teacher, cuts = self.renderer.render([all_prompts[i] for i in mine],
                                                 [self.renderer.parts(plans[i], all_completion_ids) for i in mine])
        rec.metrics = {**teacher_metrics(plans, all_rewards, settings, rec.retrieved, cuts),
                       **{f"pmd/memory_level_frac/{lvl}": f for lvl, f in
                          level_fractions([m.item_refs for m in rec.retrieved]).items() if lvl in LEVELS}}
        if not self.phases.memory:  # SDPO: no memory keys, and its own rule's fraction is reprompt_sample_fraction
            rec.metrics = {k: v for k, v in rec.metrics.items()
                           if not k.startswith("pmd/memory") and k != "pmd/sdpo_teacher_active_fraction"}
        active = torch.tensor([float(plans[i].active) for i in mine], device=tr.accelerator.device)
        batch = {
            "teacher_input_ids": torch.cat([teacher["prompt_ids"], output["completion_ids"]], dim=1),
            "teacher_attention_mask": torch.cat([teacher["prompt_mask"], output["completion_mask"]], dim=1),
            "self_distillation_mask": active,
        }
        self._note_completions(rec, prompts, batch, output,
                               [rec.retrieved[i].text for i in mine] if self.phases.memory else None)
        return batch, rec.metrics

    def _note_completions(self, rec: StepRecord, prompts: list[Any], batch: dict[str, Any], output: dict[str, Any],
                          memory: list[str] | None = None) -> None:
        """This rank's completions-table rows (`train.trl.log_completions`), written after the update."""
        if self.completions is None:
            return
        teacher = teacher_prompts(batch, output["completion_ids"].shape[1], self.trainer.processing_class)
        rec.completions = completion_rows(rec.step + 1, prompts, rec.judged,
                                          [bool(a) for a in batch["self_distillation_mask"].tolist()], teacher, memory)

    def _record_of(self, n: int) -> StepRecord:
        """This step's record, which `score` opened for the same `n` rollouts (TRL scores, then builds the teacher's
        context, on one batch: tests/test_trl_contract.py pins that order)."""
        rec = self.record
        if rec is None or len(rec.judged) != n:
            got = "none" if rec is None else str(len(rec.judged))
            raise RuntimeError(f"expected the verdicts of {n} rollouts just scored, found {got}: TRL's order of "
                               "reward and teacher context changed (see tests/test_trl_contract.py)")
        return rec

    def _gather(self, output, prompts, rewards, judged):
        """The global batch on every rank: rewards, completion ids (padded across ranks), prompts, verdicts."""
        acc = self.trainer.accelerator
        padded = acc.pad_across_processes(output["completion_ids"], dim=1,
                                          pad_index=self.trainer._tokenizer.pad_token_id)
        return acc.gather(rewards).tolist(), acc.gather(padded), gather_object(prompts), gather_object(judged)

    # ------------------------------------------------------------------------------------------ after_update

    def after_update(self, state, control) -> None:
        """After the optimizer step: record -> reflect -> consolidate -> stop check -> periodic evaluation."""
        rec, self.record = self.record, None
        step = state.global_step - 1  # the step whose rollouts were just trained on
        if self.phases.memory:
            if rec is not None:
                with phase("record"):
                    self.memory.record(step, rec.batch, rec.retrieved)
            with phase("reflect"):
                self.memory.maybe_reflect(step)
            with phase("consolidate"):
                self.memory.maybe_consolidate(step)
        if self.completions is not None:  # every rank: the table holds the global batch
            rows = [r for part in self.ranks.gather(rec.completions if rec is not None else []) for r in part]
            if self.ranks.is_main and rows:
                self.completions.write(state.global_step, rows)
        self._stop_check(state, control)
        if self.periodic_eval is not None and self.periodic_eval.due(state.global_step, state.max_steps):
            self._evaluate(state.global_step, control)

    def _stop_check(self, state, control) -> None:
        """`strict: true` on a dataset task: a reward function that raised stops training after this step, with a
        checkpoint, on every rank together (any rank's failure counts)."""
        reasons = [r for r in self.ranks.gather(self.suite.stop_reason()) if r]
        if reasons and self.stop_reason is None:
            self.stop_reason = f"{reasons[0]}; stopped after step {state.global_step}"
            control.should_save = True
            control.should_training_stop = True

    def _evaluate(self, step: int, control) -> None:
        """Every rank takes its share; the result joins this step's log row (`eval/...`) and is kept as
        `last_eval`, so a final evaluation of the same weights (the last step) reuses it instead of redoing it."""
        with phase("eval"):
            result = evaluate_policy(self.trainer, self.periodic_eval.cfg, self.suite, self.ranks,
                                     desc=f"eval step {step}", leave=False)
        if self.periodic_eval.out_dir is not None and self.ranks.is_main:
            write_eval(self.periodic_eval.out_dir / f"eval-step-{step}.json", result)
        self.last_eval = (step, result)
        self._eval_row = eval_metrics(result)
        control.should_log = True  # this step's row carries the result, whatever logging_steps says

    # ------------------------------------------------------------------------------------------ log

    def log(self, logs: dict[str, float]) -> dict[str, float]:
        """What pmd adds to a TRL log row: this step's evaluation, the memory's counts and totals, and the errors
        scored 0 so far (your reward functions', the judge's). The phases' seconds (`time/<phase>`) are added by the
        trainer (phases.PhasedTrainer), which owns the clock."""
        row = dict(logs)
        row.update(self._eval_row)
        self._eval_row = {}
        if self.memory is not None:
            row.update(self.memory.metrics())
        if failures := self.suite.reward_failures():
            row["env/reward_function_errors_total"] = float(sum(failures.values()))
        if judged := self.suite.judge_errors():
            row["env/judge_errors_total"] = float(sum(judged.values()))
        return row

    # ------------------------------------------------------------------------------------------ save and resume

    def save(self, args, state) -> None:
        """Complete TRL's checkpoint of this step with what TRL does not save (the memory store, the EMA teacher,
        the memory's counters), then write its manifest, which marks it complete."""
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
        if self.memory is not None:
            self.memory.store.backup_to(ckpt / MEMORY_FILE)
        write_manifest(ckpt, state.global_step, has_memory=self.memory is not None, has_teacher=teacher is not None,
                       loop_stats=self.memory.state_dict() if self.memory is not None else None,
                       resumable=not args.save_only_model)

    def load(self, ckpt: Path, manifest: Manifest) -> None:
        """What `Trainer.train(resume_from_checkpoint=...)` does not restore: the EMA teacher and the memory's
        counters (the store itself was put back with the run directory: rundir.restore_run_state)."""
        trainer = self.trainer
        if ema_teacher(trainer) is not None:
            if not manifest.has_teacher:
                raise CheckpointError(f"{ckpt}: no EMA teacher weights in this checkpoint, but "
                                      "train.teacher_model_kind is 'ema'; resume with the config the run was started "
                                      "with")
            load_teacher_weights(trainer, ckpt / TEACHER_FILE, trainer.args.should_save)
            if getattr(trainer, "ema", None) is not None:
                trainer.ema.shadow.clear()  # an fp32 shadow (bf16 teacher storage) restarts from the saved weights
        if self.memory is not None and manifest.loop_stats is not None:
            self.memory.load_state_dict(manifest.loop_stats)

