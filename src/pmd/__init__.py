"""pmd: Procedural Memory Distillation.

A policy practises, a memory of its own attempts grows (experience -> insights -> patterns), a memory-conditioned
self-teacher re-scores the policy's rollouts, and the student (which never sees memory) distills that teacher.

The Python API (pmd/api.py; README "Python API"):

    from pmd import RunConfig, train, evaluate_model

    summary = train(RunConfig(train={"algo": "pmd", "steps": 8}), train_dataset=ds, reward_funcs=[my_reward])

Its names load on first use, so `import pmd` imports neither torch nor TRL (the CLI's start stays fast).
"""

import os as _os

# We use trl.experimental.sdpo knowingly, pinned to trl==1.16.0 and guarded by a contract test.
_os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

__version__ = "0.1.0"

# name -> module that defines it; loaded by __getattr__ on first use
_EXPORTS = {
    # evaluate_model, not evaluate: importing the submodule pmd.evaluate (every run does) rebinds `pmd.evaluate`
    "train": "pmd.api", "evaluate_model": "pmd.api",
    "RunConfig": "pmd.config", "load_config": "pmd.config", "ModelConfig": "pmd.config", "TrainConfig": "pmd.config",
    "MemoryConfig": "pmd.config", "EvalConfig": "pmd.config", "EnvConfig": "pmd.config", "TaskConfig": "pmd.config",
    "PMDError": "pmd.errors", "ConfigError": "pmd.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'pmd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
