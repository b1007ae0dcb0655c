"""LoRA's target modules (`train.lora_target_modules`): their form, checked when the config loads, and the names
against the model's modules, checked at preflight. Both fail with one line before the run directory exists, rather
than inside PEFT once the trainer is being built (the run directory written and locked).

PEFT matches a list of names against the ends of module paths (`q_proj` matches `model.layers.0.self_attn.q_proj`),
and adapts only some module types; a name that matches nothing failed in PEFT ("Target modules ... not found"), and
a name that matches only containers (`self_attn`, `mlp`) failed as "not supported". A name that matches nothing
beside names that do match was silently ignored by PEFT: here it is refused too, since it is a typo either way.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

# Module types PEFT's LoRA can wrap (peft.tuners.lora.model: Linear, Embedding, Conv1d/2d/3d, transformers' Conv1D,
# MultiheadAttention), by class name so that this module imports neither torch nor transformers.
LORA_MODULE_TYPES = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D", "MultiheadAttention")


def check_lora_form(targets: str | list[str]) -> None:
    """The config's own view, at load. A bare string other than 'all-linear' is refused: PEFT would read it as a
    regular expression over full module paths, so `q_proj` would match nothing; a list of names (matched against
    the ends of module paths) says what is meant."""
    if isinstance(targets, str):
        if targets != "all-linear":
            hint = f" (for one module write [{targets}])" if targets.strip() else ""
            raise ConfigError(f"train.lora_target_modules: expected 'all-linear' or a list of module names, got "
                              f"{targets!r}{hint}")
        return
    if not targets:
        raise ConfigError("train.lora_target_modules: expected 'all-linear' or a non-empty list of module names, "
                          "got []")
    for i, name in enumerate(targets):
        if not name or name != name.strip():
            raise ConfigError(f"train.lora_target_modules[{i}]: expected a module name (no blanks around it), got "
                              f"{name!r}")
        if name == "all-linear":
            raise ConfigError("train.lora_target_modules: 'all-linear' stands alone, not in a list")
    if len(set(targets)) != len(targets):
        raise ConfigError(f"train.lora_target_modules: {targets} names a module twice")


def adaptable_names(modules: list[tuple[str, str]]) -> list[str]:
    """The short names (last path component) of the modules LoRA can wrap, sorted: what a target list may name.
    `modules` holds (path, class name) pairs, as `named_modules()` gives them."""
    return sorted({path.rsplit(".", 1)[-1] for path, kind in modules if path and kind in LORA_MODULE_TYPES})


def check_lora_targets(targets: str | list[str], modules: list[tuple[str, str]], model: str) -> None:
    """Each name of a target list matches (as PEFT matches it) at least one module of `model` that LoRA can wrap.
    `modules` holds the model's (path, class name) pairs; 'all-linear' is PEFT's own choice and passes."""
    if isinstance(targets, str):
        return
    for i, name in enumerate(targets):
        matched = [kind for path, kind in modules if path == name or path.endswith(f".{name}")]
        if any(kind in LORA_MODULE_TYPES for kind in matched):
            continue
        has = ", ".join(adaptable_names(modules)) or "none"
        what = (f"names {sorted(set(matched))[0]} modules, which LoRA cannot adapt" if matched
                else "names no module of the model")
        raise ConfigError(f"train.lora_target_modules[{i}]: {name!r} {what}; {model} has these that LoRA can "
                          f"adapt: {has} (or use 'all-linear')")
