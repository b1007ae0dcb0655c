"""Our config -> TRL's args: the one place where a pmd `RunConfig` becomes a `GRPOConfig` / `SDPOConfig`."""

from __future__ import annotations

from typing import Any

import torch

from .config import RunConfig


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


def lora_config(cfg: RunConfig):
    """A PEFT LoRA config on all linear layers when `train.lora_r > 0` (TRL wraps the model); None otherwise."""
    if cfg.train.lora_r <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.train.lora_r, lora_alpha=2 * cfg.train.lora_r, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")
