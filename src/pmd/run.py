"""One run's lifecycle, the same for `pmd train` and for every `pmd compare` sub-run:

    lock -> preflight -> prepare the run directory -> evaluate base -> train -> evaluate trained -> summary -> report

`Run.__call__` reads as that list; each stage is one method. What differs between callers is a `RunOptions`
(`pipeline.run_training` builds `pmd train`'s, `compare.run_one` a comparison's), never the order or the rules: the
run-directory rules are rundir.py's, the checks preflight.py's, training trainer.py's.

Under torchrun / accelerate launch every rank runs every stage: every rank checks the inputs (read-only), the main
process alone decides about and writes the run directory (`Ranks.on_main`), and evaluation is sharded over the
ranks and gathered. The main process holds the run directory's lock from its first write until the run ends or
fails, and a start that fails before its first optimizer step leaves the disk as it was (`Run.take_back`).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig
from .dist import Ranks
from .envs import EnvironmentSuite
from .eval_model import evaluate_model
from .preflight import first_prompt, preflight
from .atomic import atomic_write_text
from .rundir import FIRST_PROMPT_END, FIRST_PROMPT_FILE, METRICS_FILE, Resume, RunDirLock, Start, prepare_start

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How one run is driven; the defaults are `pmd train`'s."""

    evaluate_models: bool = True  # evaluate the base model before and the trained one after training, memory-free
    resume: Resume = "no"  # what to do with a directory that holds a run: refuse it, --resume it, or "auto"
    eval_every: int = 0  # evaluate the live policy every N steps (eval/ rows in metrics.jsonl, evals/); 0: never
    base_eval: dict | None = None  # the base model's evaluation, made once for several runs: step 0 of metrics.jsonl
    compare_record: bool = False  # summary.json also holds cpu_minutes, wall_minutes and final_eval (pmd compare)
    report: bool = True  # write report.md when the run ends


class Run:
    """One run of `cfg` into `cfg.run_dir`: call it (on every rank) to execute the lifecycle; it returns the summary.
    The stages fill in the attributes below in order, and each stage reads only what earlier stages set."""

    def __init__(self, cfg: RunConfig, options: RunOptions = RunOptions()):
        self.cfg = cfg
        self.options = options
        self.run_dir = Path(cfg.run_dir)
        self.lock = RunDirLock(self.run_dir)
        self.ranks = Ranks()  # preflight: this process's place among the run's ranks
        self.model_path = ""  # preflight: the resolved policy
        self.suite: EnvironmentSuite | None = None  # preflight: the environments and their problems
        self.start: Start | None = None  # prepare: where training starts
        self.summary: dict[str, Any] = {}  # what summary.json holds (the main process's also names the report)
        self.trained_eval: dict | None = None  # train: the trained policy's evaluation, when asked for
        self.eval_seconds = 0.0  # base and trained evaluations (periodic ones are part of training's time)
        self.stepped = False  # train: an optimizer step has completed (from then on a failure keeps the directory)

    def __call__(self) -> dict[str, Any]:
        """The lifecycle. The lock is taken in `prepare` (the directory may not exist before) and released here,
        however the run ends; only the main process writes the run directory."""
        try:
            self.preflight()
            self.prepare()
            try:
                self.evaluate_base()
                self.train()
            except BaseException:
                self.take_back()
                raise
            if self.ranks.is_main:
                self.evaluate_trained()
                self.write_summary()
                self.write_model_card()
                self.report()
            return self.summary
        finally:
            self.lock.release()

    def preflight(self) -> None:
        """Every rank: check every input before any work or write (preflight.py)."""
        self.ranks = Ranks.for_run(self.cfg.train.trl)
        self.model_path, self.suite = preflight(self.cfg, self.ranks.world)

    def prepare(self) -> None:
        """Main process: lock the run directory, decide where training starts, write the config (rundir.py); every
        rank gets the decision, or the same one-line error."""
        self.start = self.ranks.on_main(lambda: prepare_start(self.cfg, self.run_dir, self.options.resume,
                                                              self.options.evaluate_models, self.lock))
        self.summary = {"algo": self.cfg.train.algo, "model": self.cfg.model.name_or_path}
        if self.start.extension is not None:
            self.summary["extended"] = self.start.extension
        if self.ranks.is_main:
            self.show_first_prompt()

    def show_first_prompt(self) -> None:
        """Main process: print the first training prompt exactly as the student reads it (chat template applied) and
        keep it in RUN/first_prompt.txt, so what the model is asked is seen, never assumed."""
        text = first_prompt(self.cfg, self.model_path, self.suite)
        atomic_write_text(self.run_dir / FIRST_PROMPT_FILE, text)
        print(f"pmd: the first training prompt, as the student reads it ({self.run_dir / FIRST_PROMPT_FILE}):\n"
              f"{text}\n{FIRST_PROMPT_END}", file=sys.stderr, flush=True)

    def take_back(self) -> None:
        """Main process, when the run fails before its first optimizer step: a start from step 0 leaves the disk as it
        was (rundir.StartUndo), so the same command can simply be run again; a resumed run's directory is kept."""
        if self.ranks.is_main and not self.stepped and self.start is not None and self.start.undo is not None:
            self.start.undo.take_back(self.lock)

    def evaluate_base(self) -> None:
        """Evaluate the base model (eval_base.json), unless an earlier start did; or, with the evaluation given,
        make it step 0 of a run that starts from step 0 (metrics.jsonl holds that row and nothing older)."""
        if self.options.base_eval is not None:
            if self.ranks.is_main and self.start.resume_from is None:
                from .evaluate import eval_metrics

                row = {"step": 0, **eval_metrics(self.options.base_eval)}
                atomic_write_text(self.run_dir / METRICS_FILE, json.dumps(row) + "\n")
            return
        if not self.start.evaluate_base:
            return
        t0 = time.time()
        base = evaluate_model(self.cfg, self.suite, self.cfg.model.name_or_path, ranks=self.ranks)
        self.eval_seconds += time.time() - t0
        if self.ranks.is_main:
            from .evaluate import write_eval

            write_eval(self.run_dir / "eval_base.json", base)  # and eval_base.samples.jsonl

    def train(self) -> None:
        """Every rank: train (trainer.py), evaluating the live policy every `eval_every` steps and, with
        `evaluate_models`, the trained policy in place at the end."""
        from .trainer import train

        t0, cpu0 = time.time(), _cpu_seconds()
        result = train(self.cfg, self.run_dir, self.model_path, self.suite, resume_from=self.start.resume_from,
                       ranks=self.ranks, eval_every=self.options.eval_every,
                       evaluate_trained=self.options.evaluate_models, callbacks=[_first_step(self)])
        wall, cpu = time.time() - t0, _cpu_seconds() - cpu0
        self.trained_eval = result.pop("eval_trained", None)
        trained_seconds = result.pop("eval_trained_seconds", 0.0)
        self.eval_seconds += trained_seconds
        self.summary.update(result)
        self.summary["train_seconds"] = wall - trained_seconds
        if self.options.compare_record:
            self.summary["cpu_minutes"] = cpu / 60
            self.summary["wall_minutes"] = wall / 60

    def evaluate_trained(self) -> None:
        """Main process: record the trained policy's evaluation (eval_trained.json, named by its step, beside the
        base model's); a comparison's run records its last periodic evaluation (at the last step) instead."""
        if self.trained_eval is not None:
            from .evaluate import write_eval

            self.trained_eval["step"] = self.summary["steps"]  # the weights evaluated: the report names them by step
            write_eval(self.run_dir / "eval_trained.json", self.trained_eval)  # and eval_trained.samples.jsonl
            base = json.loads((self.run_dir / "eval_base.json").read_text())
            self.summary["base_greedy_accuracy"] = base["overall"]["greedy_accuracy"]
            self.summary["trained_greedy_accuracy"] = self.trained_eval["overall"]["greedy_accuracy"]
        if self.options.compare_record:
            from .report import read_metrics

            final = [r for r in read_metrics(self.run_dir) if "eval/greedy_accuracy" in r][-1]
            self.summary["final_eval"] = {k[5:]: v for k, v in final.items() if k.startswith("eval/")}

    def write_summary(self) -> None:
        """Main process: summary.json, last of the run's data (a comparison takes a run that has one as finished)."""
        self.summary["eval_seconds"] = self.eval_seconds
        atomic_write_text(self.run_dir / "summary.json", json.dumps(self.summary, indent=2))

    def write_model_card(self) -> None:
        """Main process: `final/README.md` (model_card.py) rewritten with this session's evaluation, or with why
        there is none (--no-eval). A comparison's run has its last periodic evaluation (at the last step)."""
        from .model_card import NOT_EVALUATED_NO_EVAL, write_model_cards

        base_file = self.run_dir / "eval_base.json"
        base = json.loads(base_file.read_text()) if base_file.is_file() else None
        trained = self.trained_eval
        if trained is None and "final_eval" in self.summary:
            base = base or self.options.base_eval
            trained = {"overall": self.summary["final_eval"]}
        write_model_cards(self.run_dir / "final", self.cfg, self.summary, base, trained, NOT_EVALUATED_NO_EVAL)

    def report(self) -> None:
        """Main process: report.md from the run directory alone (report.py); the summary names it."""
        if self.options.report:
            from .report import write_report

            self.summary["report"] = str(write_report(self.run_dir))


def _first_step(run: Run):
    """A callback that marks `run.stepped` when the first optimizer step ends (transformers imported only here)."""
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            run.stepped = True

    return FirstStep()


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (sandboxes, tokenizer workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
