"""Known-harmless noise from the libraries pmd pins, silenced or thinned in one place, each with why it is harmless.

Every entry is matched narrowly (the exact message, its category and the module that raises it), so a new warning
from the same library, or the same text from elsewhere, still shows. `install` is called when a trainer is built
(trainer.build_trainer), and again by each build: pytest and `warnings.catch_warnings` reset the warning filters.
"""

from __future__ import annotations

import logging
import re
import warnings

# (message regex, category, module regex): Python warnings dropped, each for the reason beside it.
_V6_ALIAS = "`{}` is deprecated and will be removed in v6."
HARMLESS_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = tuple(
    # transformers 5.24 renamed gradient checkpointing to activation checkpointing and kept the old names as
    # aliases that warn; TRL 1.16 still calls the old names each time it unwraps the model for generation
    # (trl.models.utils: is_gradient_checkpointing, then gradient_checkpointing_disable / _enable when it is on), so
    # every run printed them. Harmless: each alias forwards to its new name, and it is TRL's code, not a setting a
    # user could change (pmd passes the new name to TrainingArguments: trl_args.checkpointing_field).
    (re.escape(_V6_ALIAS.format(name)), FutureWarning, r"transformers\.modeling_utils\Z")
    for name in ("is_gradient_checkpointing", "gradient_checkpointing_disable", "gradient_checkpointing_enable")
)

# TRL 1.16's SDPOTrainer logs its degenerate-step diagnostics ("Observed flat SDPO rewards across all sampled
# generations. ...", "SDPO did not find any successful rollouts ...", "SDPO self-distillation is inactive ...")
# through this logger with this format, at the first degenerate step of every run of them and every
# `diagnostics_warning_interval` consecutive ones. Rewards that are flat on some steps and not on others (sparse
# rewards, early training) restart the run each time, so the line came nearly every step. The facts stay in the
# metrics every step (self_distillation/flat_group_fraction, .../reward_std, .../success_group_fraction).
SDPO_LOGGER = "trl.experimental.sdpo.sdpo_trainer"
SDPO_DIAGNOSTIC_FORMAT = "%s Consecutive degenerate steps: %s."
DIAGNOSTIC_EVERY = 10  # after the first report of each diagnostic, one in this many is shown


class EveryNth(logging.Filter):
    """Lets through the first record of each TRL degenerate-step diagnostic and then one in `every`, noting how many
    there were; every other record passes untouched. Counts are per process (each rank logs its own)."""

    def __init__(self, every: int = DIAGNOSTIC_EVERY):
        super().__init__()
        self.every = every
        self.seen: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg  # accelerate's logger adapter may prefix "[RANK n] "
        if not (isinstance(msg, str) and msg.endswith(SDPO_DIAGNOSTIC_FORMAT) and isinstance(record.args, tuple)
                and len(record.args) == 2):
            return True
        key = str(record.args[0])
        count = self.seen[key] = self.seen.get(key, 0) + 1
        if count == 1:
            return True
        if count % self.every:
            return False
        record.msg = (f"{msg} (report {count} of this diagnostic in this run; pmd shows one in {self.every}, "
                      "metrics.jsonl has every step's self_distillation/* values)")
        return True


def install() -> None:
    """Drop the harmless warnings and thin TRL's per-step diagnostics; called once per run (a trainer build), so
    the diagnostics' counts start again for each run of a process (`pmd compare`'s sub-runs)."""
    for message, category, module in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    logger = logging.getLogger(SDPO_LOGGER)
    for old in [f for f in logger.filters if isinstance(f, EveryNth)]:
        logger.removeFilter(old)
    logger.addFilter(EveryNth())
