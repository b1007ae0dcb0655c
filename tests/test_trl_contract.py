"""The TRL seams PMD depends on. If a TRL upgrade moves them, this fails loudly instead of PMD silently training
without its teacher (trl.experimental may change in any release; we pin trl==1.16.0)."""

import inspect

import trl
from trl.experimental.sdpo import SDPOConfig, SDPOTrainer
from trl.experimental.sdpo import sdpo_trainer


def test_pinned_trl_version():
    assert trl.__version__ == "1.16.0"


def test_teacher_context_builder_seam():
    src = inspect.getsource(SDPOTrainer.__init__)
    assert "self.teacher_context_builder = SuccessfulRolloutTeacherContextBuilder(self)" in src
    prep = inspect.getsource(SDPOTrainer._prepare_training_batch)
    assert "self.teacher_context_builder.build(" in prep
    assert "self.teacher_context_builder.last_metrics" in prep
    # rewards are computed before the builder runs, so our reward function's verdicts are fresh when it reads them
    assert prep.index("_calculate_rewards(") < prep.index("teacher_context_builder.build(")
    sig = inspect.signature(sdpo_trainer.SuccessfulRolloutTeacherContextBuilder.build)
    assert list(sig.parameters) == ["self", "output", "prompts", "rewards", "feedbacks"]


def test_builder_helpers_we_reuse():
    builder = sdpo_trainer.SuccessfulRolloutTeacherContextBuilder
    assert hasattr(builder, "_tokenize_teacher_messages")
    assert callable(sdpo_trainer._extract_last_user_text)
    assert hasattr(SDPOTrainer, "_tokenize_prompts_untruncated")


def test_config_fields_we_set():
    fields = SDPOConfig.__dataclass_fields__
    for name in ["teacher_model_kind", "distillation_mode", "distillation_topk", "distillation_add_tail",
                 "max_reprompt_len", "include_environment_feedback", "success_reward_threshold",
                 "solution_template", "feedback_template", "dont_reprompt_on_self_success",
                 "use_successful_as_teacher", "remove_thinking_from_demonstration", "max_prompt_length"]:
        assert name in fields, name


def test_our_teacher_tokenisation_matches_trls(tiny_model_path):
    """PMD re-implements TRL's teacher tokenisation only to count truncations; both must give identical tensors."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoTokenizer

    from pmd.teacher import MemoryTeacherContextBuilder

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    fake = SimpleNamespace(
        accelerator=SimpleNamespace(device=torch.device("cpu")), args=SimpleNamespace(max_reprompt_len=6),
        _tokenizer=tok, processing_class=tok, chat_template_kwargs={},
    )
    fake._tokenize_prompts_untruncated = lambda msgs: SDPOTrainer._tokenize_prompts_untruncated(fake, msgs)
    builder = MemoryTeacherContextBuilder(fake, memory=None, verdicts=None)
    msgs = [[{"role": "user", "content": "Calculate 2 + 3 ."}], [{"role": "user", "content": "2"}]]
    ours, truncated = builder._tokenize_counting_truncation(msgs)
    theirs = builder._tokenize_teacher_messages(msgs)
    assert torch.equal(ours["prompt_ids"], theirs["prompt_ids"]) and torch.equal(ours["prompt_mask"], theirs["prompt_mask"])
    assert truncated == 1
