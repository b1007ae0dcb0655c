"""Known-harmless library noise is filtered narrowly, and TRL's per-step SDPO diagnostics are thinned (quiet.py;
issue 26, item 10)."""

from __future__ import annotations

import logging
import warnings


def test_the_gradient_checkpointing_future_warning_is_dropped_and_no_other(tiny_model_path):
    from transformers import AutoModelForCausalLM

    from pmd import quiet

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)

    def as_trl_calls_them():  # trl.models.utils, each time it unwraps the model for generation
        assert model.is_gradient_checkpointing is False
        model.gradient_checkpointing_enable()
        assert model.is_activation_checkpointing is True
        model.gradient_checkpointing_disable()

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        as_trl_calls_them()  # without the filter: three FutureWarnings
        assert sorted(str(w.message).split("`")[1] for w in seen if w.category is FutureWarning) == [
            "gradient_checkpointing_disable", "gradient_checkpointing_enable", "is_gradient_checkpointing"]
        seen.clear()
        quiet.install()
        as_trl_calls_them()  # transformers' own warnings, from its own module: dropped
        text = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
        warnings.warn_explicit(text, FutureWarning, "elsewhere.py", 1, module="elsewhere")  # other module
        warnings.warn_explicit(text, DeprecationWarning, "m.py", 1, module="transformers.modeling_utils")  # category
        warnings.warn_explicit("another FutureWarning", FutureWarning, "m.py", 2, module="transformers.modeling_utils")
    assert [(type(w.message), w.filename) for w in seen] == [(FutureWarning, "elsewhere.py"),
                                                            (DeprecationWarning, "m.py"), (FutureWarning, "m.py")]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_trls_flat_rewards_line_is_shown_once_then_one_in_ten():
    """Through TRL's own emitter: its rate limit counts consecutive degenerate steps only, so rewards that are flat
    on most steps but not all made it print on nearly every step."""
    from collections import defaultdict
    from types import SimpleNamespace

    from accelerate import PartialState
    from trl.experimental.sdpo.sdpo_trainer import SDPOTrainer

    from pmd import quiet

    PartialState()  # accelerate's logger needs its state
    quiet.install()
    handler = _Records()
    logger = logging.getLogger(quiet.SDPO_LOGGER)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.WARNING)
    trainer = SimpleNamespace(args=SimpleNamespace(diagnostics_warning_interval=10),
                              _diagnostic_counters=defaultdict(lambda: defaultdict(int)))
    flat = "Observed flat SDPO rewards across all sampled generations."
    try:
        for _ in range(30):  # flat, then one step that is not: TRL restarts its count and reports again
            SDPOTrainer._warn_on_degenerate_diagnostics(trainer, "train", "flat_rewards", flat)
            trainer._diagnostic_counters["train"]["flat_rewards"] = 0
        SDPOTrainer._warn_on_degenerate_diagnostics(trainer, "train", "no_successful_rollouts", "No success.")
        logger.warning("Some other SDPO warning.")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    shown = [line for line in handler.lines if flat in line]  # accelerate may prefix "[RANK 0] "
    assert len(shown) == 4  # reports 1, 10, 20, 30 of 30
    assert "report 10 of this diagnostic" in shown[1] and "report 30" in shown[3] and "report" not in shown[0]
    assert handler.lines[-2].endswith("No success. Consecutive degenerate steps: 1.")  # its own count: first shown
    assert handler.lines[-1] == "Some other SDPO warning." and len(handler.lines) == 6
