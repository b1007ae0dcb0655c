"""A TRL-style flag on pmd's command line (`pmd train --learning_rate 1e-6`): refused in one line that gives the
`--set` it means (`--set train.learning_rate=1e-6`).

Refused rather than accepted as a second spelling: every pmd option has one name, the same in a YAML file, in
`--set`, in `pmd config` and in the run's config.yaml; and several TRL names would not mean what they say here
(`max_steps` is `train.steps`; `per_device_train_batch_size` is `train.per_device_batch_size`, which pmd derives
from `train.prompts_per_step` unless set; `output_dir` is `run_dir`, which also holds the memory and the report). A
hint that writes the override for the user costs them one copy and keeps a single vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

# TRL / transformers argument names whose pmd key has another name.
RENAMED = {
    "max_steps": "train.steps",
    "output_dir": "run_dir",
    "model_name_or_path": "model.name_or_path",
    "model": "model.name_or_path",
    "per_device_train_batch_size": "train.per_device_batch_size",
    "torch_dtype": "model.dtype",
    "dtype": "model.dtype",
    "max_length": "train.max_completion_length",
    "lora_target_modules": "train.lora_target_modules",
    "num_train_epochs": "train.steps (pmd counts optimizer steps, not epochs)",
}
# Sections searched, in order, for a field of the flag's name: the command's own first (`pmd train --seed` is
# train.seed, `pmd eval --temperature` is eval.temperature).
_SECTIONS = {"eval": ("eval", "model", "train", "memory", "env")}
_DEFAULT_ORDER = ("train", "model", "eval", "memory", "env")


def pmd_key(name: str, command: str = "train") -> str | None:
    """The pmd config key a TRL-style option name means for `command`, or None."""
    from .config import RunConfig

    name = name.replace("-", "_")
    if name in RENAMED:
        return RENAMED[name]
    defaults = RunConfig()
    if name == "run_dir":
        return "run_dir"
    for section in _SECTIONS.get(command, _DEFAULT_ORDER):
        if name in {f.name for f in dataclasses.fields(getattr(defaults, section))}:
            return f"{section}.{name}"
    return None


def foreign_flag_hint(extra: Sequence[str], argv: Sequence[str], command: str) -> str | None:
    """The one-line error for the first unrecognised `--flag` in `extra` (what argparse left over from `argv`), or None
    when the leftovers are no flag (argparse's own message then)."""
    flag = next((a for a in extra if a.startswith("--") and len(a) > 2), None)
    if flag is None or command not in ("train", "eval", "compare"):
        return None
    name, eq, value = flag[2:].partition("=")
    if not eq:  # `--flag VALUE`: argparse may have taken VALUE as the config file; read it from the command line
        at = list(argv).index(flag) if flag in argv else -1
        following = argv[at + 1] if 0 <= at < len(argv) - 1 else ""
        value = following if following and not following.startswith("-") else "VALUE"
    key = pmd_key(name, command)
    if key is None:
        return (f"--{name}: not a pmd option; pmd's options are config keys (pmd config lists them): a TRL "
                f"GRPOConfig/SDPOConfig field passes through as --set train.trl.{name}={value}")
    if " " in key:  # a note rather than a key (num_train_epochs)
        return f"--{name}: not a pmd option; set {key}"
    return f"--{name}: not a pmd option; pmd's options are config keys: --set {key}={value} (see pmd config " \
           f"{key.rpartition('.')[0] or key})"
