"""Bad inputs tried, clean and rightly accepted: the README's reliability figure, repeatable in about a minute.

Runs, in-process and each in a fresh temporary directory, every bad-input case the test suite holds:

* tests/test_bad_input.py: `CASES` (`pmd train` on a bad config, model, dataset or memory seed), each as a fresh run
  and as `--resume` of an existing run; `SUBCOMMAND_CASES` (eval, compare, explain, report, memory); and
  `ACCEPTED_CASES`, inputs at the edges of what is allowed, which must pass preflight;
* tests/test_cli_errors.py's `_cases` (a missing, empty or wrong path given to each command), if present.

A bad input is clean when the command returns exit code 2, prints exactly one line `pmd: error: ...` naming what
the case expects (the field, file or row), raises nothing, and no file under the directory is created, changed or
removed. An accepted input is right when `load_config` and `preflight.preflight` pass and write nothing. Cases the
test suite marks xfail run too and count as they come out: the figure is what a user gets today.

Other suites add their figures: a module under tests/ with a function `reliability_figures()` that returns one
line of text has it printed after this one. Today: tests/hostile_probes.py (sandbox escape and cheat attempts) and
tests/reliability_cases_rundir.py (kills and recoveries, second writers such as `pmd report` on a live run,
read-only commands, run-dir and memory-file bad inputs such as a seed store with a trigger; it runs those tests with
pytest, about a minute).

Usage: PYTHONPATH=src .venv/bin/python benchmarks/reliability.py [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from conftest import snapshot  # noqa: E402 (tests/ is on the path only from the line above)


@contextlib.contextmanager
def inside(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def unwrap(case: Any) -> Callable:
    """A case function, also from a `pytest.param(case, marks=...)`."""
    return case.values[0] if hasattr(case, "values") else case


def name_of(case: Any) -> str:
    return unwrap(case).__name__


def judge_cli(argv: list[str], expect: list[str], root: Path, before: dict) -> str | None:
    """None if `pmd ARGV` failed cleanly; else what went wrong, in a few words."""
    from pmd.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except BaseException as exc:  # noqa: BLE001 - a traceback is what is being counted
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return f"traceback: {last[:160]}"
    lines = err.getvalue().strip().splitlines()
    if code != 2:
        return f"exit code {code} ({len(lines)} lines on stderr)"
    if len(lines) != 1 or not lines[0].startswith("pmd: error: "):
        return f"{len(lines)} lines on stderr: {lines[:2]}"
    missing = [w for w in expect if w not in lines[0]]
    if missing:
        return f"the line does not name {missing[0]!r}: {lines[0][:160]}"
    if snapshot(root) != before:
        return "files were created, changed or removed"
    return None


def train_cases(model: Path) -> list[tuple[str, Callable[[Path], tuple[list[str], list[str]]]]]:
    """(name, prepare(tmp) -> (argv, expect)) for test_bad_input.CASES, fresh and resumed."""
    import test_bad_input as t

    def prepare(case, resume):
        def run(tmp: Path):
            run_dir = tmp / "run"
            cfg = t.base_config(model, run_dir)
            if resume:
                t.existing_run(run_dir)
            extra, expect = unwrap(case)(tmp, cfg)
            if not (tmp / "cfg.yaml").exists():
                t.write_yaml(tmp / "cfg.yaml", cfg)
            return ["train", "cfg.yaml", "--no-eval", *extra, *(["--resume"] if resume else [])], expect
        return run

    return [(f"train {name_of(c)}{' --resume' if resume else ''}", prepare(c, resume))
            for c in t.CASES for resume in (False, True)]


def subcommand_cases(model: Path) -> list[tuple[str, Callable]]:
    import test_bad_input as t

    return [(name_of(c), lambda tmp, c=c: unwrap(c)(tmp, model)) for c in t.SUBCOMMAND_CASES]


def path_cases() -> list[tuple[str, Callable]]:
    """test_cli_errors._cases: every command given a missing, empty or wrong path."""
    try:
        import test_cli_errors as t
    except ImportError:
        return []
    if not hasattr(t, "_cases"):
        return []
    from pmd.config import RunConfig, save_config
    from pmd.memory.store import MemoryStore

    def make_run(tmp: Path) -> Path:
        run = tmp / "therun"
        run.mkdir()
        save_config(RunConfig(), run / "config.yaml")
        with MemoryStore(run / "memory.sqlite") as store:
            store.meta_set("last_reflected_step", 0)
        return run

    with tempfile.TemporaryDirectory() as probe:
        count = len(t._cases(Path(probe), make_run(Path(probe))))

    def prepare(i: int):
        def run(tmp: Path):
            return t._cases(tmp, make_run(tmp))[i]
        return run

    return [(f"path case {i}", prepare(i)) for i in range(count)]


def accepted_cases(model: Path) -> list[tuple[str, Callable[[Path], None]]]:
    import test_bad_input as t
    from pmd.config import load_config
    from pmd.preflight import preflight

    def prepare(case):
        def run(tmp: Path) -> None:
            cfg = t.base_config(model, tmp / "run")
            unwrap(case)(tmp, cfg)
            if not (tmp / "cfg.yaml").exists():
                t.write_yaml(tmp / "cfg.yaml", cfg)
            before = snapshot(tmp)
            preflight(load_config("cfg.yaml"))
            if snapshot(tmp) != before:
                raise AssertionError("preflight wrote files")
        return run

    return [(f"accept {name_of(c)}", prepare(c)) for c in t.ACCEPTED_CASES]


def other_figures() -> list[str]:
    lines = []
    for path in sorted(TESTS.glob("*.py")):
        if path.stem in ("test_bad_input", "test_cli_errors", "conftest"):
            continue
        if "def reliability_figures(" not in path.read_text(encoding="utf-8"):
            continue
        lines.append(str(importlib.import_module(path.stem).reliability_figures()))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="one line per case, not only per failure")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"  # the HF-id cases: no network, and no waiting for one
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.disable(logging.WARNING)  # libraries' warnings go to stderr through handlers set up before redirecting
    from conftest import _build_tiny_model

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pmd-reliability-") as work:
        model = _build_tiny_model(Path(work) / "tiny-model")
        bad = train_cases(model) + subcommand_cases(model) + path_cases()
        good = accepted_cases(model)
        clean = accepted = 0
        failures: list[str] = []
        for i, (name, prepare) in enumerate(bad):
            tmp = Path(work) / f"bad-{i}"
            tmp.mkdir()
            with inside(tmp):
                try:
                    argv, expect = prepare(tmp)
                    problem = judge_cli(argv, expect, tmp, snapshot(tmp))
                except Exception as exc:  # noqa: BLE001 - a case that cannot even be set up is a failure too
                    problem = f"case setup failed: {exc!r}"[:200]
            clean += problem is None
            if problem:
                failures.append(f"FAIL {name}: {problem}")
            if args.verbose or problem:
                print(failures[-1] if problem else f"ok   {name}", flush=True)
        for i, (name, run) in enumerate(good):
            tmp = Path(work) / f"good-{i}"
            tmp.mkdir()
            with inside(tmp):
                try:
                    run(tmp)
                    problem = None
                except Exception as exc:  # noqa: BLE001
                    problem = f"refused: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}"
            accepted += problem is None
            if problem:
                failures.append(f"FAIL {name}: {problem}")
            if args.verbose or problem:
                print(failures[-1] if problem else f"ok   {name}", flush=True)
    tried = len(bad) + len(good)
    print(f"bad inputs: {tried} tried, {clean} clean (one line, exit 2, nothing written), {accepted} rightly accepted"
          f"; {len(failures)} failed ({time.monotonic() - start:.0f} s)")
    for line in other_figures():
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
