"""`pmd config [SECTION]`: every config field with its default, allowed values and one-line help, read from the typed
dataclasses themselves (the `_f` metadata in config.py, envs/env_config.py and each task kind's params), so the
listing cannot drift from what the loader checks; and `pmd config --dump CONFIG`, the resolved config a run would use.

Sections are named as the keys are written (`train`, `memory.consolidation`); a task kind's params (`dataset`,
`dataset.rewards`, `code`, ...) are listed under the key they take in a config, `env.tasks[i].params.<field>`. A
single field can be asked for too (`pmd config train.learning_rate`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from typing import Any, Literal

import yaml

from .config_fields import _hints, range_text
from .errors import ConfigError

# name -> ("module:Class", prefix of its keys in a config). Modules import lazily: a task kind may pull in more.
SECTIONS: dict[str, tuple[str, str]] = {
    "top": ("pmd.config:RunConfig", ""),
    "model": ("pmd.config:ModelConfig", "model."),
    "env": ("pmd.envs.env_config:EnvConfig", "env."),
    "env.tasks": ("pmd.envs.env_config:TaskConfig", "env.tasks[i]."),
    "train": ("pmd.config:TrainConfig", "train."),
    "memory": ("pmd.config:MemoryConfig", "memory."),
    "memory.retrieval": ("pmd.config:RetrievalConfig", "memory.retrieval."),
    "memory.consolidation": ("pmd.config:ConsolidationConfig", "memory.consolidation."),
    "eval": ("pmd.config:EvalConfig", "eval."),
    "compare": ("pmd.config:CompareConfig", "compare."),
    "dataset": ("pmd.envs.dataset:DatasetParams", "env.tasks[i].params."),
    "dataset.rewards": ("pmd.envs.dataset:RewardSpec", "env.tasks[i].params.rewards[j]."),
    "reasoning_gym": ("pmd.envs.reasoning_gym:ReasoningGymParams", "env.tasks[i].params."),
    "code": ("pmd.envs.code:CodeParams", "env.tasks[i].params."),
    "code.limits": ("pmd.envs.code.sandbox:SandboxLimits", "env.tasks[i].params.limits."),
    "sciknoweval": ("pmd.envs.sciknoweval:SciKnowEvalParams", "env.tasks[i].params."),
}
# What a section's listing says besides its fields (where its keys do not all come from one dataclass).
NOTES = {
    "train": "train.trl takes any other field of TRL's GRPOConfig (train.algo grpo) or SDPOConfig (sdpo, pmd), "
             "passed through unchanged; pmd refuses the ones it sets itself and names its own key instead.",
    "reasoning_gym": "plus the generator's own config keys for the task's name (reasoning-gym's <Name>Config "
                     "dataclass, e.g. min_terms for basic_arithmetic), checked against it at load.",
    "env.tasks": "params by kind: pmd config reasoning_gym | code | sciknoweval | dataset.",
}
ALL = ("top", "model", "env", "env.tasks", "train", "memory", "memory.retrieval", "memory.consolidation", "eval",
       "compare")  # what `pmd config` lists with no section (the task kinds: by name)


def _section_class(name: str) -> type:
    module, _, cls = SECTIONS[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)


def _unknown(name: str) -> ConfigError:
    near = difflib.get_close_matches(name, sorted(SECTIONS), n=1)
    hint = f"did you mean {near[0]}?" if near else f"known: {', '.join(sorted(SECTIONS))}"
    return ConfigError(f"pmd config: unknown section {name!r} ({hint})")


def describe(name: str | None = None) -> list[str]:
    """The lines `pmd config [name]` prints: every field of the section (every section with no name), or one field
    (`train.learning_rate`). ConfigError with the closest section for an unknown name."""
    if name is None:
        out: list[str] = []
        for section in ALL:
            out += _section_lines(section) + [""]
        return out + [f"# task params by kind: pmd config {' | '.join(s for s in SECTIONS if s not in ALL)}"]
    name = name.strip()
    if name in SECTIONS:
        return _section_lines(name)
    section, _, field_name = name.rpartition(".")
    if name == "run_dir":
        section, field_name = "top", name
    if section in SECTIONS:
        cls = _section_class(section)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if field_name in fields:
            return _field_lines(cls, fields[field_name], SECTIONS[section][1])
        near = difflib.get_close_matches(field_name, sorted(fields), n=1)
        if near:
            raise ConfigError(f"pmd config: {section} has no field {field_name!r} (did you mean {section}.{near[0]}?)")
    raise _unknown(name)


def _section_lines(name: str) -> list[str]:
    cls = _section_class(name)
    prefix = SECTIONS[name][1]
    title = "top level" if name == "top" else name
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split()) if name != "top" else "the sections"
    out = [f"# {title}" + (f": {doc}" if doc and not doc.startswith(cls.__name__ + "(") else "")]
    if name in NOTES:
        out.append(f"# {NOTES[name]}")
    for f in dataclasses.fields(cls):
        out += _field_lines(cls, f, prefix)
    return out


def _field_lines(cls: type, f: dataclasses.Field, prefix: str) -> list[str]:
    """`key: default  (allowed values)` then the help, indented."""
    tp = _hints(cls)[f.name]
    if dataclasses.is_dataclass(tp):
        sub = next((s for s, (target, _) in SECTIONS.items() if target.endswith(f":{tp.__name__}")), None)
        see = f"pmd config {sub}" if sub else tp.__name__
        return [f"{prefix}{f.name}: (section: {see})"] + _help(f)
    if f.default is not dataclasses.MISSING:
        default: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:  # pragma: no cover - every config field has a default (a test holds them to it)
        default = None
    return [f"{prefix}{f.name}: {_yaml(default)}  ({allowed(tp, f.metadata)})"] + _help(f)


def _help(f: dataclasses.Field) -> list[str]:
    return [f"    {f.metadata['help']}"] if f.metadata.get("help") else []


def _yaml(value: Any) -> str:
    """A default as one would write it in YAML (flow style, one line)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    elif isinstance(value, list):
        value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
    text = yaml.safe_dump([value], default_flow_style=True, width=10**9, allow_unicode=True).strip()
    return text[1:-1]  # dumped inside a list: no document-end marker after a lone scalar


def allowed(tp: Any, meta: Any) -> str:
    """The values a field takes, in words: its `_f` bounds, its choices, or its type."""
    origin = typing.get_origin(tp)
    if meta.get("expect"):
        return str(meta["expect"])
    if meta.get("range"):
        what = range_text(meta["range"], tp is int or typing.get_args(tp) == (int,))
        return f"list of {what}" if origin is list else what
    if origin is Literal:
        return "one of: " + ", ".join(str(c) for c in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        parts = [allowed(a, {}) for a in typing.get_args(tp)]
        return " or ".join("null" if p == "NoneType" else p for p in parts)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        least = f", at least {meta['min_len']}" if meta.get("min_len") else ""
        return f"list of {allowed(item, {})}{least}"
    if origin is dict:
        return "mapping"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "integer"
    if tp is float:
        return "number" + (f"; {meta['unbounded']}" if meta.get("unbounded") else "")
    if tp is str:
        return "non-empty text" if meta.get("nonempty") else "text"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def dump(config: str | None, overrides: list[str], section: str | None = None) -> str:
    """The resolved config as YAML, exactly what a run writes to RUN/config.yaml: defaults < file < overrides.
    With `section` (dotted, e.g. `train` or `memory.retrieval`), only that part."""
    from .config import load_config, to_dict

    data: Any = to_dict(load_config(config, overrides))
    if section:
        for step in section.split("."):
            if not isinstance(data, dict) or step not in data:
                raise ConfigError(f"pmd config --dump: no section {section!r} in the config (sections: "
                                  f"{', '.join(to_dict_keys())})")
            data = data[step]
        data = {section: data}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def to_dict_keys() -> list[str]:
    from .config import RunConfig

    return [f.name for f in dataclasses.fields(RunConfig)]
