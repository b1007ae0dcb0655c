"""Named, timed phases of a step, as verl's `fit()` marks them (`with marked_timer("gen")`), for two readers.

- The logs: each phase's seconds since the last log reach metrics.jsonl and every tracker as `time/<phase>`.
  Times are exclusive: a phase entered inside another (generation inside TRL's training step) is not counted twice.
- A failure: when a collective times out, the one-line error names the phase and step this rank was in
  (`collective_failure`), which is what tells a mismatch in the sequence of collectives apart from a slow rank.

`CLOCK` is process-wide on purpose, like Python's `faulthandler`: the error line is printed by the CLI, far from the
code that was running, and has to know where this rank stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator


class PhaseClock:
    """The phase this process is in, and the seconds each phase took (exclusive of nested phases)."""

    def __init__(self, clock=time.perf_counter):
        self._now = clock
        self.stack: list[str] = []
        self.failed_at: tuple[str, int] | None = None
        self.step = 0  # the optimizer step being trained (1-based, as in metrics.jsonl)
        self._seconds: dict[str, float] = defaultdict(float)
        self._since = clock()

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else "between phases"

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.begin(name)
        try:
            yield
        except BaseException:
            if self.failed_at is None:  # the innermost phase the exception left; the error line names it
                self.failed_at = (self.current, self.step)
            raise
        finally:
            self.end(name)

    def begin(self, name: str) -> None:
        """Enter `name` (for seams that open and close in two callbacks; `phase` otherwise)."""
        self._charge()
        self.failed_at = None  # an exception that was handled before this phase began is not this run's end
        self.stack.append(name)

    def where(self) -> tuple[str, int]:
        """The phase and step this process is in, or was in when an exception unwound it."""
        return self.failed_at or (self.current, self.step)

    def end(self, name: str) -> None:
        """Leave `name`, and any phase entered inside it that an exception left open."""
        self._charge()
        while self.stack:
            if self.stack.pop() == name:
                break

    def _charge(self) -> None:
        """The time since the last change of phase goes to the phase that was running."""
        now = self._now()
        if self.stack:
            self._seconds[self.stack[-1]] += now - self._since
        self._since = now

    def reset(self) -> None:
        """Start a run with nothing charged and no phase open (a process may train several runs: pmd compare)."""
        self.stack.clear()
        self._seconds.clear()
        self.failed_at = None
        self.step = 0
        self._since = self._now()

    def take(self) -> dict[str, float]:
        """`time/<phase>` seconds since the last call (the open phases' time so far included), then reset."""
        self._charge()
        out = {f"time/{name}": round(s, 4) for name, s in sorted(self._seconds.items())}
        self._seconds.clear()
        return out


CLOCK = PhaseClock()


def phase(name: str):
    """`with phase("generate"):` on the process-wide clock."""
    return CLOCK.phase(name)


class PhasedTrainer:
    """Mixin for TRL's GRPOTrainer and SDPOTrainer: their seams run inside named phases, and `log` adds the
    phases' seconds (`time/<phase>`), so they reach metrics.jsonl and every `report_to` tracker.

    TRL's training step generates inside `training_step` (its `_prepare_inputs`), so with exclusive times:
    `generate` (rollouts), `reward` (the reward functions), `teacher_context` (SDPO/PMD's teacher prompts: gather,
    retrieve, plan, render), `prepare_batch` (the rest of TRL's batch: padding, the rollouts' log-probabilities,
    advantages, metrics), `loss_forward` (student and teacher forwards and the loss) and `backward` (what is left
    of the training step: the backward pass), then `optimizer` (`OptimizerPhase`). The step's own phases are
    marked where step.py runs them (`retrieve`, `plan`, `render` inside `teacher_context`; `record`, `reflect`,
    `consolidate`, `eval` in `after_update`; `save`), and `ema_sync` by the EMA teacher. A checkpoint is saved after
    its step is logged, so its `time/save` is in the next step's row."""

    def train(self, *args, **kwargs):
        CLOCK.reset()
        return super().train(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        CLOCK.step = self.state.global_step + 1
        with CLOCK.phase("backward"):
            return super().training_step(model, inputs, num_items_in_batch)

    def _prepare_inputs(self, *args, **kwargs):
        with CLOCK.phase("prepare_batch"):
            return super()._prepare_inputs(*args, **kwargs)

    def _generate(self, *args, **kwargs):
        # TRL generates outside the loss's autocast; under the run's autocast it is as fast as bf16 weights (2x
        # fp32 on an AVX512-BF16 CPU, docs/benchmarks.md), and needs no second copy of them.
        with CLOCK.phase("generate"), self.accelerator.autocast():
            return super()._generate(*args, **kwargs)

    def _calculate_rewards(self, *args, **kwargs):
        with CLOCK.phase("reward"):
            return super()._calculate_rewards(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with CLOCK.phase("loss_forward"):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _save_checkpoint(self, model, trial):
        with CLOCK.phase("save"):
            return super()._save_checkpoint(model, trial)

    def log(self, logs, start_time=None):
        if self.model.training and "loss" in logs:  # a training step's log, not train()'s closing summary
            logs = {**logs, **CLOCK.take()}
        return super().log(logs, start_time)


def optimizer_phase_callback():
    """A TrainerCallback that marks the optimizer step (transformers calls the optimizer inline, between two
    callback events, so no method can be wrapped)."""
    from transformers import TrainerCallback

    class OptimizerPhase(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            CLOCK.begin("optimizer")

        def on_optimizer_step(self, args, state, control, **kwargs):
            CLOCK.end("optimizer")

    return OptimizerPhase()
