"""Typed run configuration: dataclasses with defaults and one-line help, YAML in/out, strict validation.

Precedence: dataclass defaults < YAML file < CLI `--set section.key=value`. Unknown keys and wrong types raise
`ConfigError` naming the dotted path and what was expected, so a typo never silently falls back to a default.

Every field states its allowed values next to its default (`_f(default, help, ge=..., gt=..., le=...)`, or
`unbounded=` with the reason). Every section checks itself when it is built (`__post_init__`: `check_section` for
each field's type and range, then the section's own cross-field rules), so a config built in Python is checked like
one read from YAML, with the same one-line errors naming `section.key`. A rule spanning two sections would go in
RunConfig's; none does today. What depends on the model or the data, known only at preflight (`check_training_set`,
models.check_model_fits), is checked there. How the YAML text is read (size limit, no aliases, no duplicate keys) is
yaml_input.py's; how `--set` edits it, config_overrides.py's; field machinery, config_fields.py's.

`train:` stays one flat mapping, as in every shipped config and TRL's own GRPOConfig: its fields come in blocks by
concern (optimisation and batch, generation, distillation and teacher, checkpointing, logging, LoRA, TRL
passthrough), marked by comments as GRPOConfig marks its groups. Nested sub-sections would move every key users
write (`train.learning_rate`, `train.lora_r`) for no new meaning; the blocks give the same reading order.

The env section (EnvConfig, TaskConfig) is declared in pmd/envs/env_config.py, beside the environments that read
it, and re-exported here: pmd.envs never imports this module, which imports pmd.envs to check each task's params.
Other modules import the sections from here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from .config_fields import (INT_MAX, MAX_PROBLEMS, MOVED_KEYS, PROBLEMS_EXPECT, _build, _f,  # noqa: F401
                            build_dataclass, check_fields, check_section, range_text)
from .config_overrides import apply_override, blame, override_origin
from .envs import EnvConfig, TaskConfig, task_params  # noqa: F401  (the env section lives with the environments)
from .errors import ConfigError
from .lora_targets import check_lora_form
from .integrations import check_report_to
from .trl_args import check_batch_options, check_trl_overrides
from .yaml_input import read_config_file


@dataclass
class ModelConfig:
    name_or_path: str = _f("smollm2-135m-instruct", "Built-in name, HF model id, or local folder.", nonempty=True)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto", "Storage of the trained weights and optimizer state: auto = float32 (master weights); bfloat16 = pure "
                "bf16 (updates below bf16's resolution are lost); float16 is refused (precision.py).")
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto", "Autocast dtype of forward and backward: auto = bfloat16 on a GPU with bf16, else float32 (also on "
                "bf16 CPUs: docs/benchmarks.md); float16 (GPU only) adds the Trainer's loss scaling.")

    def __post_init__(self) -> None:
        check_section(self, "model")


@dataclass
class TrainConfig:
    """`train:` in YAML, one flat mapping; its fields come in blocks by concern (see the module docstring)."""

    # --- algorithm, optimisation and batch: what one optimizer step is
    algo: Literal["grpo", "sdpo", "pmd"] = _f("sdpo", "Training algorithm.")
    steps: int = _f(8, "Optimizer steps.", gt=0)
    learning_rate: float = _f(1e-5, "AdamW learning rate, in (0, 1].", gt=0, le=1)
    seed: int = _f(0, "Training seed.", ge=0)
    prompts_per_step: int = _f(4, "Distinct problems per optimizer step over all ranks (each gets num_generations "
                                  "rollouts).", gt=0)
    num_generations: int = _f(4, "Rollouts per problem (the group).", ge=2, expect=">= 2 (groups need siblings)")
    per_device_batch_size: int = _f(0, "Sequences per device per forward/backward micro-batch (0 = derive).", ge=0,
                                   expect=">= 0 (0 = derive)")
    gradient_accumulation_steps: int = _f(0, "Micro-batches per device per optimizer step (0 = derive; 1 if both are "
                                             "0).", ge=0, expect=">= 0 (0 = derive)")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory.")

    # --- generation: the student's rollouts
    max_prompt_length: int = _f(256, "Student prompt tokens kept (left-truncated).", gt=0)
    max_completion_length: int = _f(48, "Generated tokens per rollout (with max_prompt_length, within the model's "
                                                 "context: checked at preflight).", gt=0)
    temperature: float = _f(1.0, "Sampling temperature for rollouts (> 0).", gt=0)
    top_p: float = _f(1.0, "Nucleus sampling for rollouts, in (0, 1] (1.0 = off).", gt=0, le=1)
    use_vllm: bool = _f(False, "Generate with vLLM (GPU only).")

    # --- distillation and teacher (sdpo, pmd)
    distillation_mode: Literal["sampled_token", "full_logits", "topk_logits"] = _f(
        "topk_logits", "SDPO distillation objective (top-k keeps memory bounded at scale)."
    )
    distillation_topk: int = _f(20, "k for topk_logits (at most the vocabulary: checked at preflight).", gt=0)
    distillation_add_tail: bool = _f(True, "Add a tail bucket for the non-top-k mass.")
    distillation_weight: float = _f(1.0, "SDPO/PMD: weight of distillation vs the GRPO policy-gradient term, in "
                                          "[0, 1].", ge=0, le=1)
    distillation_normalization: Literal["active_tokens", "all_samples"] = _f(
        "active_tokens", "SDPO/PMD distillation loss average per micro-batch: active_tokens = over the tokens of "
        "teacher-active samples, as the SDPO reference; all_samples = TRL's per-sequence mean over every sample "
        "(inactive = 0), which scales the distillation weight with the active fraction. Default active_tokens: SDPO "
        "and PMD activate different fractions, and should differ in signal, not in step size."
    )
    distil_active_rows_only: bool = _f(
        True, "SDPO/PMD: forward and back-propagate only the rollouts whose teacher is active (the same loss and "
              "gradients, fewer passes; used when distillation_weight is 1); False = TRL's pass over every rollout.")
    length_groups: int = _f(4, "SDPO/PMD on one process: at most this many forwards per micro-batch, rows of similar "
                               "length together to skip padding (same logits); 1 = TRL's single padded forward.", ge=1)
    teacher_model_kind: Literal["base", "live", "ema"] = _f(
        "ema", "Teacher weights: ema = an EMA of the policy, live = the policy itself, base = the initial policy, "
               "frozen (for pmd, the pmd-frozen-teacher ablation: memory still grows).")
    max_reprompt_len: int = _f(1024, "Teacher prompt tokens kept (PMD cuts memory, then the demonstration, then the "
                                     "feedback, before the problem; SDPO cuts from the left, as TRL).", gt=0)
    include_environment_feedback: bool = _f(True, "SDPO: put the verifier's feedback into the teacher prompt.")
    remove_thinking_from_demonstration: bool = _f(False, "SDPO/PMD: drop <think>...</think> from a sibling's "
                                                         "demonstration (False as TRL; the SDPO reference uses True).")
    success_reward_threshold: float = _f(1.0, "Reward at or above which a rollout counts as a success.",
                                         unbounded="rewards are weighted sums of your functions: any scale")
    demo_choice: Literal["best", "first"] = _f(
        "best", "SDPO/PMD: the successful sibling shown to the teacher: best = highest reward (first of equals), "
                "first = TRL's first at or above success_reward_threshold (the same with binary rewards; SDPO under "
                "first is TRL's own builder).")

    # --- checkpointing
    save_steps: int = _f(0, "Checkpoint every N steps for --resume (0 = none: a killed run restarts from step 0).",
                         ge=0, expect=">= 0 (0 = no checkpoints)")
    save_total_limit: int = _f(2, "Keep the newest N checkpoints (0 = all; 1 is refused: see __post_init__).", ge=0)
    save_optimizer: bool = _f(True, "False: checkpoints keep weights, EMA teacher and memory only (about half the "
                                    "size) and cannot be resumed.")

    # --- logging
    logging_steps: int = _f(1, "Log metrics every N steps.", gt=0)
    report_to: str | list[str] = _f("none", "'none', or one or a list of transformers' integrations (wandb, "
                                            "tensorboard, trackio, mlflow, ...).")

    # --- LoRA (lora_r 0 = full fine-tuning)
    lora_r: int = _f(0, "LoRA rank (0 = full fine-tuning).", ge=0, expect=">= 0 (0 = full fine-tuning)")
    lora_alpha: int = _f(0, "LoRA scaling numerator: updates are scaled by lora_alpha / lora_r (0 = 2 x lora_r).",
                         ge=0, expect="> 0, or 0 for 2 x train.lora_r")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA branch's input during training, in [0, 1).", ge=0, lt=1)
    lora_target_modules: str | list[str] = _f("all-linear", "Modules that get adapters: 'all-linear' (every linear "
                                                            "layer but the output head) or a list of names, e.g. "
                                                            "[q_proj, v_proj].")

    # --- TRL passthrough
    trl: dict[str, Any] = _f({}, "Any other GRPOConfig/SDPOConfig field, passed through to TRL unchanged.")

    def __post_init__(self) -> None:
        check_section(self, "train")
        if self.save_total_limit == 1:
            raise ConfigError(f"train.save_total_limit: expected 0 (keep all) or >= 2, got {self.save_total_limit}: "
                              "the Trainer deletes older checkpoints before pmd marks the newest complete, so a kill "
                              "then would leave none to resume from")
        check_lora_form(self.lora_target_modules)
        check_batch_options(self.prompts_per_step, self.num_generations, self.per_device_batch_size,
                            self.gradient_accumulation_steps)
        check_report_to(self.report_to)
        check_trl_overrides(self.algo, self.trl)  # imports TRL only when train.trl is non-empty


# Default reserved shares of the retrieval budget: raw attempts no longer take it all before insights and patterns.
RETRIEVAL_LEVEL_SHARES = {"experience": 0.35, "insight": 0.25, "pattern": 0.2, "similar": 0.2}


def check_level_shares(shares: Any) -> dict[str, float]:
    """Validated `memory.retrieval.level_shares`: known levels only, each a finite number >= 0, missing levels at
    their default, total <= 1 (a share is a reservation; a total above 1 would reserve more than the budget, so it is
    refused rather than silently rescaled)."""
    if not isinstance(shares, dict):
        raise ConfigError(f"level_shares: expected a mapping of level -> share, got {shares!r}")
    unknown = sorted(set(shares) - set(RETRIEVAL_LEVEL_SHARES))
    if unknown:
        raise ConfigError(f"level_shares: unknown level {unknown[0]!r} (known: {', '.join(RETRIEVAL_LEVEL_SHARES)})")
    out = dict(RETRIEVAL_LEVEL_SHARES)
    for level, value in shares.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"level_shares: {level}: expected a finite number >= 0, got {value!r}")
        out[level] = float(value)
    total = sum(out.values())
    if total > 1.0 + 1e-9:
        raise ConfigError(f"level_shares: shares add up to {total:g} (with defaults for levels not given: {out}); "
                          "expected <= 1")
    return out


@dataclass(frozen=True)
class RetrievalConfig:
    """What the teacher may see of memory, and how much of it (see memory/retrieve.py for the priority order)."""

    token_budget: int = _f(192, "Tokens of retrieved memory in the teacher prompt (hard cap).", ge=0)
    scope: Literal["all", "same_problem"] = _f(
        "all", "Where memory may come from: all, or same_problem = this problem's own attempts and insights only, no "
               "patterns and no other problem (the pmd-same-problem control).")
    max_similar_problems: int = _f(3, "Other problems whose insights may be shown.", ge=0)
    include_experience: bool = _f(True, "Show this problem's past attempts (best pass, most useful failure).")
    include_insights: bool = _f(True, "Show this problem's and similar problems' strategies and lessons.")
    include_patterns: bool = _f(True, "Show active cross-problem patterns.")
    max_own_insights: int = _f(8, "Cap on this problem's insights considered.", ge=0)
    max_patterns: int = _f(4, "Cap on patterns considered.", ge=0)
    max_insights_per_similar_problem: int = _f(2, "Cap on insights shown per similar problem.", ge=0)
    max_feedback_chars: int = _f(300, "Feedback quoted with a failed attempt is clipped to this many characters.",
                                 ge=0)
    level_shares: dict[str, float] = _f(
        dict(RETRIEVAL_LEVEL_SHARES),
        "Share of token_budget reserved per level (experience, insight, pattern, similar); a level left out keeps its "
        "default; total <= 1. What a level leaves unused, and the unreserved rest, go to all levels in priority order.")
    recency_half_life_steps: float = _f(
        20.0, "Within a level, an insight's support and an attempt's reward halve in weight every N steps since last "
              "confirmed/made (0 = no ageing).", ge=0)

    def __post_init__(self) -> None:
        check_section(self, "memory.retrieval")
        object.__setattr__(self, "level_shares", check_level_shares(self.level_shares))  # frozen dataclass


@dataclass(frozen=True)
class ConsolidationConfig:
    """How insights become cross-problem patterns, and when insights and patterns retire (memory/patterns.py,
    memory/ageing.py)."""

    mode: Literal["deterministic", "model"] = _f(
        "deterministic", "Who writes a pattern: 'deterministic' (templates keyed by the insights' tag) or 'model' "
        "(the reflector model, memory.reflector, summarises the cluster; checked like a template).")
    similarity_threshold: float = _f(
        0.5, "model mode: a written line this similar (Jaccard over content words) to another active pattern of the "
        "same kind is a duplicate and is not used.", gt=0, le=1)
    min_problems: int = _f(2, "Distinct problems a behaviour must recur in (freshly) to be an active pattern.", ge=1)
    stale_after_steps: int = _f(20, "An insight confirmed more than this many steps ago no longer counts as evidence.",
                                ge=0)
    max_active: int = _f(64, "Cap on active patterns; the least supported are retired first.", ge=0)
    model_notes: int = _f(6, "model mode: insights (one per problem) shown to the model for one pattern.", ge=2,
                          expect=">= 2 (a pattern spans problems)")
    lesson_stale_after_attempts: int = _f(
        16, "Retire a lesson once its problem's last N attempts since it was confirmed show no recurrence of its "
        "failure kind (0 = never).", ge=0)
    strategy_failed_attempts: int = _f(
        16, "Retire a strategy once its problem's last K attempts since it was confirmed all failed (0 = never).", ge=0)

    def __post_init__(self) -> None:
        check_section(self, "memory.consolidation")


@dataclass
class MemoryConfig:
    mode: Literal["evolving", "frozen"] = _f("evolving", "frozen: memory stops growing after freeze_after_steps.")
    freeze_after_steps: int = _f(0, "frozen mode: steps of memory growth before the freeze (0 = load only).", ge=0)
    load_from: str = _f("", "Start from this memory DB (copied into the run directory).")
    reflect_every: int = _f(2, "Reflect on problems with new attempts every N steps.", gt=0)
    reflector: str = _f(
        "feedback-stats", "Insight source: 'policy', 'feedback-stats' (deterministic), or an HF id/path.", nonempty=True
    )
    reflection_max_tokens: int = _f(64, "Tokens generated per reflection.", gt=0)
    reflection_batch_size: int = _f(16, "Reflection prompts per generate() call (model-written reflection).", gt=0)
    consolidate_every: int = _f(4, "Consolidate patterns every N steps.", gt=0)
    content: Literal["retrieved", "placebo"] = _f(
        "retrieved", "What the teacher reads where retrieval found memory: the retrieved lines, or placebo = "
                     "prompts.PLACEBO_MEMORY, a note with no information (the pmd-placebo control: same activation).")
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig, metadata={"help": "What the teacher sees."})
    consolidation: ConsolidationConfig = field(
        default_factory=ConsolidationConfig, metadata={"help": "How insights become patterns and retire."}
    )

    def __post_init__(self) -> None:
        check_section(self, "memory")
        if self.consolidation.mode == "model" and self.reflector == "feedback-stats":
            raise ConfigError("memory.consolidation.mode: 'model' needs a model to write patterns: set "
                              "memory.reflector to 'policy' or a model's HF id / path (feedback-stats generates no "
                              "text)")


@dataclass
class EvalConfig:
    num_samples: int = _f(0, "Sampled answers per problem for avg@k / pass@k, on top of the one greedy answer (each "
                             "evaluation costs problems x (1 + num_samples) generations); 0 = greedy only.", ge=0)
    temperature: float = _f(1.0, "Sampling temperature for avg@k (> 0).", gt=0)
    top_p: float = _f(1.0, "Nucleus sampling for avg@k, in (0, 1] (1.0 = off).", gt=0, le=1)
    max_new_tokens: int = _f(48, "Generated tokens per answer.", gt=0)
    batch_size: int = _f(32, "Prompts per generate() call.", gt=0)
    every_steps: int = _f(0, "Memory-free held-out evaluation every N steps and at the last, logged through the "
                             "Trainer (eval/... in metrics.jsonl and every report_to tracker); 0 = off for pmd train, "
                             "every 4 steps for pmd compare (its curves need it).", ge=0, expect=">= 0 (0 = off)")
    memory_at_inference: bool = _f(False, "Put retrieved memory in the prompt (comparison only; PMD evals without).")

    def __post_init__(self) -> None:
        check_section(self, "eval")


# `pmd compare`'s evaluation period when eval.every_steps is 0 (off): its learning curves and final accuracy are
# read from the periodic evaluations (4 was compare.eval_every's default, before the two keys merged).
COMPARE_EVAL_EVERY = 4


def compare_eval_every(eval_cfg: EvalConfig) -> int:
    """eval.every_steps as `pmd compare` runs it: the same key as `pmd train`'s, but never off."""
    return eval_cfg.every_steps or COMPARE_EVAL_EVERY


# `pmd compare`'s variants: the three algorithms, PMD's two ablations and its two memory controls (placebo: the same
# activation with no information; same-problem: no other problem's memory). compare.variant_config says what each sets.
VARIANTS = ("grpo", "sdpo", "pmd", "pmd-frozen-memory", "pmd-frozen-teacher", "pmd-placebo", "pmd-same-problem")


@dataclass
class CompareConfig:
    variants: list[str] = _f(list(VARIANTS), "Algorithms, ablations and controls to run side by side (each once).",
                             min_len=1)
    seeds: list[int] = _f([0, 1, 2], "Training seeds; every variant runs on each (same problems, same budget).", ge=0,
                          min_len=1, max_len=1000, max_len_why="each seed is one training run per variant")
    frozen_memory_steps: int = _f(4, "pmd-frozen-memory: steps of memory growth before the freeze.", ge=0)
    out_dir: str = _f("runs/compare", "Where per-variant run directories, curves and the table go.", nonempty=True)

    def __post_init__(self) -> None:
        check_section(self, "compare")
        _check_compare(self)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    run_dir: str = _f("runs/quickstart", "Where config, metrics, memory, checkpoints and the report go.", nonempty=True)

    def __post_init__(self) -> None:
        check_section(self, "")  # each section checked itself when built; no check spans two sections today


# ----------------------------------------------------------------------------------------------- loading


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from plain data (as loaded from YAML): each section checks itself as it is built, then each
    task's params against its kind."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    cfg = _build(RunConfig, data, "")
    check_task_params(cfg.env)
    return cfg


def check_task_params(env: EnvConfig) -> None:
    """Each task's params against its kind's typed dataclass, so a typo fails at load and not when the run starts.
    Not in EnvConfig's own check: it imports the kind's module (reasoning-gym), and a task made in Python is checked
    when its environment is made (make_environment), naming its bad params."""
    for i, task in enumerate(env.tasks):
        task_params(task, env, f"env.tasks[{i}]")


def load_config(path: str | Path | None = None, overrides: Sequence[str] | None = None,
                origins: Sequence[str | None] | None = None) -> RunConfig:
    """Load YAML (optional), apply `section.key=value` overrides, validate. Errors name file and key, or, when the
    offending key came from an override, the override as the user gave it (`origins[i]` for `overrides[i]`, e.g.
    "--algo pmd"; default `--set KEY=VALUE`).

    Override keys are dotted; list items are addressed by index in brackets (`env.tasks[0].params.max_terms=3`; an
    item must exist: set the whole list to add one). Values are YAML, with numbers in any YAML 1.1 or 1.2 spelling."""
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    overrides = list(overrides or [])
    origins = list(origins or [])
    origins += [None] * (len(overrides) - len(origins))
    applied = []
    for assignment, origin in zip(overrides, origins):
        origin = origin or override_origin(assignment)
        applied.append((apply_override(data, assignment, origin, lambda: to_dict(RunConfig())), origin))
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        blamed = blame(str(exc), applied)
        if blamed is not None:
            raise ConfigError(f"{blamed}: {exc}") from None
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None


def _check_compare(c: CompareConfig) -> None:
    """Known variants, and no variant or seed twice (each (variant, seed) is one run directory)."""
    for i, variant in enumerate(c.variants):
        if variant not in VARIANTS:
            raise ConfigError(f"compare.variants[{i}]: unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    for key, items in (("compare.variants", c.variants), ("compare.seeds", c.seeds)):
        first: dict[Any, int] = {}  # one pass: list.count per item was quadratic (100,000 seeds: minutes, no word)
        for i, x in enumerate(items):
            if x in first:
                raise ConfigError(f"{key}: names {x} twice ({key}[{first[x]}] and [{i}]); each runs once")
            first[x] = i


def check_training_set(train: TrainConfig, n_problems: int) -> None:
    """At preflight, once the environments have loaded: one step draws `train.prompts_per_step` DISTINCT problems
    (TRL's sampler drops an incomplete batch), so fewer training problems than that would train 0 steps and save the
    base model as final, exit 0. Refused instead (the number of problems is known only after the data loads)."""
    if train.prompts_per_step > n_problems:
        raise ConfigError(f"train.prompts_per_step: {train.prompts_per_step} distinct problems per step, but the "
                          f"training set has {n_problems}; lower train.prompts_per_step to at most {n_problems} or "
                          "add problems (env.train_size, more tasks or data)")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the fully resolved config (every default made explicit) so a run can be reproduced from its folder."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def config_changes(path: Path, cfg: RunConfig) -> list[str]:
    """Dotted keys whose value differs between the saved config and `cfg` (empty if none or unreadable)."""
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        return {k: v for key, val in d.items() for k, v in flat(val, f"{prefix}{key}.").items()}

    a, b = flat(old), flat(to_dict(cfg))
    return sorted(k.rstrip(".") for k in set(a) | set(b) if a.get(k) != b.get(k))
