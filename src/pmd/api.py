"""The Python API: `from pmd import RunConfig, train, evaluate_model`.

`train(config, train_dataset=..., reward_funcs=[...])` is `pmd train` (the same `run.Run` lifecycle: preflight,
run directory, base evaluation, training, trained evaluation, report) with the data and the rewards given as Python
objects, the way TRL's trainers take them: a `datasets.Dataset` (or a list of row dicts) and reward callables with
TRL's signature `(prompts, completions, **kwargs)`. `evaluate_model(model_or_run_dir, ...)` is `pmd eval`:
memory-free held-out evaluation. (Not `evaluate`: pmd.evaluate is a module, and importing it, as every run does,
rebinds the package's attribute of that name to the module.)

How the objects reach the `kind: dataset` task, without a second code path for in-memory data: each dataset is
written with `save_to_disk` to a temporary folder (read back by the same loader, with the same checks, as a
`save_to_disk` folder named in a YAML file) and removed when the call returns; each callable is named by
`module:function` as a YAML file would name it, its own when it is importable from its module, else an entry this
module serves through `__getattr__` for the length of the call (a lambda, a function defined in a script or a
notebook). The reward terms keep the functions' names, as TRL's `rewards/<name>` metrics do.

What this means for the run directory: its config.yaml records the temporary data path and, for a function that is
not importable, `pmd.api:<name>`: a run made here is resumed or re-evaluated from Python (call `train(...,
resume=True)` / `evaluate_model(...)` with the same objects), not from the command line.

Nothing here imports torch, TRL or `datasets` until a call needs them, so `import pmd` stays light.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import RunConfig, TaskConfig, config_from_dict, load_config, to_dict
from .errors import ConfigError

RewardFunc = Callable[..., Any] | str  # a TRL-style callable, or the name of a built-in verifier ("exact", ...)

_CALLABLES: dict[str, Callable[..., Any]] = {}  # the call's non-importable reward functions, served by __getattr__


def __getattr__(name: str) -> Any:
    """`pmd.api:<name>` for a reward function registered by the running `train` / `evaluate_model` call."""
    try:
        return _CALLABLES[name]
    except KeyError:
        raise AttributeError(f"module 'pmd.api' has no attribute {name!r}") from None


def train(config: RunConfig | str | Path | Mapping[str, Any] | None = None, *, train_dataset: Any = None,
          eval_dataset: Any = None, reward_funcs: RewardFunc | Sequence[RewardFunc] | None = None,
          reward_weights: Sequence[float] | None = None, prompt_column: str = "prompt",
          answer_column: str | None = None, run_dir: str | Path | None = None, evaluate: bool = True,
          resume: bool = False) -> dict[str, Any]:
    """Train as `pmd train` does and return its summary (the dict `pmd train` prints; `summary["report"]` names
    RUN/report.md, the trained model is RUN/final).

    config: a RunConfig, a YAML path, plain data as YAML holds it, or None for the defaults (`pmd config --dump`).
    train_dataset: a `datasets.Dataset` (or a list of row dicts) that replaces `config.env.tasks` with one
      `kind: dataset` task; `prompt_column` holds text or chat messages, `answer_column` the reference answer
      (default: "answer" when the dataset has that column, else none: your functions judge alone). Every column
      reaches the reward functions as a keyword argument, as in TRL.
    eval_dataset: held-out problems (default: `eval_fraction` of train_dataset, deduplicated).
    reward_funcs: callables with TRL's reward signature and/or built-in verifier names (default: the exact-match
      verifier against the answer column); reward_weights: one weight each (default 1.0), as TRL's.
    run_dir: where the run goes (default: `config.run_dir`); evaluate: evaluate base and trained model memory-free
      before and after (`pmd train --no-eval` is evaluate=False); resume: continue from the last checkpoint.
    Bad input raises a `pmd.errors.PMDError` subclass whose message is the line `pmd train` would print, before
    anything is written."""
    from .pipeline import run_training

    cfg = _config(config, run_dir)
    with _task(cfg, train_dataset, eval_dataset, reward_funcs, reward_weights, prompt_column, answer_column) as run:
        return run_training(run, evaluate_models=evaluate, resume=resume)


def evaluate_model(model_or_run_dir: str | Path,
                   config: RunConfig | str | Path | Mapping[str, Any] | None = None, *, train_dataset: Any = None,
                   eval_dataset: Any = None, reward_funcs: RewardFunc | Sequence[RewardFunc] | None = None,
                   reward_weights: Sequence[float] | None = None, prompt_column: str = "prompt",
                   answer_column: str | None = None) -> dict[str, Any]:
    """Memory-free held-out evaluation, as `pmd eval`; returns its JSON as a dict (`["overall"]["greedy_accuracy"]`,
    per family under `["families"]`), with one row per generated answer under `["samples"]` (what `pmd eval --out`
    writes to OUT.samples.jsonl).

    model_or_run_dir: a model (name, HF id or folder) or a run directory (its `final/` model and, with no config,
    its config.yaml). The data arguments are train()'s: give the same ones to evaluate on the problems that run held
    out (a `kind: dataset` task needs its training rows too: they are what the held-out split is kept apart from)."""
    from .pipeline import run_evaluation

    target = Path(model_or_run_dir)
    is_run = (target / "final").is_dir() and (target / "config.yaml").is_file()
    if config is None and is_run:
        config = target / "config.yaml"
    cfg = _config(config, None)
    cfg.model.name_or_path = str(target / "final") if is_run else str(model_or_run_dir)
    if eval_dataset is not None and train_dataset is None:
        raise ConfigError("evaluate_model: eval_dataset needs train_dataset too (the rows the held-out split is kept "
                          "apart from; pass the ones train() got)")
    with _task(cfg, train_dataset, eval_dataset, reward_funcs, reward_weights, prompt_column, answer_column) as run:
        return run_evaluation(run)


def _config(config: Any, run_dir: str | Path | None) -> RunConfig:
    """A RunConfig from what the caller gave, rebuilt from its plain data so that fields assigned after construction
    (`cfg.train.steps = 0`) are checked like a file's."""
    if config is None or isinstance(config, (str, Path)):
        cfg = load_config(config)
    elif isinstance(config, RunConfig):
        cfg = config_from_dict(to_dict(config))
    elif isinstance(config, Mapping):
        cfg = config_from_dict(dict(config))
    else:
        raise ConfigError(f"config: expected a RunConfig, a YAML path or a mapping, got {type(config).__name__}")
    if run_dir is not None:
        cfg.run_dir = str(run_dir)
        cfg = config_from_dict(to_dict(cfg))
    return cfg


@contextlib.contextmanager
def _task(cfg: RunConfig, train_dataset: Any, eval_dataset: Any, reward_funcs: Any, reward_weights: Any,
          prompt_column: str, answer_column: str | None) -> Iterator[RunConfig]:
    """`cfg` with its tasks replaced by one `kind: dataset` task over the given objects (unchanged without data),
    for the length of the `with`; the temporary data and the served callables are gone afterwards."""
    if train_dataset is None:
        if reward_funcs is not None or reward_weights is not None:
            raise ConfigError("reward_funcs: they score a train_dataset's rows; give train_dataset too (or name "
                              "functions in the config's kind: dataset task)")
        yield cfg
        return
    folder = Path(tempfile.mkdtemp(prefix="pmd-api-data-"))
    try:
        train_ds = _dataset(train_dataset, "train_dataset")
        columns = list(train_ds.column_names)
        if answer_column is None:
            answer_column = "answer" if "answer" in columns else ""
        train_ds.save_to_disk(str(folder / "train"))
        params: dict[str, Any] = {"path": str(folder / "train"), "prompt": prompt_column, "answer": answer_column}
        if eval_dataset is not None:
            _dataset(eval_dataset, "eval_dataset").save_to_disk(str(folder / "eval"))
            params["eval_path"] = str(folder / "eval")
        if reward_funcs is not None:
            params["rewards"] = _reward_specs(reward_funcs, reward_weights)
        elif reward_weights is not None:
            raise ConfigError("reward_weights: give reward_funcs too (one weight per function)")
        data = to_dict(cfg)
        data["env"]["tasks"] = [to_dict(TaskConfig(kind="dataset", name="dataset", params=params))]
        yield config_from_dict(data)
    finally:
        _CALLABLES.clear()
        shutil.rmtree(folder, ignore_errors=True)


def _dataset(value: Any, where: str) -> Any:
    """A `datasets.Dataset` from a Dataset or a list of row dicts."""
    import datasets

    if isinstance(value, datasets.Dataset):
        return value
    if isinstance(value, datasets.DatasetDict):
        raise ConfigError(f"{where}: a DatasetDict; pass one split (e.g. dataset['train'])")
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        return datasets.Dataset.from_list(value)
    raise ConfigError(f"{where}: expected a datasets.Dataset or a non-empty list of row dicts, got "
                      f"{type(value).__name__}")


def _reward_specs(reward_funcs: Any, reward_weights: Any) -> list[dict[str, Any]]:
    """One `rewards:` entry per function (TRL's reward_funcs), weighted as TRL's reward_weights."""
    funcs = [reward_funcs] if callable(reward_funcs) or isinstance(reward_funcs, str) else list(reward_funcs)
    if not funcs:
        raise ConfigError("reward_funcs: give at least one function or verifier name")
    weights = [1.0] * len(funcs) if reward_weights is None else list(reward_weights)
    if len(weights) != len(funcs):
        raise ConfigError(f"reward_weights: {len(weights)} weights for {len(funcs)} reward functions; give one each")
    specs = []
    for i, (fn, weight) in enumerate(zip(funcs, weights)):
        if isinstance(fn, str):
            specs.append({"verifier": fn, "weight": weight})
        elif callable(fn):
            specs.append({"function": _function_name(fn), "weight": weight})
        else:
            raise ConfigError(f"reward_funcs[{i}]: expected a callable or a built-in verifier name, got "
                              f"{type(fn).__name__}")
    return specs


def _function_name(fn: Callable[..., Any]) -> str:
    """`module:function` for `fn`: its own when importable as such (the run's config.yaml can then be reused), else
    `pmd.api:<its name>`, served by this module's `__getattr__` while the call runs."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module and module != "__main__" and name.isidentifier():
        with contextlib.suppress(Exception):
            if getattr(importlib.import_module(module), name) is fn:
                return f"{module}:{name}"
    base = re.sub(r"\W", "_", getattr(fn, "__name__", "") or "reward").strip("_") or "reward"
    base = base if base.isidentifier() else f"reward_{base}"
    served, n = base, 1
    while served in _CALLABLES or served in globals():
        n += 1
        served = f"{base}_{n}"
    _CALLABLES[served] = fn
    return f"pmd.api:{served}"
