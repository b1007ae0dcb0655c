"""Our config -> TRL's args: the one place where a pmd `RunConfig` becomes a `GRPOConfig` / `SDPOConfig`.

Decisions live here as small pure functions, so that they can be tested without a trainer:

* `batch_layout`: `train.prompts_per_step` is GLOBAL (distinct problems per optimizer step over all ranks, as in the
  paper); how those sequences split into ranks, micro-batches and accumulation steps.

This module imports neither torch nor TRL at import time: `pmd.config` calls into it while loading a config, and
loading a config must stay fast.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    num_iterations` micro-steps, i.e. once per optimizer step (pmd keeps TRL's num_iterations of 1);
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


# ----------------------------------------------------------------------------------------------- TRL's args


def trl_config_class(algo: str) -> type:
    """The TRL config class `algo` trains with: GRPOConfig for grpo, SDPOConfig for sdpo and pmd."""
    if algo == "grpo":
        from trl import GRPOConfig

        return GRPOConfig
    with warnings.catch_warnings():  # "trl.experimental is unstable": pmd pins TRL exactly for that reason
        warnings.simplefilter("ignore")
        from trl.experimental.sdpo import SDPOConfig

    return SDPOConfig


def torch_dtype(name: str, on_gpu: bool) -> torch.dtype:
    """`model.dtype` as a torch dtype: auto = bfloat16 on GPU, float32 on CPU."""
    import torch

    if name == "auto":
        return torch.bfloat16 if on_gpu else torch.float32
    return getattr(torch, name)


def trl_config(cfg: RunConfig, output_dir: str, world_size: int = 1):
    """Translate our config into TRL's GRPOConfig / SDPOConfig with CPU-safe precision defaults.

    `world_size` must be the number of ranks the run is launched on (accelerate's `PartialState().num_processes`):
    `train.prompts_per_step` is global and `batch_layout` splits it over that many ranks. Writes nothing, so it
    can run in a preflight check."""
    import torch

    t = cfg.train
    on_gpu = torch.cuda.is_available()
    layout = batch_layout(t.prompts_per_step, t.num_generations, world_size, t.per_device_batch_size,
                          t.gradient_accumulation_steps)
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
        model_init_kwargs={"dtype": torch_dtype(cfg.model.dtype, on_gpu)},
        disable_tqdm=False,
        beta=0.0,
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
            teacher_model_kind="base" if (t.algo == "pmd" and cfg.memory.teacher == "frozen") else t.teacher_model_kind,
            max_reprompt_len=t.max_reprompt_len,
            include_environment_feedback=t.include_environment_feedback,
            success_reward_threshold=t.success_reward_threshold,
        )
    args = trl_config_class(t.algo)(**kwargs)
    if args.world_size != world_size:
        raise RuntimeError(f"trl_config(world_size={world_size}), but this process runs with {args.world_size} "
                           "ranks: pass the launched world size, or train.prompts_per_step stops being global")
    if args.generation_batch_size != layout.sequences_per_step:  # TRL changed how it derives the generation batch
        raise RuntimeError(f"TRL's generation batch is {args.generation_batch_size} sequences, expected "
                           f"{layout.sequences_per_step} (one generation round per optimizer step)")
    return args


def lora_config(cfg: RunConfig):
    """A PEFT LoRA config on all linear layers when `train.lora_r > 0` (TRL wraps the model); None otherwise."""
    if cfg.train.lora_r <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.train.lora_r, lora_alpha=2 * cfg.train.lora_r, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")
