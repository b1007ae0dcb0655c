"""The trackers (`train.report_to`) and vLLM a run asks for: named correctly, and installed, before anything is written.

transformers and TRL find a missing tracker package or a missing vLLM only when the trainer is built, after the run
directory exists, and with a traceback; pmd checks at config load (the names) and at preflight (the packages), and
answers in one line with the install command. This module imports neither torch nor transformers at import time:
loading a config calls `check_report_to`.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from typing import TYPE_CHECKING

from .distribution import install_extra
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import RunConfig


# transformers 5.24's `report_to` names (transformers.integrations.INTEGRATION_TO_CALLBACK; a test keeps them
# equal) -> what each needs: modules that must all import ("a|b": either one), and how to install them. Kept here
# rather than read from transformers so that loading a config does not import torch.
INTEGRATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "azure_ml": (("azureml",), "pip install azureml-core"),
    "clearml": (("clearml",), "pip install clearml"),
    "codecarbon": (("codecarbon",), "pip install codecarbon"),
    "comet_ml": (("comet_ml",), "pip install comet-ml"),
    "dagshub": (("dagshub", "mlflow"), "pip install dagshub mlflow"),
    "dvclive": (("dvclive",), "pip install dvclive"),
    "flyte": (("flytekit", "flytekitplugins.deck"), "pip install flytekit flytekitplugins-deck-standard"),
    "kubeflow": ((), ""),  # no package: the KUBEFLOW_TRAINER_SERVER_URL variable a Kubeflow TrainJob sets
    "mlflow": (("mlflow",), "pip install mlflow"),
    "neptune": (("neptune",), "pip install neptune"),
    "swanlab": (("swanlab",), "pip install swanlab"),
    "tensorboard": (("tensorboard|tensorboardX",), install_extra("tensorboard")),
    "trackio": (("trackio",), install_extra("trackio")),
    "wandb": (("wandb",), install_extra("wandb")),
}
VLLM_INSTALL = install_extra("vllm")


def check_report_to(value: str | list[str]) -> list[str]:
    """`train.report_to` as the list of integrations it names ("none" and [] = none; "all" = whatever is
    installed, transformers' own meaning, so nothing to check). Unknown names are a ConfigError with the nearest
    valid one."""
    if value in ("none", "all"):
        return []
    names = [value] if isinstance(value, str) else list(value)
    valid = sorted(INTEGRATIONS)
    for name in names:
        if name in ("none", "all"):
            raise ConfigError(f"train.report_to: {name!r} stands alone, not in a list")
        if name not in INTEGRATIONS:
            near = difflib.get_close_matches(name, valid, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(f"train.report_to: unknown integration {name!r} ({hint}valid: 'none', 'all', "
                              f"{', '.join(repr(v) for v in valid)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"train.report_to: {names} names an integration twice")
    return names


def _importable(module: str) -> bool:
    """Whether `module` can be imported, without importing it (as transformers decides availability)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a module without a spec
        return False


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_integrations(cfg: RunConfig) -> None:
    """Before anything is written: each `train.report_to` integration's package imports, and `train.use_vllm` has
    vLLM and a CUDA GPU. Otherwise transformers/TRL fail at trainer construction, after the run directory exists,
    with a traceback. Raises a one-line ConfigError with the install command."""
    for name in check_report_to(cfg.train.report_to):
        modules, install = INTEGRATIONS[name]
        if name == "kubeflow" and not os.environ.get("KUBEFLOW_TRAINER_SERVER_URL"):
            raise ConfigError("train.report_to: 'kubeflow' needs the KUBEFLOW_TRAINER_SERVER_URL environment "
                              "variable, which a Kubeflow TrainJob sets")
        missing = [m for m in modules if not any(_importable(alt) for alt in m.split("|"))]
        if missing:
            package = " and ".join(m.replace("|", " or ") for m in missing)
            raise ConfigError(f"train.report_to: {name!r} needs the {package} package: {install}")
    if cfg.train.use_vllm:
        if not _cuda_available():
            raise ConfigError("train.use_vllm: true needs a CUDA GPU and none is visible; set train.use_vllm=false")
        if not _importable("vllm"):
            raise ConfigError(f"train.use_vllm: true needs the vllm package: {VLLM_INSTALL}")
