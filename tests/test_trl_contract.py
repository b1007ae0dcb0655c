"""The TRL seams PMD depends on. If a TRL upgrade moves them, this fails loudly instead of PMD silently training
without its teacher (trl.experimental may change in any release; we pin trl==1.16.0)."""

import inspect

import pytest
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


@pytest.mark.parametrize("trainer", [SDPOTrainer, trl.GRPOTrainer])
def test_reward_functions_get_the_trainer_state(trainer):
    """The step's `score` opens the record of the step TRL's `trainer_state` names (step.PMDStep.reward_function)."""
    src = inspect.getsource(trainer._calculate_rewards)
    assert 'reward_kwargs["trainer_state"] = self.state' in src


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

    from pmd.teacher import TeacherRenderer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    fake = SimpleNamespace(
        accelerator=SimpleNamespace(device=torch.device("cpu")), args=SimpleNamespace(max_reprompt_len=6),
        _tokenizer=tok, processing_class=tok, chat_template_kwargs={},
    )
    fake._tokenize_prompts_untruncated = lambda msgs: SDPOTrainer._tokenize_prompts_untruncated(fake, msgs)
    msgs = [[{"role": "user", "content": "Calculate 2 + 3 ."}], [{"role": "user", "content": "2"}]]
    ours, cuts = TeacherRenderer(fake).render(msgs, [None, None])  # prompts with nothing to cut but the problem
    theirs = sdpo_trainer.SuccessfulRolloutTeacherContextBuilder(fake)._tokenize_teacher_messages(msgs)
    assert torch.equal(ours["prompt_ids"], theirs["prompt_ids"]) and torch.equal(ours["prompt_mask"], theirs["prompt_mask"])
    assert cuts == [{"problem"}, set()]


def test_distillation_loss_seam_and_normalisation():
    """`train.distillation_normalization` overrides one TRL method and relies on its aggregation: per row
    `(loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)`, then the mean over ALL rows (inactive ones as 0), with
    the logged value the mean over active tokens. Checked on numbers, so a TRL change fails here, loudly."""
    import dataclasses
    from collections import defaultdict
    from types import SimpleNamespace

    import torch
    from trl.experimental.sdpo.loss_utils import compute_full_logit_self_distillation_loss

    from pmd.trainer import SDPOTrainer as PMDSDPOTrainer

    sig = inspect.signature(SDPOTrainer._compute_self_distillation_loss)
    assert list(sig.parameters) == ["self", "model", "inputs", "distillation_logits"]
    assert "self._compute_self_distillation_loss(model, inputs, distillation_logits)" in inspect.getsource(
        SDPOTrainer.compute_loss)
    assert "loss_mask" in {f.name for f in dataclasses.fields(sdpo_trainer.DistillationLogits)}

    torch.manual_seed(0)
    B, T, V = 4, 3, 7
    mask = torch.tensor([[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float)  # rows 1, 3 inactive
    logits = sdpo_trainer.DistillationLogits(torch.zeros(B, T, dtype=torch.long), torch.ones(B, T), mask,
                                             torch.randn(B, T, V), torch.randn(B, T, V))
    per_token = compute_full_logit_self_distillation_loss(logits.student_logits, logits.teacher_logits,
                                                          distillation_alpha=0.5)
    all_samples = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    active_tokens = (per_token * mask).sum() / mask.sum()

    def fake(cls, normalization):
        obj = cls.__new__(cls)  # no __init__: only what the loss reads
        obj.args = SimpleNamespace(distillation_mode="full_logits", distillation_alpha=0.5, distillation_is_clip=None)
        obj.accelerator = SimpleNamespace(gather=lambda t: t)
        obj._metrics = {"train": defaultdict(list)}
        obj.distillation_normalization = normalization
        return obj

    model = SimpleNamespace(training=True)
    trl = fake(SDPOTrainer, None)
    assert torch.allclose(SDPOTrainer._compute_self_distillation_loss(trl, model, {}, logits), all_samples)
    for normalization, expected in (("all_samples", all_samples), ("active_tokens", active_tokens)):
        ours = fake(PMDSDPOTrainer, normalization)
        assert torch.allclose(ours._compute_self_distillation_loss(model, {}, logits), expected), normalization
        # the logged distillation loss is TRL's active-token mean either way
        assert ours._metrics["train"]["self_distillation/distillation_loss"] == pytest.approx(
            trl._metrics["train"]["self_distillation/distillation_loss"])
    assert not torch.allclose(all_samples, active_tokens)


def test_loss_seams_sdpo_loss_relies_on():
    """pmd.sdpo_loss runs TRL's `compute_loss` on a subset of rows and replaces `_compute_teacher_student_logits`
    by grouped forwards: what it assumes of TRL is pinned here (tests/test_sdpo_loss.py checks the numbers)."""
    import dataclasses

    from trl.trainer.utils import split_tensor_dict

    src = inspect.getsource(SDPOTrainer.compute_loss)
    # pure self-distillation: student and teacher logits, then the distillation loss, nothing else reads the rows
    assert "if self.args.distillation_weight == 1.0:" in src
    assert "self._compute_teacher_student_logits(model, self.teacher_model, inputs)" in src
    assert "self._compute_self_distillation_loss(model, inputs, distillation_logits)" in src
    assert "loss / accumulation_scale" in src
    assert list(inspect.signature(SDPOTrainer._compute_teacher_student_logits).parameters) == [
        "self", "model", "teacher_model", "inputs"]
    assert list(inspect.signature(SDPOTrainer._forward_logits).parameters) == [
        "self", "model", "input_ids", "attention_mask", "logits_to_keep"]
    logits_src = inspect.getsource(SDPOTrainer._compute_teacher_student_logits)
    assert "loss_mask = completion_mask * self_distillation_mask.unsqueeze(1)" in logits_src
    assert "self._get_teacher_context_for_self_distillation()" in logits_src
    assert [f.name for f in dataclasses.fields(sdpo_trainer.DistillationLogits)] == [
        "completion_ids", "completion_mask", "loss_mask", "student_logits", "teacher_logits"]
    # every tensor of the batch is per row (TRL's own split of a generation batch relies on the same)
    assert "tensor.ndim > 0" in inspect.getsource(split_tensor_dict)
