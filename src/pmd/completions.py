"""The completions table for SDPO and PMD, as TRL's `log_completions` gives GRPO, plus what a self-teacher adds.

TRL's GRPOTrainer honours `train.trl.log_completions: true` itself (a rich table in the console, a
`completions` table for wandb / trackio, parquet files under `RUN/checkpoints/completions/`). TRL's SDPOConfig has
no such field, so for `train.algo: sdpo | pmd` pmd accepts the same two keys (`log_completions`,
`num_completions_to_print`) and keeps them from TRL, and the step (`step.PMDStep`) writes the table: every
rollout of the step with its prompt, completion, reward (and each term of a dataset task's reward), whether it
passed, the verifier's feedback, whether the teacher was active for it, and the teacher's context (the prompt the
teacher scored the completion under: TRL's reprompt, with memory for PMD). One file per step,
`RUN/completions/step-NNNNN.jsonl` (the step numbered as in metrics.jsonl), replaced whole, so a resumed run that
redoes a step leaves one file for it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

# GRPOConfig's fields that pmd implements itself for SDPO and PMD (TRL's SDPOConfig has none of them).
COMPLETIONS_KEYS = ("log_completions", "num_completions_to_print")
COMPLETIONS_DIR = "completions"


def check_completions_keys(overrides: Mapping[str, Any]) -> None:
    """Their types, as GRPOConfig would check them (for sdpo/pmd, which never hand them to TRL)."""
    value = overrides.get("log_completions", False)
    if not isinstance(value, bool):
        raise ConfigError(f"train.trl.log_completions: expected true or false, got {value!r}")
    n = overrides.get("num_completions_to_print")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ConfigError(f"train.trl.num_completions_to_print: expected a whole number >= 1 or null, got {n!r}")


def teacher_prompts(batch: Mapping[str, Any], completion_len: int, tokenizer) -> list[str]:
    """Each row's teacher prompt as text: the teacher's input minus the completion, padding dropped."""
    ids, mask = batch["teacher_input_ids"], batch["teacher_attention_mask"]
    width = ids.shape[1] - completion_len
    return [tokenizer.decode(row[:width][m[:width].bool()].tolist(), skip_special_tokens=False)
            for row, m in zip(ids, mask)]


def completion_rows(step: int, prompts: list[Any], judged: list, active: list[bool], teacher: list[str],
                    memory: list[str] | None = None) -> list[dict[str, Any]]:
    """This rank's rollouts of `step` (1-based, as in metrics.jsonl) as table rows. `teacher` is each rollout's
    teacher prompt; shown only where the teacher was active (elsewhere it is the student's prompt, and the row
    is not distilled). `memory`: PMD's retrieved memory per rollout."""
    rows = []
    for i, (prompt, j) in enumerate(zip(prompts, judged, strict=True)):
        terms = j.verdict.details.get("terms")
        row = {"step": step, "problem_id": j.problem.uid, "prompt": prompt, "completion": j.response,
               "reward": j.verdict.reward, "reward_terms": dict(terms) if isinstance(terms, dict) else {},
               "passed": j.verdict.passed, "feedback": j.verdict.feedback, "teacher_active": bool(active[i]),
               "teacher_context": teacher[i] if active[i] else None}
        if memory is not None:
            row["memory"] = memory[i]
        rows.append(row)
    return rows


class CompletionsLog:
    """Writes, prints and hands to trackers one step's table (main process)."""

    def __init__(self, run_dir: Path, num_to_print: int | None, report_to: list[str] | str | None):
        self.out_dir = Path(run_dir) / COMPLETIONS_DIR
        self.num_to_print = num_to_print
        self.report_to = [report_to] if isinstance(report_to, str) else list(report_to or [])

    def path(self, step: int) -> Path:
        return self.out_dir / f"step-{step:05d}.jsonl"

    def write(self, step: int, rows: list[dict[str, Any]]) -> Path:
        """The step's file (atomically), the console table, and the trackers' `completions` table."""
        from .atomic import atomic_write

        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.path(step)
        atomic_write(path, lambda fh: fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self._print(step, rows)
        self._to_trackers(rows)
        return path

    def _print(self, step: int, rows: list[dict[str, Any]]) -> None:
        """TRL's own console table (rich), with the teacher's columns as its extra columns."""
        try:
            from trl.trainer.utils import print_prompt_completions_sample
        except ImportError:
            return
        import importlib.util

        if importlib.util.find_spec("rich") is None:
            return
        shown = rows
        if self.num_to_print is not None and len(rows) > self.num_to_print:
            shown = random.Random(step).sample(rows, self.num_to_print)  # the same sample on every rerun
        print_prompt_completions_sample(
            [r["prompt"] for r in shown], [r["completion"] for r in shown],
            {"reward": [r["reward"] for r in shown]}, None, step, None,
            extra={"teacher_active": [r["teacher_active"] for r in shown],
                   "teacher_context": [r["teacher_context"] or "" for r in shown]})

    def _to_trackers(self, rows: list[dict[str, Any]]) -> None:
        """A `completions` table for wandb and trackio, as TRL logs GRPO's (other trackers have no tables)."""
        backends = []
        if "wandb" in self.report_to or "all" in self.report_to:
            try:
                import wandb

                if wandb.run is not None:
                    backends.append(wandb)
            except ImportError:
                pass
        if "trackio" in self.report_to or "all" in self.report_to:
            try:
                import trackio

                backends.append(trackio)
            except ImportError:
                pass
        if not backends:
            return
        import pandas as pd

        df = pd.DataFrame([{k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v)
                            for k, v in r.items()} for r in rows])
        for backend in backends:
            backend.log({"completions": backend.Table(dataframe=df)})
