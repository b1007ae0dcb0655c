"""The distillation loss of one micro-batch, computed only where it can be non-zero and without most padding.

TRL 1.16's SDPOTrainer forwards the student (with gradients) and the teacher over every rollout of a micro-batch,
then multiplies the per-token loss by `completion_mask * self_distillation_mask`. A row whose mask is all zero (an
inactive teacher: no successful sibling, no feedback, and for PMD no memory; or an empty completion) thus costs a
student forward and backward and a teacher forward, and adds exactly 0 to the loss and to every gradient: with
`distillation_weight` 1 (pure self-distillation, the default) no other term reads it. `SDPOTrainer.compute_loss`
below runs TRL's own loss on the rows that count (`distilled_rows`) and rescales it to the whole micro-batch's value
(`row_scale`), so the loss and its gradients are TRL's, up to the order in which float sums are taken
(tests/test_sdpo_loss.py checks loss and gradients against TRL's full-batch path on a tiny model).

`take_rows` keeps every column of the rows it keeps (trimming padding is the grouping's job, below, which keeps
each token's position), so the numbers stay those of the full batch. At least one row is always forwarded, so every
rank runs the same forward and backward passes (sharded parameters need every rank in each) and a batch with
nothing to distil still gives zero gradients, not none, as TRL does.

Padding. TRL forwards a micro-batch as one tensor: prompts left-padded to the longest prompt, completions
right-padded to the longest completion, teacher prompts (feedback, a demonstration, memory: lengths vary most) to
the longest teacher prompt. On a single process (`length_groups` > 1), rows of similar lengths are forwarded
together (`length_groups`: the grouping with the fewest padded tokens) and each group drops the columns that are
padding in all its rows; the logits are put back in TRL's layout (zeros at the dropped completion columns, which the
loss mask excludes) and TRL's loss runs once on them. Position ids are passed explicitly as the columns' indices in
the full batch, so every token sees the positions TRL's single forward gives it: the logits are the same up to float
rounding (matrix products over fewer rows may sum in another order). Several processes keep TRL's one forward per
micro-batch: DDP expects one forward per backward, and sharded parameters one forward per rank.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from trl.experimental.sdpo import SDPOTrainer as TRLSDPOTrainer
from accelerate.utils import is_peft_model
from trl.experimental.sdpo.sdpo_trainer import DistillationLogits
from trl.experimental.sdpo.teacher_sync import SyncTeacherModelCallback

from .ema import EMATeacher, EMATeacherCallback
from .phases import PhasedTrainer


def token_mean_mask(loss_mask: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A loss mask and factor that turn TRL's distillation average into a mean over the active tokens.

    TRL 1.16 averages `(loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)` over all B rows, so inactive rows count
    as 0 and the distillation weight scales with the active fraction. With the mask divided by its total N, every
    row's sum is <= 1, the clamp makes each denominator 1, and B x TRL's value is sum(loss * mask) / N: the SDPO
    reference's token mean over active tokens. (tests/test_trl_contract.py pins the TRL formula this relies on.)"""
    total = loss_mask.sum()
    if total <= 0:  # no active token: TRL returns a graph-attached zero
        return loss_mask, 1.0
    return loss_mask / total, float(loss_mask.size(0))


def fp32_logits(logits: DistillationLogits) -> DistillationLogits:
    """The student's and teacher's logits upcast to fp32 before any loss reads them (a no-op when they are fp32).

    Under bf16 compute the logits reach the loss in bf16 (ZeRO-3: accelerate turns autocast off and the model is
    bf16; FSDP: the teacher's), and a divergence of bf16 log-probabilities is dominated by rounding: on a tiny
    model, a negative per-token KL on every token and a gradient cosine of 0.78 (top-k) against fp32. The upcast
    is differentiable, so the student's gradient flows back through it into the bf16 graph."""
    if logits.student_logits.dtype == torch.float32 and logits.teacher_logits.dtype == torch.float32:
        return logits
    return dataclasses.replace(logits, student_logits=logits.student_logits.float(),
                               teacher_logits=logits.teacher_logits.float())


def distilled_rows(completion_mask: torch.Tensor, self_distillation_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Indices of the rows whose distillation loss can be non-zero (some completion token with an active teacher),
    or None when that is every row (nothing to skip). Never empty: with no such row, row 0 stands in, so the
    micro-batch still runs one forward and backward (its loss is TRL's graph-attached zero)."""
    if self_distillation_mask is None:
        return None
    counts = (completion_mask * self_distillation_mask.unsqueeze(1)).sum(-1)
    rows = torch.nonzero(counts > 0).flatten()
    if rows.numel() == counts.numel():
        return None
    if rows.numel() == 0:
        return torch.zeros(1, dtype=torch.long, device=counts.device)
    return rows


def take_rows(inputs: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The micro-batch restricted to `rows`. Per-row entries are what TRL's `split_tensor_dict` splits: every tensor
    with a batch dimension (and lists); scalars and None are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            out[key] = value.index_select(0, rows.to(value.device))
        elif isinstance(value, list):
            out[key] = [value[i] for i in rows.tolist()]
        else:
            out[key] = value
    return out


def row_scale(normalization: str, kept: int, batch: int) -> float:
    """Factor from the loss over `kept` rows to the loss over the whole micro-batch of `batch` rows. TRL's mean over
    all samples counts the dropped rows as zeros in its denominator (kept / batch); the active-token mean does not
    depend on them (1)."""
    if normalization == "active_tokens":
        return 1.0
    return kept / batch


def length_groups(prompt_lens: Sequence[int], completion_lens: Sequence[int], max_groups: int,
                  overhead: int = 16) -> list[list[int]]:
    """Rows split into at most `max_groups` groups to forward separately, with the fewest padded tokens.

    A group costs its rows x (its longest prompt + its longest completion) tokens (prompts stay left-padded and
    completions right-padded within it) plus `overhead` tokens (what one more forward costs beyond its tokens).
    Rows are ordered by total length and cut into contiguous runs, the best cut found by dynamic programming.
    Each group lists its rows in ascending order; groups come shortest first."""
    n = len(prompt_lens)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: (prompt_lens[i] + completion_lens[i], i))

    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(max_groups + 1)]  # best[k][b]: order[:b] in k groups
    cut = [[0] * (n + 1) for _ in range(max_groups + 1)]
    best[0][0] = 0
    for k in range(1, max_groups + 1):
        for b in range(1, n + 1):
            # the run order[a:b], for a from b - 1 down: its longest prompt and completion grow as a falls, so
            # they are kept as running maxima (O(n^2) per k, not O(n^3): this runs on every micro-batch)
            longest_prompt = longest_completion = 0
            for a in range(b - 1, k - 2, -1):
                longest_prompt = max(longest_prompt, prompt_lens[order[a]])
                longest_completion = max(longest_completion, completion_lens[order[a]])
                c = best[k - 1][a] + (b - a) * (longest_prompt + longest_completion) + overhead
                if c <= best[k][b]:  # on a tie the smallest a wins, as in an ascending scan
                    best[k][b], cut[k][b] = c, a
    k = min(range(1, max_groups + 1), key=lambda g: (best[g][n], g))
    groups, b = [], n
    while k > 0:
        a = cut[k][b]
        groups.append(sorted(order[a:b]))
        b, k = a, k - 1
    return groups[::-1]


class SDPOTrainer(PhasedTrainer, TRLSDPOTrainer):
    """TRL's SDPOTrainer (used by sdpo and pmd alike) with these changes: `train.distillation_normalization` (TRL
    has no hook for it; the logged distillation loss is unchanged, TRL already logs the active-token mean); the
    distillation loss computed on the rows that can contribute only (`distil_active_rows_only`; the module
    docstring says why this leaves the loss as it was); the same collectives whether or not a token is active;
    fp32 logits into every loss; an EMA teacher kept in fp32 (ema.py)."""

    ema: EMATeacher | None = None  # the fp32 EMA of a separate teacher (teacher_model_kind "ema", no PEFT)

    def __init__(self, *args, distillation_normalization: str = "all_samples", distil_active_rows_only: bool = True,
                 length_groups: int = 4, **kwargs):
        """The three loss options are train.distillation_normalization (TRL's all_samples unless set),
        train.distil_active_rows_only (False: TRL's forward over every row) and train.length_groups (most forwards
        per micro-batch on one process; 1: TRL's single padded forward)."""
        self.distillation_normalization = distillation_normalization
        self.distil_active_rows_only = distil_active_rows_only
        self.length_groups = length_groups
        super().__init__(*args, **kwargs)

    def _setup_teacher_model(self) -> None:
        """TRL's teacher, with a separate EMA teacher built in fp32 and updated by pmd's fp32 EMA (ema.py) instead
        of TRL's in-place update in the weights' dtype. A frozen base or PEFT teacher is TRL's, unchanged."""
        separate_ema = self.args.teacher_model_kind == "ema" and not is_peft_model(self.model)
        saved = self.args.model_init_kwargs
        if separate_ema:
            self.args.model_init_kwargs = {**(saved or {}), "dtype": torch.float32}
        try:
            super()._setup_teacher_model()
        finally:
            self.args.model_init_kwargs = saved
        if not separate_ema:
            return
        self.callback_handler.remove_callback(SyncTeacherModelCallback)
        self.ema = EMATeacher(lambda: self.accelerator.unwrap_model(self.model).parameters(),
                              self.accelerator.unwrap_model(self.teacher_model), self.args.teacher_update_rate)
        self.add_callback(EMATeacherCallback(self.ema))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rows = None
        if (self.distil_active_rows_only and self.args.distillation_weight == 1.0 and not self.use_teacher_server
                and not return_outputs):
            rows = distilled_rows(inputs["completion_mask"], inputs.get("self_distillation_mask"))
        if rows is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        batch = inputs["completion_mask"].size(0)
        loss = super().compute_loss(model, take_rows(inputs, rows), return_outputs, num_items_in_batch)
        return loss * row_scale(self.distillation_normalization, int(rows.numel()), batch)

    def _compute_self_distillation_loss(self, model, inputs, distillation_logits):
        distillation_logits = fp32_logits(distillation_logits)
        if distillation_logits.loss_mask.sum() == 0:
            return self._no_active_token_loss(model, distillation_logits)
        if self.distillation_normalization != "active_tokens":
            return super()._compute_self_distillation_loss(model, inputs, distillation_logits)
        mask, factor = token_mean_mask(distillation_logits.loss_mask)
        scaled = dataclasses.replace(distillation_logits, loss_mask=mask)
        return factor * super()._compute_self_distillation_loss(model, inputs, scaled)

    def _no_active_token_loss(self, model, distillation_logits: DistillationLogits) -> torch.Tensor:
        """TRL's loss for a micro-batch with no active token (a graph-attached zero), with the collective TRL skips.

        TRL 1.16 returns early here without its `accelerator.gather` of the logged loss, while a rank with active
        tokens makes that gather: on two ranks one waited in the gather and the other in DDP's gradient all-reduce,
        for ever (the 2-rank SmolLM2 hang; a tiny random model rarely has a rank with no success). Every rank must
        make the same collectives, so this one gathers its zero as the active ranks gather their losses."""
        mode = "train" if model.training else "eval"
        zero = distillation_logits.student_logits.new_zeros((), dtype=torch.float32)
        self._log_self_distillation_metric(mode, self.accelerator.gather(zero).mean().item())
        return distillation_logits.student_logits.sum() * 0.0

    def _compute_policy_loss(self, inputs, student_logits):
        return super()._compute_policy_loss(inputs, student_logits.float())

    def _grouping(self) -> bool:
        return (self.length_groups > 1 and self.accelerator.num_processes == 1 and not self.use_teacher_server
                and "position_ids" in self.model_kwarg_keys)

    def _compute_teacher_student_logits(self, model, teacher_model, inputs) -> DistillationLogits:
        """TRL's student and teacher logits over the completion tokens (`SDPOTrainer._compute_teacher_student_logits`
        in TRL: same inputs, same masks), each forwarded in groups of similar lengths (module docstring)."""
        if not self._grouping():
            return super()._compute_teacher_student_logits(model, teacher_model, inputs)
        completion_mask = inputs["completion_mask"]
        width = completion_mask.size(1)
        sd_mask = inputs.get("self_distillation_mask")
        loss_mask = completion_mask if sd_mask is None else completion_mask * sd_mask.unsqueeze(1)
        student_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        student_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        student = self._grouped_logits(model, student_ids, student_mask, width)
        with torch.no_grad(), self._get_teacher_context_for_self_distillation():
            teacher = self._grouped_logits(teacher_model, inputs["teacher_input_ids"],
                                           inputs["teacher_attention_mask"], width)
        return DistillationLogits(completion_ids=inputs["completion_ids"], completion_mask=completion_mask,
                                  loss_mask=loss_mask, student_logits=student, teacher_logits=teacher)

    def _grouped_logits(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int):
        """Logits (B, width, V) over the last `width` columns (the completion), as TRL's `_forward_logits` gives
        them, from one forward per length group over the columns that are not padding in all of its rows."""
        prompt_part, completion_part = attention_mask[:, :-width], attention_mask[:, -width:]
        groups = length_groups(prompt_part.sum(1).tolist(), completion_part.sum(1).tolist(), self.length_groups)
        out = None
        for rows in groups:
            idx = torch.tensor(rows, device=input_ids.device)
            mask = attention_mask.index_select(0, idx)
            used = torch.nonzero(mask[:, :-width].any(0)).flatten()
            start = int(used[0]) if used.numel() else attention_mask.size(1) - width
            in_use = torch.nonzero(mask[:, -width:].any(0)).flatten()
            keep = int(in_use[-1]) + 1 if in_use.numel() else 1  # completion columns up to the last one in use
            end = attention_mask.size(1) - width + keep
            logits = self._forward_logits_at(model, input_ids.index_select(0, idx)[:, start:end], mask[:, start:end],
                                             torch.arange(start, end, device=input_ids.device), keep)
            if len(groups) == 1 and keep == width:
                return logits
            if out is None:  # written in place, one group at a time: no second copy of the batch's logits
                out = logits.new_zeros(attention_mask.size(0), width, logits.size(-1))
            out[idx, :keep] = logits  # autograd carries the student's gradient through the assignment
        return out

    def _forward_logits_at(self, model, input_ids, attention_mask, position_ids, logits_to_keep: int):
        """TRL's `_forward_logits` with explicit positions (TRL's forward numbers the columns 0..L-1)."""
        model_inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False,
                        "position_ids": position_ids.unsqueeze(0).expand(input_ids.size(0), -1)}
        if "logits_to_keep" in self.model_kwarg_keys:
            model_inputs["logits_to_keep"] = logits_to_keep + 1
        logits = model(**model_inputs).logits
        return logits[:, :-1, :][:, -logits_to_keep:, :] / self.temperature
