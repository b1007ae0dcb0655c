"""Our config -> TRL's args: the one place where a pmd `RunConfig` becomes a `GRPOConfig` / `SDPOConfig`.

Decisions live here as small pure functions, so that they can be tested without a trainer:

* `batch_layout`: `train.prompts_per_step` is GLOBAL (distinct problems per optimizer step over all ranks, as in the
  paper); how those sequences split into ranks, micro-batches and accumulation steps.
* `check_trl_keys`: which TRL fields `train.trl` may pass through (every field pmd does not already set from one of
  its own options, or decide itself for a stated reason).
(`integrations.py` checks that the trackers and vLLM a run asks for exist.)

This module imports neither torch nor TRL at import time: `pmd.config` calls into it while loading a config, and
loading a config must stay fast (TRL is imported only when `train.trl` is non-empty).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Mapping

from .completions import COMPLETIONS_KEYS, check_completions_keys
from .errors import ConfigError

if TYPE_CHECKING:
    import torch

    from .config import RunConfig


# ----------------------------------------------------------------------------------------------- batch layout


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's sequences are laid out over ranks, micro-batches and accumulation steps."""

    per_device_batch_size: int  # sequences in one forward/backward micro-batch on one rank
    gradient_accumulation_steps: int  # micro-batches per rank per optimizer step
    sequences_per_step: int  # all ranks: prompts_per_step x num_generations
    sequences_per_rank: int  # one rank's share of a step: per_device_batch_size x gradient_accumulation_steps


def batch_layout(prompts_per_step: int, num_generations: int, world_size: int, per_device_batch_size: int = 0,
                 gradient_accumulation_steps: int = 0) -> BatchLayout:
    """Split one optimizer step's G = prompts_per_step x num_generations sequences over the ranks.

    The rule: G == per_device_batch_size x gradient_accumulation_steps x world_size. Both 0: one micro-batch per
    step (grad accumulation 1, G / world_size sequences per device). One given: the other is derived. A split that
    is not whole, or explicit values that disagree, is a ConfigError with the arithmetic.

    Why this is exactly one generation round of `prompts_per_step` distinct prompts per optimizer step, in TRL 1.16's
    terms: GRPOConfig/SDPOConfig default `steps_per_generation` to `gradient_accumulation_steps`, so
    `generation_batch_size = per_device_train_batch_size x world_size x steps_per_generation = G`; the trainer's
    `RepeatSampler` draws `generation_batch_size / num_generations = prompts_per_step` distinct prompts per generation
    batch, each repeated `num_generations` times; rollouts are generated once every `steps_per_generation x
    num_iterations` micro-steps, i.e. once per optimizer step (pmd keeps num_iterations at 1, see `PMD_DECIDES`);
    and TRL requires `generation_batch_size % num_generations == 0`, which G satisfies by construction. A group may
    span ranks: TRL gathers rewards, and pmd's teacher builder gathers the whole batch, before grouping.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    for key, value in (("train.per_device_batch_size", per_device_batch_size),
                       ("train.gradient_accumulation_steps", gradient_accumulation_steps)):
        if value < 0:
            raise ConfigError(f"{key}: expected >= 0 (0 = derive), got {value}")
    total = prompts_per_step * num_generations
    what = (f"train.prompts_per_step x train.num_generations = {prompts_per_step} x {num_generations} = {total} "
            "sequences")
    ranks = f"{world_size} rank{'s' if world_size != 1 else ''}"
    pd, ga = per_device_batch_size, gradient_accumulation_steps
    if pd and ga:
        if pd * ga * world_size != total:
            raise ConfigError(f"{what} per step, but train.per_device_batch_size {pd} x "
                              f"train.gradient_accumulation_steps {ga} x {ranks} = {pd * ga * world_size}; "
                              "set one of the two to 0 to derive it")
    elif pd:
        if total % (pd * world_size):
            raise ConfigError(f"{what} do not split over {ranks} x train.per_device_batch_size {pd} "
                              f"({total} is not a multiple of {pd * world_size})")
        ga = total // (pd * world_size)
    elif ga:
        if total % (ga * world_size):
            raise ConfigError(f"{what} do not split over {ranks} x train.gradient_accumulation_steps {ga} "
                              f"({total} is not a multiple of {ga * world_size})")
        pd = total // (ga * world_size)
    else:
        if total % world_size:
            raise ConfigError(f"{what} do not split over {ranks} ({total} is not a multiple of {world_size}); "
                              "change train.prompts_per_step or the number of ranks")
        ga, pd = 1, total // world_size
    return BatchLayout(per_device_batch_size=pd, gradient_accumulation_steps=ga, sequences_per_step=total,
                       sequences_per_rank=pd * ga)


def check_batch_options(prompts_per_step: int, num_generations: int, per_device_batch_size: int,
                        gradient_accumulation_steps: int) -> None:
    """What can be checked at config load, before the number of ranks is known: the explicit micro-batch and
    accumulation must divide G on SOME number of ranks (`batch_layout` checks the actual one at launch)."""
    for key, value in (("train.per_device_batch_size", per_device_batch_size),
                       ("train.gradient_accumulation_steps", gradient_accumulation_steps)):
        if value < 0:
            raise ConfigError(f"{key}: expected >= 0 (0 = derive), got {value}")
    total = prompts_per_step * num_generations
    chunk = max(per_device_batch_size, 1) * max(gradient_accumulation_steps, 1)
    if total % chunk:
        given = " x ".join(f"{k} {v}" for k, v in (("train.per_device_batch_size", per_device_batch_size),
                                                   ("train.gradient_accumulation_steps", gradient_accumulation_steps))
                           if v)
        raise ConfigError(f"train.prompts_per_step x train.num_generations = {prompts_per_step} x {num_generations} = "
                          f"{total} sequences do not split into {given} on any number of ranks "
                          f"({total} is not a multiple of {chunk})")


# ----------------------------------------------------------------------------------------------- train.trl


# TRL fields pmd sets from one of its own options: one setting has one place, so these point there.
PMD_OPTION_FOR = {
    "max_steps": "train.steps",
    "learning_rate": "train.learning_rate",
    "per_device_train_batch_size": "train.per_device_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "num_generations": "train.num_generations",
    "max_prompt_length": "train.max_prompt_length",
    "max_completion_length": "train.max_completion_length",
    "temperature": "train.temperature",
    "top_p": "train.top_p",
    "seed": "train.seed",
    "logging_steps": "train.logging_steps",
    "save_steps": "train.save_steps",
    "save_strategy": "train.save_steps",
    "save_total_limit": "train.save_total_limit",
    "save_only_model": "train.save_optimizer",
    "report_to": "train.report_to",
    "use_vllm": "train.use_vllm",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "activation_checkpointing": "train.gradient_checkpointing",
    "distillation_mode": "train.distillation_mode",
    "distillation_topk": "train.distillation_topk",
    "distillation_add_tail": "train.distillation_add_tail",
    "distillation_weight": "train.distillation_weight",
    "teacher_model_kind": "train.teacher_model_kind",
    "max_reprompt_len": "train.max_reprompt_len",
    "include_environment_feedback": "train.include_environment_feedback",
    "remove_thinking_from_demonstration": "train.remove_thinking_from_demonstration",
    "success_reward_threshold": "train.success_reward_threshold",
    # Precision is pmd's two settings (precision.py): storage and autocast, decided together so they cannot
    # disagree (fp16 autocast over bf16 weights, pure fp16 without loss scaling).
    "bf16": "model.compute_dtype",
    "fp16": "model.compute_dtype",
}

_ONE_ROUND = "one generation round of train.prompts_per_step problems per optimizer step"

# TRL fields pmd decides itself, and why (no pmd option to point at).
PMD_DECIDES = {
    "output_dir": "checkpoints go to <run_dir>/checkpoints; set run_dir",
    "remove_unused_columns": "the reward reads the dataset's problem_uid column, so TRL must keep it",
    "use_cpu": "training runs on the GPU when CUDA is visible and on the CPU otherwise",
    "generation_batch_size": f"derived from train.prompts_per_step x train.num_generations ({_ONE_ROUND})",
    "steps_per_generation": f"derived from the batch layout ({_ONE_ROUND})",
    "num_iterations": f"the memory schedule, metrics and resume assume {_ONE_ROUND}; num_iterations > 1 would reuse "
                      "a round for several steps",
    "resume_from_checkpoint": "resume with `pmd train --resume`, which also restores memory and the EMA teacher",
    "eval_strategy": "evaluation is pmd's own and memory-free (eval.every_steps, for pmd train and pmd compare; "
                     "pmd eval); TRL gets no eval dataset",
    # TRL wants one weight per reward function (pmd gives it one); a single weight would only rescale the reward
    "reward_weights": "TRL gets one reward function, the weighted sum of the task's reward terms; set each term's "
                      "`weight:` under env.tasks[].params.rewards (README \"Your own task\")",
}

# TRL fields pmd refuses (unless false or null, which do nothing): the Hub upload is untested, as pmd's machines
# cannot reach the Hub, and it would fail or hang at the end of a finished training. `final/` holds its model card.
_NO_HUB = ("pmd does not upload to the Hugging Face Hub (untested: its test machines cannot reach it); upload after "
           "the run instead, e.g. the model: `hf upload USER/NAME RUN/final`")
PMD_REFUSES = {key: _NO_HUB for key in ("push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo",
                                        "hub_always_push", "hub_revision", "log_completions_hub_repo")}

# Fields pmd gives a default that `train.trl` may override: beta 0.0 (no reference model), loss_type "dapo" (GRPO),
# ddp_timeout (dist.DEFAULT_COLLECTIVE_TIMEOUT_S, 600 s, not 1800: a mismatch fails in minutes),
# distillation_alpha (1.0 for sampled_token, else 0.5), disable_tqdm False, model_init_kwargs, which is merged
# (pmd adds the dtype from model.dtype; e.g. attn_implementation is yours to set), and for pmd reprompt_template
# (prompts.REPROMPT_TEMPLATE: TRL's with a {memory} field; see check_reprompt_template).
PMD_DEFAULTS = ("beta", "loss_type", "distillation_alpha", "disable_tqdm", "model_init_kwargs", "reprompt_template",
                "ddp_timeout")

# Keys of model_init_kwargs that model.dtype owns.
_DTYPE_KEYS = ("dtype", "torch_dtype")


def trl_config_class(algo: str) -> type:
    """The TRL config class `algo` trains with: GRPOConfig for grpo, SDPOConfig for sdpo and pmd."""
    if algo == "grpo":
        from trl import GRPOConfig

        return GRPOConfig
    with warnings.catch_warnings():  # "trl.experimental is unstable": pmd pins TRL exactly for that reason
        warnings.simplefilter("ignore")
        from trl.experimental.sdpo import SDPOConfig

    return SDPOConfig


def trl_fields(algo: str) -> set[str]:
    """Names of the fields `train.trl` could set for `algo` (the TRL config class's init fields)."""
    return {f.name for f in dataclasses.fields(trl_config_class(algo)) if f.init}


def check_trl_keys(algo: str, overrides: Mapping[Any, Any], fields: Collection[str],
                   other_fields: Collection[str] = ()) -> None:
    """Each `train.trl` key must be a field of the TRL config class for `algo` (`fields`) that pmd neither sets
    from its own option (`PMD_OPTION_FOR`) nor decides itself (`PMD_DECIDES`). `other_fields` (the other algos'
    class) only improves the message for a key that belongs to the other trainer. Raises ConfigError naming
    `train.trl.<key>`."""
    cls = "GRPOConfig" if algo == "grpo" else "SDPOConfig"
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ConfigError(f"train.trl: keys must be TRL field names (strings), got {key!r}")
        where = f"train.trl.{key}"
        if key not in fields:
            if key in other_fields:
                other = "SDPOConfig (train.algo sdpo or pmd)" if algo == "grpo" else "GRPOConfig (train.algo grpo)"
                raise ConfigError(f"{where}: not a field of TRL's {cls} (train.algo {algo}); it belongs to {other}")
            near = difflib.get_close_matches(key, sorted(fields), n=1)
            # a near TRL field that pmd sets from its own option: suggest that option, which is what will work
            hint = f" (did you mean {PMD_OPTION_FOR.get(near[0], near[0])}?)" if near else ""
            raise ConfigError(f"{where}: not a field of TRL's {cls}{hint}")
        if key in PMD_OPTION_FOR:
            raise ConfigError(f"{where}: set {PMD_OPTION_FOR[key]} instead")
        _check_finite(value, where)
        if key in PMD_DECIDES:
            raise ConfigError(f"{where}: pmd sets this itself: {PMD_DECIDES[key]}")
        if key in PMD_REFUSES and value not in (False, None):
            raise ConfigError(f"{where}: {PMD_REFUSES[key]}")
        if key == "model_init_kwargs":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of from_pretrained arguments, got {value!r}")
            for sub in _DTYPE_KEYS:
                if sub in value:
                    raise ConfigError(f"{where}.{sub}: set model.dtype instead")


def _check_finite(value: Any, where: str) -> None:
    """No NaN or infinity in a value passed to TRL: TRL checks few of its fields' ranges, and a NaN passes every
    comparison (`max_grad_norm: .nan` would train on NaN gradients)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


def check_trl_overrides(algo: str, overrides: Mapping[Any, Any]) -> None:
    """`check_trl_keys` against the installed TRL's config classes (imports TRL: call only when non-empty)."""
    if not overrides:
        return
    others = trl_fields("sdpo" if algo == "grpo" else "grpo")
    own = set(COMPLETIONS_KEYS) if algo != "grpo" else set()  # sdpo/pmd: pmd's completions table (completions.py)
    check_trl_keys(algo, overrides, trl_fields(algo) | own, others)
    if own:
        check_completions_keys(overrides)
    if "reprompt_template" in overrides and algo != "grpo":
        check_reprompt_template(algo, overrides["reprompt_template"])


def check_reprompt_template(algo: str, template: Any) -> None:
    """`train.trl.reprompt_template` names only the fields its trainer fills: SDPO's {prompt}, {solution},
    {feedback} (as TRL and the SDPO reference), and for pmd also {memory}, which a pmd template must contain: one
    without it would activate the teacher on memory the teacher is never shown. Refused at load, not appended
    somewhere: where the notes go is the template author's choice. Otherwise `str.format` fails at step 1."""
    import string

    from .prompts import MEMORY_FIELD, REPROMPT_FIELDS

    where = "train.trl.reprompt_template"
    if not isinstance(template, str):
        raise ConfigError(f"{where}: expected a string, got {template!r}")
    allowed = set(REPROMPT_FIELDS) | ({MEMORY_FIELD} if algo == "pmd" else set())
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid format string ({exc}); write literal braces as {{{{ }}}}") from None
    for name in names:
        if name not in allowed:
            extra = " ({memory} is filled by train.algo pmd only)" if name == MEMORY_FIELD else ""
            raise ConfigError(f"{where}: unknown field {{{name}}}; allowed: "
                              f"{', '.join('{' + n + '}' for n in sorted(allowed))}{extra}")
    if algo == "pmd" and MEMORY_FIELD not in names:
        raise ConfigError(f"{where}: train.algo pmd shows memory through a {{memory}} field and this template has "
                          "none; put {memory} where the notes should go (pmd's default: after {prompt})")


# ----------------------------------------------------------------------------------------------- TRL's args


def checkpointing_field() -> str:
    """transformers 5.24 names the switch `activation_checkpointing` (`gradient_checkpointing` is its deprecated
    alias, with a FutureWarning); 5.17, a GPU image's version, knows only `gradient_checkpointing`."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def trl_config(cfg: RunConfig, output_dir: str, world_size: int = 1):
    """Translate our config into TRL's GRPOConfig / SDPOConfig with CPU-safe precision defaults.

    `world_size` must be the number of ranks the run is launched on (accelerate's `PartialState().num_processes`):
    `train.prompts_per_step` is global and `batch_layout` splits it over that many ranks. Writes nothing, so it
    can run in a preflight check. A `train.trl` value TRL rejects is a ConfigError naming `train.trl`."""
    import torch

    from .dist import DEFAULT_COLLECTIVE_TIMEOUT_S
    from .precision import run_precision

    t = cfg.train
    on_gpu = torch.cuda.is_available()
    precision = run_precision(cfg)
    layout = batch_layout(t.prompts_per_step, t.num_generations, world_size, t.per_device_batch_size,
                          t.gradient_accumulation_steps)
    passthrough = dict(t.trl)
    # device_map None: TRL leaves "auto" (spread over the GPUs) under FSDP, which accelerate then refuses; pmd
    # trains data-parallel, so each rank loads the whole model where accelerate places it.
    model_init_kwargs = {"device_map": None, **passthrough.pop("model_init_kwargs", {}),
                         "dtype": getattr(torch, precision.storage)}
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir,
        max_steps=t.steps,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=layout.per_device_batch_size,
        gradient_accumulation_steps=layout.gradient_accumulation_steps,
        num_generations=t.num_generations,
        max_completion_length=t.max_completion_length,
        temperature=t.temperature,
        top_p=t.top_p,
        **{checkpointing_field(): t.gradient_checkpointing},
        seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit or None,
        save_only_model=not t.save_optimizer,
        report_to=t.report_to,
        remove_unused_columns=False,
        use_cpu=not on_gpu,
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_vllm=t.use_vllm,
        model_init_kwargs=model_init_kwargs,
        # pmd's defaults, which train.trl may override:
        disable_tqdm=False,
        beta=0.0,
        ddp_timeout=DEFAULT_COLLECTIVE_TIMEOUT_S,  # what the process group was created with (dist.Ranks.for_run)
    )
    if t.algo == "grpo":
        kwargs["loss_type"] = "dapo"
    else:
        topk = t.distillation_mode == "topk_logits"
        kwargs.update(
            max_prompt_length=t.max_prompt_length,
            distillation_mode=t.distillation_mode,
            distillation_topk=t.distillation_topk if topk else None,
            distillation_add_tail=t.distillation_add_tail if topk else False,
            distillation_alpha=1.0 if t.distillation_mode == "sampled_token" else 0.5,
            distillation_weight=t.distillation_weight,
            teacher_model_kind=t.teacher_model_kind,
            max_reprompt_len=t.max_reprompt_len,
            include_environment_feedback=t.include_environment_feedback,
            remove_thinking_from_demonstration=t.remove_thinking_from_demonstration,
            success_reward_threshold=t.success_reward_threshold,
        )
        if t.algo == "pmd":
            from .prompts import REPROMPT_TEMPLATE

            kwargs["reprompt_template"] = REPROMPT_TEMPLATE
    if t.algo != "grpo":
        passthrough = {k: v for k, v in passthrough.items() if k not in COMPLETIONS_KEYS}  # pmd's own (step.py)
    kwargs.update(passthrough)
    cls = trl_config_class(t.algo)
    try:
        args = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        if not t.trl:
            raise  # pmd's own values: a bug here, not bad input
        raise trl_rejected(cls.__name__, t.trl, exc) from None
    if getattr(args, "use_teacher_server", False) and t.distillation_normalization == "active_tokens":
        raise ConfigError("train.distillation_normalization: active_tokens is not implemented for "
                          "train.trl.use_teacher_server; set it to all_samples")
    if args.world_size != world_size:
        raise RuntimeError(f"trl_config(world_size={world_size}), but this process runs with {args.world_size} "
                           "ranks: pass the launched world size, or train.prompts_per_step stops being global")
    if args.generation_batch_size != layout.sequences_per_step:  # TRL changed how it derives the generation batch
        raise RuntimeError(f"TRL's generation batch is {args.generation_batch_size} sequences, expected "
                           f"{layout.sequences_per_step} ({_ONE_ROUND})")
    return args


def trl_rejected(what: str, overrides: Mapping[Any, Any], exc: Exception) -> ConfigError:
    """One line for a `train.trl` value TRL refused, in its config class or its trainer's constructor (`what`);
    only with `train.trl` non-empty: with pmd's own values alone, a ValueError is pmd's bug and stays one."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return ConfigError(f"train.trl: TRL's {what} rejected {sorted(overrides)}: {first}")


def lora_config(cfg: RunConfig):
    """PEFT's LoraConfig from `train.lora_*` when `train.lora_r > 0` (TRL wraps the model); None otherwise.

    Names and meanings follow TRL's `ModelConfig` (lora_r, lora_alpha, lora_dropout, lora_target_modules), minus
    its `use_peft`: `lora_r: 0` already means off, and a second switch could disagree with it. The defaults are what
    pmd's LoRA did before these options existed, so old configs train the same: alpha 0 = 2 x lora_r (TRL's ratio,
    alpha 32 for r 16, at any rank), dropout 0 (TRL: 0.05), and every linear layer but the output head rather than
    PEFT's per-architecture guess (attention q/v only, on Llama), since adapting the MLPs as well brings LoRA closer
    to full fine-tuning."""
    t = cfg.train
    if t.lora_r <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha or 2 * t.lora_r, lora_dropout=t.lora_dropout,
                      target_modules=t.lora_target_modules if isinstance(t.lora_target_modules, str)
                      else list(t.lora_target_modules),
                      bias="none", task_type="CAUSAL_LM")
