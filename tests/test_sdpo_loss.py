"""Distilling only the rows with an active teacher (sdpo_loss.py) leaves TRL's loss and gradients as they were,
while forwarding fewer rows. Checked against TRL's full-batch path on a tiny random Llama."""

from pathlib import Path

import pytest
import torch

from pmd.config import load_config
from pmd.envs import EnvironmentSuite
from pmd.sdpo_loss import distilled_rows, length_groups, row_scale, take_rows
from pmd.trainer import build_trainer

ARITH = "env.tasks=[{name: basic_arithmetic, params: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}]"


def test_distilled_rows_keeps_rows_with_an_active_completion_token():
    completion = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]])
    assert distilled_rows(completion, torch.tensor([1.0, 0.0, 1.0, 1.0])).tolist() == [0, 3]  # row 2: empty
    assert distilled_rows(completion[[0, 1, 3]], torch.ones(3)) is None  # every row counts: nothing to skip
    assert distilled_rows(completion, None) is None  # no mask (TRL distils every row)
    assert distilled_rows(completion, torch.zeros(4)).tolist() == [0]  # nothing active: one row still runs


def test_take_rows_and_row_scale():
    inputs = {"a": torch.arange(8).view(4, 2), "b": torch.tensor(3.0), "c": None, "d": ["w", "x", "y", "z"]}
    out = take_rows(inputs, torch.tensor([1, 3]))
    assert out["a"].tolist() == [[2, 3], [6, 7]] and out["b"].item() == 3.0 and out["c"] is None
    assert out["d"] == ["x", "z"]
    assert row_scale("all_samples", 3, 12) == 0.25 and row_scale("active_tokens", 3, 12) == 1.0


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tiny_model_path):
    tmp = tmp_path_factory.mktemp("sdpo-loss")
    cfg = load_config(None, [ARITH, "env.train_size=4", "env.eval_size=2", "train.algo=sdpo", "train.steps=1",
                             "model.compute_dtype=float32",  # fp32 forwards: the comparisons below are exact to 1e-6
                             "train.prompts_per_step=2", "train.num_generations=2", f"run_dir={tmp / 'run'}"])
    tr, _ = build_trainer(cfg, str(tiny_model_path), EnvironmentSuite.from_config(cfg.env), Path(cfg.run_dir))
    tr.model.eval()  # no gradient-accumulation scaling in compute_loss; the tiny Llama has no dropout
    with torch.no_grad():  # a teacher unlike the student, so the loss is far from zero
        for p in tr.teacher_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return tr


SHORT_AND_LONG = ([3, 20, 4, 22, 3, 21, 5, 2], [2, 25, 3, 24, 0, 26, 2, 25], [4, 30, 5, 28, 6, 3, 29, 4])


def batch(vocab: int, active: list[float], pad: int, old_logps: bool = False, lengths=None) -> dict:
    """Rollouts as TRL lays them out: prompts left-padded, completions right-padded, teacher prompts of other
    lengths, left-padded. Default: six rows of close lengths (row 4's completion is empty); `lengths` gives
    (prompt, completion, teacher prompt) lengths per row."""
    g = torch.Generator().manual_seed(1)
    prompt_len, comp_len, teacher_len = lengths or ([5, 3, 4, 5, 2, 4], [7, 4, 6, 2, 0, 7], [9, 6, 8, 3, 5, 9])
    B, P, T, TP = len(prompt_len), max(prompt_len), max(comp_len), max(teacher_len)
    ids = lambda *shape: torch.randint(10, vocab, shape, generator=g)  # noqa: E731
    prompt_mask = torch.tensor([[0] * (P - n) + [1] * n for n in prompt_len])
    completion_mask = torch.tensor([[1] * n + [0] * (T - n) for n in comp_len])
    completion_ids = torch.where(completion_mask.bool(), ids(B, T), pad)
    teacher_prompt_mask = torch.tensor([[0] * (TP - n) + [1] * n for n in teacher_len])
    out = {
        "prompt_ids": torch.where(prompt_mask.bool(), ids(B, P), pad), "prompt_mask": prompt_mask,
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "teacher_input_ids": torch.cat([torch.where(teacher_prompt_mask.bool(), ids(B, TP), pad), completion_ids], 1),
        "teacher_attention_mask": torch.cat([teacher_prompt_mask, completion_mask], 1),
        "self_distillation_mask": torch.tensor(active), "advantages": torch.randn(B, generator=g),
        "rewards": torch.rand(B, generator=g), "raw_completion_lengths": torch.tensor(comp_len),
    }
    if old_logps:
        out["old_per_token_logps"] = -torch.rand(B, T, generator=g) * 3
    return out


def loss_and_grads(trainer, inputs, rows_only: bool, groups: int = 1):
    """Loss, gradients and the (rows, columns) of each forward, with the two savings switched as asked (both off:
    TRL's own path)."""
    trainer.distil_active_rows_only, trainer.length_groups = rows_only, groups
    forwarded = []
    for name in ("_forward_logits", "_forward_logits_at"):  # TRL calls the first with keywords
        inner = getattr(trainer, name)

        def counting(model, input_ids, *args, _inner=inner, **kwargs):
            forwarded.append(tuple(input_ids.shape))
            return _inner(model, input_ids, *args, **kwargs)

        setattr(trainer, name, counting)
    try:
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
    finally:
        del trainer._forward_logits, trainer._forward_logits_at
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, forwarded


def assert_same(ours, our_grads, full, full_grads, rtol):
    assert torch.allclose(ours, full, rtol=rtol, atol=0), (ours.item(), full.item())
    assert full_grads.keys() == our_grads.keys()
    for name, g in full_grads.items():
        assert torch.allclose(our_grads[name], g, rtol=rtol * 10, atol=1e-9), name
    assert any(g.abs().sum() > 0 for g in full_grads.values())


def rows_of(forwarded):
    return [shape[0] for shape in forwarded]


@pytest.mark.parametrize("mode,normalization,old_logps", [
    ("topk_logits", "active_tokens", False),  # pmd's default objective and average
    ("topk_logits", "all_samples", True),  # TRL's average; the importance-sampling clip reads the old log-probs
    ("full_logits", "all_samples", False),
    ("sampled_token", "active_tokens", True),
])
def test_loss_and_gradients_match_trls_full_batch(trainer, mode, normalization, old_logps):
    args = trainer.args
    saved = (args.distillation_mode, args.distillation_alpha, args.distillation_topk, args.distillation_add_tail)
    args.distillation_mode, args.distillation_alpha = mode, 1.0 if mode == "sampled_token" else 0.5
    args.distillation_topk, args.distillation_add_tail = (20, True) if mode == "topk_logits" else (None, False)
    trainer.distillation_normalization = normalization
    try:
        # rows 1 and 5 inactive, row 4 active but its completion is empty: three of six rows contribute
        inputs = batch(trainer.model.config.vocab_size, [1, 0, 1, 1, 1, 0], trainer._tokenizer.pad_token_id,
                       old_logps)
        full, full_grads, full_rows = loss_and_grads(trainer, inputs, rows_only=False)
        ours, our_grads, our_rows = loss_and_grads(trainer, inputs, rows_only=True)
    finally:
        args.distillation_mode, args.distillation_alpha, args.distillation_topk, args.distillation_add_tail = saved
    assert rows_of(full_rows) == [6, 6] and rows_of(our_rows) == [3, 3]  # student and teacher: half the rows
    assert full.item() != 0
    assert_same(ours, our_grads, full, full_grads, rtol=1e-6)


def test_nothing_active_still_gives_zero_gradients_from_one_row(trainer):
    """No active row: TRL's loss is a graph-attached zero, so every parameter gets a zero gradient (the optimizer
    still steps, as in TRL); one row is forwarded instead of all."""
    inputs = batch(trainer.model.config.vocab_size, [0] * 6, trainer._tokenizer.pad_token_id)
    full, full_grads, full_rows = loss_and_grads(trainer, inputs, rows_only=False)
    ours, our_grads, our_rows = loss_and_grads(trainer, inputs, rows_only=True)
    assert rows_of(full_rows) == [6, 6] and rows_of(our_rows) == [1, 1]
    assert full.item() == 0.0 and ours.item() == 0.0
    assert full_grads.keys() == our_grads.keys()
    assert all(torch.count_nonzero(g) == 0 for g in our_grads.values())


@pytest.mark.parametrize("active", [[1, 0, 1, 1, 1, 0], [0] * 6])
def test_every_loss_makes_one_gather_whether_or_not_a_token_is_active(trainer, monkeypatch, active):
    """The collectives of a micro-batch must not depend on its content: TRL 1.16 gathers the logged loss only when
    some token is active, so a rank with none waited in DDP's all-reduce while the others waited in that gather
    (the 2-rank SmolLM2 hang). Here both cases make exactly one gather."""
    gathers = []
    real = trainer.accelerator.gather

    def counting(tensor):
        gathers.append(tuple(tensor.shape))
        return real(tensor)

    monkeypatch.setattr(trainer.accelerator, "gather", counting)
    inputs = batch(trainer.model.config.vocab_size, active, trainer._tokenizer.pad_token_id)
    for rows_only in (False, True):
        gathers.clear()
        loss_and_grads(trainer, inputs, rows_only=rows_only)
        assert gathers == [()], rows_only


def test_a_policy_term_reads_every_row_so_nothing_is_skipped(trainer):
    """With distillation_weight < 1 the GRPO term uses every rollout's advantage: all rows are forwarded."""
    inputs = batch(trainer.model.config.vocab_size, [1, 0, 1, 1, 1, 0], trainer._tokenizer.pad_token_id)
    trainer.args.distillation_weight = 0.5
    try:
        _, _, rows = loss_and_grads(trainer, inputs, rows_only=True)
    finally:
        trainer.args.distillation_weight = 1.0
    assert rows_of(rows) == [6, 6]


def test_length_groups_cut_the_padding():
    same = length_groups([5, 5, 5, 5], [3, 3, 3, 3], max_groups=4)
    assert same == [[0, 1, 2, 3]]  # nothing to save: one forward
    # two short rows and two long ones: two groups, shortest first
    assert length_groups([2, 30, 2, 30], [3, 20, 4, 20], max_groups=4) == [[0, 2], [1, 3]]
    assert length_groups([2, 30, 2, 30], [3, 20, 4, 20], max_groups=1) == [[0, 1, 2, 3]]
    # a group's cost is rows x (longest prompt + longest completion) + overhead: a large overhead keeps one group
    assert length_groups([2, 3, 4], [2, 3, 4], max_groups=3, overhead=100) == [[0, 1, 2]]
    assert length_groups([], [], max_groups=2) == []
    groups = length_groups([1, 9, 4, 7, 2, 8, 3], [5, 1, 6, 2, 9, 3, 2], max_groups=3)
    assert sorted(i for g in groups for i in g) == list(range(7)) and len(groups) <= 3


@pytest.mark.parametrize("mode,normalization", [("topk_logits", "active_tokens"), ("full_logits", "all_samples")])
def test_grouped_forwards_match_trls_single_forward(trainer, mode, normalization):
    """Rows of similar length forwarded together without their shared padding: the same loss and gradients as
    TRL's one padded forward (up to float rounding), from fewer tokens."""
    args = trainer.args
    saved = (args.distillation_mode, args.distillation_topk, args.distillation_add_tail)
    args.distillation_mode = mode
    args.distillation_topk, args.distillation_add_tail = (20, True) if mode == "topk_logits" else (None, False)
    trainer.distillation_normalization = normalization
    try:
        inputs = batch(trainer.model.config.vocab_size, [1, 0, 1, 1, 1, 1, 1, 1], trainer._tokenizer.pad_token_id,
                       True, SHORT_AND_LONG)
        full, full_grads, full_fw = loss_and_grads(trainer, inputs, rows_only=False, groups=1)
        ours, our_grads, our_fw = loss_and_grads(trainer, inputs, rows_only=True, groups=4)
        alone, alone_grads, alone_fw = loss_and_grads(trainer, inputs, rows_only=False, groups=4)
    finally:
        args.distillation_mode, args.distillation_topk, args.distillation_add_tail = saved
    assert full.item() != 0
    assert_same(ours, our_grads, full, full_grads, rtol=1e-5)
    assert_same(alone, alone_grads, full, full_grads, rtol=1e-5)
    tokens = lambda fw: sum(r * c for r, c in fw)  # noqa: E731
    assert len(our_fw) > 2  # more than one forward each for student and teacher
    assert tokens(alone_fw) < tokens(full_fw) and tokens(our_fw) < tokens(alone_fw)


def test_explicit_positions_give_trls_logits_exactly(trainer):
    """Over all columns with positions 0..L-1, `_forward_logits_at` gives bit for bit the logits of TRL's forward
    (this pins TRL's `_forward_logits`, which it follows)."""
    inputs = batch(trainer.model.config.vocab_size, [1] * 6, trainer._tokenizer.pad_token_id)
    width = inputs["completion_ids"].size(1)
    trainer.length_groups = 1
    with torch.no_grad():
        theirs = trainer._compute_teacher_student_logits(trainer.model, trainer.teacher_model, inputs)
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        ours = trainer._forward_logits_at(trainer.model, ids, mask, torch.arange(ids.size(1)), width)
    assert torch.equal(ours, theirs.student_logits)
