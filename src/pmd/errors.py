"""Typed errors: each names the offending file/field/row and what was expected, so the CLI can print one line."""


class PMDError(Exception):
    """Base class for errors the CLI reports as a single line with exit code 2."""


class ConfigError(PMDError):
    """A config file, key or value is malformed."""


class ModelNotFoundError(PMDError):
    """A model name or path cannot be resolved."""


class DatasetError(PMDError):
    """A dataset file or row is malformed."""


class MemoryStoreError(PMDError):
    """A memory database is corrupt, foreign, or from an incompatible schema version."""


class CheckpointError(PMDError):
    """A checkpoint is incomplete or does not fit the run, or a run directory's state forbids the requested start."""


class RewardFunctionError(PMDError):
    """A user's reward function raised during training under `strict: true` (the run stopped at a checkpoint)."""
