"""`pmd train | eval | memory | report`: thin wrappers that parse, load config, and call the library.

Expected problems (bad config, unknown model, malformed data, foreign memory DB) are `PMDError`s: printed as one
line `pmd: error: ...` with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config import RunConfig, load_config, save_config
from .errors import PMDError


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("config", nargs=None if required else "?", help="YAML run config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set train.steps=4")


def _load(args) -> RunConfig:
    overrides = list(args.overrides)
    if getattr(args, "algo", None):
        overrides.append(f"train.algo={args.algo}")
    if getattr(args, "run_dir", None):
        overrides.append(f"run_dir={args.run_dir}")
    return load_config(args.config, overrides)


def cmd_train(args) -> int:
    from .pipeline import run_training

    cfg = _load(args)
    summary = run_training(cfg, evaluate_models=not args.no_eval, resume=args.resume)
    if _is_main_process():
        print(json.dumps(summary, indent=2))
    return 0


def _is_main_process() -> bool:
    """Under torchrun / accelerate launch, only global rank 0 prints results and writes --out files."""
    return os.environ.get("RANK", "0") == "0"


def cmd_eval(args) -> int:
    from .pipeline import run_evaluation

    cfg = _load(args) if args.config else RunConfig()
    if args.model:
        cfg.model.name_or_path = args.model
    result = run_evaluation(cfg, memory_db=args.memory)
    if not _is_main_process():
        return 0
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def cmd_memory(args) -> int:
    from .memory.store import MemoryStore

    run = Path(args.run)
    db = run / "memory.sqlite" if run.is_dir() else run
    if not db.is_file():
        raise PMDError(f"{db}: no memory store here (expected RUN_DIR/memory.sqlite or a .sqlite file)")
    with MemoryStore.open_existing(db) as store:
        if args.action == "stats":
            print(json.dumps(store.counts(), indent=2))
        elif args.action == "export":
            out = args.out or "-"
            n = store.export_jsonl(sys.stdout if out == "-" else out)
            if out != "-":
                print(f"wrote {n} rows to {out}")
        else:
            _show(store, args)
    return 0


def _show(store, args) -> None:
    level = args.level
    if args.problem:
        print(f"# problem {args.problem}")
        for e in store.experiences(problem_uid=args.problem):
            print(f"[step {e.step} #{e.sample_index}] reward={e.reward:.2f} passed={e.passed}: "
                  f"{e.response.strip()[:160]!r}\n    feedback: {e.feedback}")
        for i in store.insights(problem_uid=args.problem):
            print(f"[{i.kind} x{i.support}, step {i.updated_step}] {i.text}")
        for r in store.retrievals(problem_uid=args.problem)[-args.limit:]:
            print(f"[teacher saw at step {r.step}, {r.n_tokens} tokens, {r.item_refs}]\n{r.text}")
        return
    if level in ("insights", "all"):
        print("# insights")
        for i in store.insights()[: args.limit]:
            print(f"[{i.kind} x{i.support}] {i.problem_uid}: {i.text}")
    if level in ("patterns", "all"):
        print("# patterns")
        for p in store.patterns(status=None)[: args.limit]:
            print(f"[{p.kind}, {p.status}, {p.support_problems} problems] {p.text}")
    if level in ("experiences", "all"):
        print("# experiences (latest)")
        for e in store.experiences()[-args.limit:]:
            print(f"[step {e.step}] {e.problem_uid} reward={e.reward:.2f}: {e.response.strip()[:120]!r}")
    if level == "retrievals":
        print("# retrievals (latest)")
        for r in store.retrievals()[-args.limit:]:
            print(f"[step {r.step}] {r.problem_uid} ({r.n_tokens} tokens): {r.text[:200]!r}")


def cmd_compare(args) -> int:
    from .compare import run_compare, write_comparison

    cfg = _load(args)
    path = write_comparison(cfg) if args.table_only else run_compare(cfg)
    print(path.read_text(encoding="utf-8"))
    return 0


def cmd_explain(args) -> int:
    from .explain import explain, format_explanations

    run = Path(args.run)
    if not (run / "memory.sqlite").is_file() or not (run / "config.yaml").is_file():
        raise PMDError(f"{run}: not a PMD run directory (expected config.yaml and memory.sqlite)")
    print(format_explanations(explain(run, args.model, args.limit, args.top)))
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    print(write_report(Path(args.run)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmd", description="Procedural Memory Distillation on top of TRL.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (grpo | sdpo | pmd), then evaluate base and trained models memory-free")
    _add_config_args(p)
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
    p.add_argument("--level", default="all", choices=["all", "experiences", "insights", "patterns", "retrievals"])
    p.add_argument("--problem", help="one problem's history: attempts, insights, what its teacher saw")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--out", help="export: JSONL path (default stdout)")
    p.set_defaults(func=cmd_memory)

    p = sub.add_parser("compare", help="GRPO vs SDPO vs PMD (+ ablations) over seeds: curves and a table")
    _add_config_args(p)
    p.add_argument("--table-only", action="store_true", help="only rebuild the table/curves from finished runs")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("explain", help="which rollout tokens the retrieved memory moved in the teacher")
    p.add_argument("run", help="a PMD run directory")
    p.add_argument("--model", help="weights to score with (default: RUN/final)")
    p.add_argument("--limit", type=int, default=3, help="teacher calls (distinct problems) to show")
    p.add_argument("--top", type=int, default=8, help="largest token shifts per call")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("report", help="(re)write RUN_DIR/report.md")
    p.add_argument("run")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.time()
    try:
        return args.func(args)
    except PMDError as exc:
        every_rank = getattr(exc, "every_rank", False)  # the main process's decision, raised on all ranks
        if _is_main_process() or not every_rank:
            print(f"pmd: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message
        if every_rank:
            import torch.distributed

            torch.distributed.barrier()  # leave together, once rank 0 has said why (launchers kill the rest early)
        return 2
    except KeyboardInterrupt:
        print(f"pmd: interrupted after {time.time() - start:.0f}s", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
