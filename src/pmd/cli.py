"""`pmd train | eval | memory | compare | probe | explain | report | config`: thin wrappers: parse, load config, call
the library.

Expected problems (bad config, unknown model, malformed data, foreign memory DB, a missing run directory or file,
a bad command line) are printed as one line `pmd: error: ...` with exit code 2, never a traceback; paths are checked
before anything is written.

A closed stdout (`pmd memory export RUN | head`) stops the command quietly: no traceback, no message, exit code 32
(EPIPE), as Python's own `python -m json.tool` and `cProfile` do. Shells that follow `set -o pipefail` see a failure,
as they would for `yes | head` (141 there, from SIGPIPE); pmd keeps SIGPIPE ignored so that a broken pipe to a
sandboxed subprocess during training is an error, not a silent death.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import json
import os
import sys
import time
import typing
from collections.abc import Iterator
from pathlib import Path

from .config import RunConfig, load_config, save_config
from .errors import PMDError
from .outpaths import check_out_path, eval_refusal, export_refusal, write_output  # noqa: F401 (re-exported)


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("config", nargs=None if required else "?", help="YAML run config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable; YAML values), e.g. --set train.learning_rate=1e-4; "
                        "list items by index: --set env.tasks[0].params.max_terms=3")


class _StdoutClosed(Exception):
    """The reader of our stdout went away (`| head`)."""


@contextlib.contextmanager
def _stdout() -> Iterator[None]:
    """Around code whose only pipe is stdout: a BrokenPipeError there means the reader closed it. (Not around
    training, where a broken pipe to a sandboxed subprocess is a real error.)"""
    try:
        yield
    except BrokenPipeError:
        raise _StdoutClosed() from None


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's final flush of what is still buffered cannot fail again
    ("Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (in-process callers, captured output)
        pass


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _load(args) -> RunConfig:
    overrides, origins = list(args.overrides), [None] * len(args.overrides)
    if getattr(args, "algo", None):
        overrides.append(f"train.algo={args.algo}")
        origins.append(f"--algo {args.algo}")
    if getattr(args, "run_dir", None):
        overrides.append(f"run_dir={args.run_dir}")
        origins.append(f"--run-dir {args.run_dir}")
    return load_config(args.config, overrides, origins)


def _memory_db(run: str, flag: str = "") -> Path:
    """RUN_DIR/memory.sqlite or a .sqlite file, which must exist."""
    path = Path(run)
    db = path / "memory.sqlite" if path.is_dir() else path
    if not db.is_file():
        what = f"{flag} {run}: " if flag else f"{db}: "
        raise PMDError(f"{what}no memory store here (expected RUN_DIR/memory.sqlite or a .sqlite file)")
    return db


def cmd_train(args) -> int:
    from .pipeline import run_training

    cfg = _load(args)
    summary = run_training(cfg, evaluate_models=not args.no_eval, resume=args.resume)
    if _is_main_process():
        with _stdout():
            print(json.dumps(summary, indent=2), flush=True)
    return 0


def _is_main_process() -> bool:
    """Under torchrun / accelerate launch, only global rank 0 prints results and writes --out files."""
    return os.environ.get("RANK", "0") == "0"


def cmd_eval(args) -> int:
    from .pipeline import run_evaluation

    cfg = _load(args)  # with no config file: the defaults, --set still applies
    if args.model:
        cfg.model.name_or_path = args.model
    memory_db = None
    if args.memory:  # checked before a model loads (minutes), not after
        if not cfg.eval.memory_at_inference:
            raise PMDError(f"--memory {args.memory}: memory is only read with eval.memory_at_inference: true "
                           "(add --set eval.memory_at_inference=true); the default evaluation is memory-free")
        from .memory.store import MemoryStore

        memory_db = str(_memory_db(args.memory, "--memory"))
        MemoryStore.check(memory_db)
    elif cfg.eval.memory_at_inference:
        raise PMDError("eval.memory_at_inference needs --memory PATH (a run directory or its memory.sqlite)")
    if args.out:  # on every rank: one rank leaving alone would leave the others waiting for it
        _check_eval_out(args, memory_db)
    result = run_evaluation(cfg, memory_db=memory_db)
    if not _is_main_process():
        return 0
    from .evaluate import samples_path, split_samples, write_sample_rows
    from .outpaths import writes_samples_beside

    result, rows = split_samples(result)  # the per-sample rows go beside --out (OUT.samples.jsonl), not to stdout
    text = json.dumps(result, indent=2)
    if args.out:
        _check_eval_out(args, memory_db)  # again: the evaluation took minutes, and the path may have changed
        try:
            if rows is not None and writes_samples_beside(Path(args.out)):
                write_output(samples_path(Path(args.out)), lambda fh: write_sample_rows(fh, rows))
            write_output(Path(args.out), lambda fh: fh.write(text + "\n"))
        except OSError as exc:
            raise PMDError(f"--out {args.out}: cannot write ({exc.strerror or exc}); nothing written") from None
    with _stdout():
        print(text, flush=True)
    return 0


def _check_eval_out(args, memory_db: str | None) -> None:
    """`pmd eval --out`: a path it can create, outside a run directory being trained, and no file it would destroy."""
    check_out_path(args.out)
    refusal = eval_refusal(Path(args.out), Path(args.config) if args.config else None,
                           Path(memory_db) if memory_db else None)
    if refusal:
        raise PMDError(f"--out {args.out}: {refusal}")


def cmd_memory(args) -> int:
    from .memory import inspection
    from .memory.store import MemoryStore

    unused = {"stats": ["--limit", "--out", "--level", "--problem"], "export": ["--level", "--problem"],
              "show": ["--out"]}[args.action]
    given = [flag for flag in unused if getattr(args, flag[2:]) is not None]
    if given:
        raise PMDError(f"{given[0]} does not apply to `pmd memory {args.action}`")
    db = _memory_db(args.run)
    out = args.out or "-"
    if out != "-":
        check_out_path(out)
        refusal = export_refusal(Path(out), db)
        if refusal:
            raise PMDError(f"--out {out}: {refusal}")
    with MemoryStore.open_existing(db, read_only=True) as store, _stdout():  # inspection never writes the store
        if args.action == "stats":
            print(json.dumps(inspection.stats(store), indent=2))
        elif args.action == "export":
            if out == "-":
                store.export_jsonl(sys.stdout, args.limit)
            else:
                try:
                    n = write_output(Path(out), lambda fh: store.export_jsonl(fh, args.limit))
                except OSError as exc:
                    raise PMDError(f"--out {out}: cannot write ({exc.strerror or exc}); nothing written") from None
                print(f"wrote {n} rows to {out}")
        else:
            facts = inspection.problem_facts(db.parent / "config.yaml", args.problem) if args.problem else None
            for line in inspection.show(store, args.problem, args.level or "all", args.limit or 20, facts):
                print(line)
        sys.stdout.flush()  # inside the guard: a reader that left after the last line is still a closed stdout
    return 0


def cmd_config(args) -> int:
    from .config_help import describe, dump

    if args.dump is None:
        if args.overrides:
            raise PMDError("--set applies to `pmd config --dump [CONFIG]` (the resolved config), not to the listing")
        text = "\n".join(describe(args.section))
    else:
        text = dump(args.dump or None, args.overrides, args.section).rstrip("\n")
    with _stdout():
        print(text, flush=True)
    return 0


def cmd_compare(args) -> int:
    from .compare import run_compare, write_comparison

    cfg = _load(args)
    out = Path(cfg.compare.out_dir)
    if out.exists() and not out.is_dir():
        raise PMDError(f"compare.out_dir {out}: exists and is not a directory")
    path = write_comparison(cfg) if args.table_only else run_compare(cfg)
    with _stdout():
        print(path.read_text(encoding="utf-8"), flush=True)
    return 0


def cmd_probe(args) -> int:
    from .probe import markdown_table, out_refusal, run_probe

    cfg = _load(args)
    if args.memory and args.no_memory:
        raise PMDError("--memory and --no-memory: give one (a run's store to probe, or no memory contexts)")
    memory_db = None
    if args.memory:  # checked before a model loads
        from .memory.store import MemoryStore

        memory_db = _memory_db(args.memory, "--memory")
        MemoryStore.check(str(memory_db))
    if args.out:
        check_out_path(args.out)
        if refusal := out_refusal(Path(args.out), Path(args.config), memory_db):
            raise PMDError(f"--out {args.out}: {refusal}")
    result = run_probe(cfg, memory_db, args.problems, use_memory=not args.no_memory)
    if args.out:
        text = json.dumps(result, indent=1)
        try:
            write_output(Path(args.out), lambda fh: fh.write(text + "\n"))
        except OSError as exc:
            raise PMDError(f"--out {args.out}: cannot write ({exc.strerror or exc}); nothing written") from None
    with _stdout():
        print(markdown_table(result), flush=True)
    return 0


def cmd_explain(args) -> int:
    from .explain import check_run, explain, format_explanations, why_nothing

    run = Path(args.run)
    check_run(run, args.model)
    items = explain(run, args.model, args.limit, args.top)
    text = format_explanations(items) if items else why_nothing(run)
    with _stdout():
        print(text, flush=True)
    return 0


RUN_MARKERS = ("config.yaml", "metrics.jsonl", "summary.json")  # what every run directory has from its start


def cmd_report(args) -> int:
    from .report import write_report

    run = Path(args.run)
    if not run.exists():
        raise PMDError(f"{run}: no such run directory")
    if not run.is_dir() or not any((run / name).is_file() for name in RUN_MARKERS):
        raise PMDError(f"{run}: not a PMD run directory (expected {', '.join(RUN_MARKERS[:-1])} or {RUN_MARKERS[-1]})")
    from .rundir import RunDirLock

    # the report's files are the run's: a live `pmd train` (which writes its own report when it ends) holds the run
    # directory's lock, and `pmd report` takes it too, so neither rewrites them under the other
    with RunDirLock(run).acquire(then=f"pmd report {run} (a run that ends writes its own report)"):
        try:  # checks summary.json, eval_*.json, the memory store and every target before it writes anything
            path = write_report(run)
        except OSError as exc:
            raise PMDError(f"{exc.filename or run}: cannot write the report ({exc.strerror})") from None
    with _stdout():
        print(path, flush=True)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the house error format: one line `pmd: error: ...`, exit code 2 (subcommands inherit it)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"pmd: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pmd", description="Procedural Memory Distillation on top of TRL.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (grpo | sdpo | pmd), then evaluate base and trained models memory-free")
    _add_config_args(p, required=False)  # with no file: the defaults (`pmd config --dump` shows them), --set applies
    p.add_argument("--algo", choices=["grpo", "sdpo", "pmd"], help="overrides train.algo")
    p.add_argument("--run-dir", help="overrides run_dir")
    p.add_argument("--no-eval", action="store_true", help="skip the before/after evaluation")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="memory-free held-out evaluation of a model (JSON)")
    _add_config_args(p, required=False)
    p.add_argument("--model", help="model name, HF id or path (overrides model.name_or_path)")
    p.add_argument("--memory", help="memory DB for eval.memory_at_inference (comparison only)")
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("memory", help="inspect a run's memory")
    p.add_argument("action", choices=["show", "stats", "export"])
    p.add_argument("run", help="run directory or memory .sqlite file")
    p.add_argument("--level", choices=["all", "experiences", "insights", "patterns", "retrievals"],
                   help="show: which level (default all)")
    p.add_argument("--problem", help="show: one problem's history: attempts, insights, what its teacher saw")
    p.add_argument("--limit", type=_positive_int,
                   help="show: entries per listing (default 20); export: rows per level (default all)")
    p.add_argument("--out", help="export: JSONL path (default stdout)")
    p.set_defaults(func=cmd_memory)

    p = sub.add_parser("compare", help="GRPO vs SDPO vs PMD (+ ablations) over seeds: curves and a table")
    _add_config_args(p)
    p.add_argument("--table-only", action="store_true", help="only rebuild the table/curves from finished runs")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("probe", help="is there anything to distil? the base model as student and as teacher under "
                                     "each context (memory levels, placebo, demos), on held-out problems")
    _add_config_args(p)
    p.add_argument("--memory", help="a finished run's directory or memory.sqlite to retrieve from (default: build one "
                                    "from the base model's rollouts on the training split)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory contexts")
    p.add_argument("--problems", type=_positive_int, help="held-out problems to probe, families in turn (default all)")
    p.add_argument("--out", help="also write the JSON (per context, per family, per problem) here")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("explain", help="which rollout tokens the retrieved memory moved in the teacher")
    p.add_argument("run", help="a PMD run directory")
    p.add_argument("--model", help="weights to score with (default: RUN/final)")
    p.add_argument("--limit", type=_positive_int, default=3, help="teacher calls (distinct problems) to show")
    p.add_argument("--top", type=_positive_int, default=8, help="largest token shifts per call")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("config", help="list config fields (default, allowed values, help), or --dump a resolved "
                                      "config")
    p.add_argument("section", nargs="?", help="train, memory, memory.consolidation, eval, env, dataset, ... or one "
                                              "field (train.learning_rate); default: every section")
    p.add_argument("--dump", nargs="?", const="", metavar="CONFIG",
                   help="print the resolved config as a run would use it (defaults < CONFIG < --set), as YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="with --dump: override a config value (repeatable)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("report", help="(re)write RUN_DIR/report.md")
    p.add_argument("run", help="a run directory")
    p.set_defaults(func=cmd_report)
    return parser


def _leave_process_group(together: bool) -> None:
    """Under torchrun: wait for the other ranks (when all reach this point) and close the process group.

    A rank whose gloo worker threads outlive the interpreter can abort in its teardown ("terminate called without
    an active exception", SIGABRT: a worker releasing a tensor that Python owns needs the GIL, and a thread that
    takes it during finalization is ended mid-destructor), turning a finished run into a failed job. Closing the
    group is not enough on its own: the trainer's reference cycles keep DDP alive, and DDP's reducer keeps the
    group, so its threads would be joined only when those cycles are collected at exit. Collecting first makes
    `destroy_process_group` join them here (tests/test_multiprocess.py checks no DDP module is left)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    if together:
        dist.barrier()
        gc.collect()  # only on a clean, synchronised exit: a rank that failed alone may hold work in flight
    dist.destroy_process_group()


# Errors that are the disk's fault, not pmd's: full, over quota, read-only, not permitted, file too large.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG}
_DISK_MESSAGES = ("No space left on device", "os error 28", "database or disk is full", "readonly database",
                  "Read-only file system")


def disk_error(exc: BaseException) -> str | None:
    """One line for an exception caused by the disk (full, read-only, no permission), wherever it sits in the
    exception's chain (torch, safetensors and SQLite wrap the OSError or only quote it); None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_ERRNOS:
            where = f"{current.filename}: " if current.filename else ""
            return f"{where}{current.strerror or os.strerror(current.errno)}"
        text = " ".join(str(current).split())
        if any(m in text for m in _DISK_MESSAGES):
            return text if len(text) <= 200 else text[:200] + "..."
        current = current.__cause__ or current.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # a TRL-style flag (`--learning_rate 1e-6`) gets the --set it means; anything else, argparse's line
            from .cli_flags import foreign_flag_hint

            hint = foreign_flag_hint(extra, sys.argv[1:] if argv is None else argv, args.command)
            if hint is None:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            parser.exit(2, f"pmd: error: {hint}\n")
    except SystemExit as exc:  # --help (0) or a bad command line (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    start = time.time()
    try:
        code = args.func(args)
        _leave_process_group(together=True)
        return code
    except PMDError as exc:
        every_rank = getattr(exc, "every_rank", False)  # the main process's decision, raised on all ranks
        if _is_main_process() or not every_rank:
            print(f"pmd: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message
        # leave together, once rank 0 has said why (launchers kill the other ranks as soon as one exits)
        _leave_process_group(together=every_rank)
        return 2
    except _StdoutClosed:
        _silence_stdout()
        return errno.EPIPE
    except KeyboardInterrupt:
        print(f"pmd: interrupted after {time.time() - start:.0f}s", file=sys.stderr)
        return 130
    except Exception as exc:  # a full or read-only disk is the user's to fix: one line, not a traceback
        from .dist import collective_failure

        stuck = collective_failure(exc)  # ranks out of step: one line per rank, naming where it was
        if stuck is not None:
            print(f"pmd: error: {stuck}", file=sys.stderr)
            return 1
        line = disk_error(exc)
        if line is None:
            raise
        hint = "; free space or fix permissions" + (", then pmd train --resume" if args.command == "train" else "")
        print(f"pmd: error: {line}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
