"""How many of the policy's own reflection lines the reflection filter keeps, before and after the content check.

Reproduces docs/results/reflection-filter.md in two phases, so the (slow) generation runs once and the (pure)
filters can be re-scored at will:

1. `collect`: the quickstart's tasks (configs/quickstart.yaml; `--problems` training problems per family), the
   embedded SmolLM2-135M-Instruct as the policy at step 0. Each problem gets `--attempts` sampled attempts with the
   quickstart's rollout settings (temperature 0.7, 48 new tokens), judged by the environment; then the policy
   reflects on them exactly as `memory.reflector: policy` does in training (`ModelReflector.prompts`, greedy
   generation, `memory.reflection_max_tokens` new tokens). Every raw reflection text is written to a JSONL file.
2. `score`: parses every text with `parse_reflection` twice, without the content check (the filters before
   issue 12: length, copy, duplicate) and with it, and prints the acceptance rates, the rejection reasons and
   examples as markdown.

Usage (CPU, one SmolLM2 process on one thread: about 4 minutes for 48 problems on a quiet machine):
    PYTHONPATH=src .venv/bin/python benchmarks/reflection_filter.py collect --out /tmp/outcomes-run/reflections.jsonl
    PYTHONPATH=src .venv/bin/python benchmarks/reflection_filter.py score /tmp/outcomes-run/reflections.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def collect(args: argparse.Namespace) -> None:
    """Problems in chunks (families interleaved): a chunk's attempts, then its reflections, appended to `--out` as
    they finish, so an interrupted run still leaves complete rows (and a rerun continues after the last one)."""
    import torch

    from pmd.config import load_config
    from pmd.envs import EnvironmentSuite
    from pmd.evaluate import generate
    from pmd.memory.reflect import ModelReflector
    from pmd.memory.store import Experience
    from pmd.models import load_model_and_tokenizer
    from pmd.prompts import student_messages

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [f"env.train_size={args.problems}",
                                                              f"env.seed={args.env_seed}"])
    suite = EnvironmentSuite.from_config(cfg.env)
    by_family = [env.problems("train") for env in suite.environments.values()]
    problems = [p for group in zip(*by_family) for p in group]  # families interleaved
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["uid"] for line in out.read_text(encoding="utf-8").splitlines()} if out.exists() else set()
    problems = [p for p in problems if p.uid not in done]
    model, tokenizer = load_model_and_tokenizer(cfg.model.name_or_path, "float32", device="cpu")
    reflector = ModelReflector(lambda ps: generate(model, tokenizer, ps, cfg.memory.reflection_max_tokens, 1.0, True,
                                                   args.batch_size))
    t0 = time.time()
    for start in range(0, len(problems), args.chunk):
        chunk = problems[start:start + args.chunk]
        prompts = [student_messages(cfg.env.system_prompt, suite.format_prompt(p)) for p in chunk
                   for _ in range(args.attempts)]
        responses = generate(model, tokenizer, prompts, cfg.train.max_completion_length, cfg.train.temperature,
                             False, args.batch_size)
        attempts: dict[str, list[Experience]] = {}
        for k, response in enumerate(responses):
            problem = chunk[k // args.attempts]
            v = suite.verify(problem, response)
            attempts.setdefault(problem.uid, []).append(Experience(
                problem_uid=problem.uid, family=problem.family, prompt=suite.format_prompt(problem),
                response=response, reward=v.reward, passed=v.passed, feedback=v.feedback, step=0,
                sample_index=k % args.attempts, answer=v.extracted, failure_kind=v.failure_kind, id=k + 1))
        questions = {p.uid: p.question for p in chunk}
        uids = sorted(attempts)
        texts = reflector.generate(reflector.prompts(attempts, questions))
        with out.open("a", encoding="utf-8") as f:
            for uid, text in zip(uids, texts, strict=True):
                f.write(json.dumps({
                    "uid": uid, "question": questions[uid], "reflection": text,
                    "attempts": [{"response": e.response, "passed": e.passed, "feedback": e.feedback,
                                  "answer": e.answer, "failure_kind": e.failure_kind} for e in attempts[uid]],
                }) + "\n")
        print(f"{start + len(chunk)}/{len(problems)} problems reflected ({time.time() - t0:.0f} s)", file=sys.stderr,
              flush=True)


def score(args: argparse.Namespace) -> None:
    from pmd.memory.reflect import is_content_free, parse_reflection

    rows = [json.loads(line) for line in Path(args.path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[args.skip:]
    before, after = Counter(), Counter()
    accepted_examples: list[str] = []
    rejected_examples: list[tuple[str, str]] = []  # accepted by the old filters, rejected by the new ones
    for row in rows:
        responses = [a["response"] for a in row["attempts"]]
        answers = [a["answer"] for a in row["attempts"] if a["passed"] and a["answer"]]
        old, old_reasons = parse_reflection(row["reflection"], row["question"], responses, answers,
                                            check_content=False)
        new, new_reasons = parse_reflection(row["reflection"], row["question"], responses, answers)
        for counter, acc, reasons in ((before, old, old_reasons), (after, new, new_reasons)):
            lines = len(acc) + sum(v for k, v in reasons.items() if k != "no_lines")
            counter["lines"] += lines
            counter["loop_proposed"] += lines or 1  # as MemoryLoop counts: a text with no line is one proposal
            counter["accepted"] += len(acc)
            counter.update(reasons)
        accepted_examples += [f"{kind.capitalize()}: {body}" for kind, body in new]
        for kind, body in old:
            if (kind, body) not in new:
                reason = is_content_free(body, row["question"]) or "states_answer"
                rejected_examples.append((f"{kind.capitalize()}: {body}", reason))
    print(f"{len(rows)} reflections (one per problem); {before['no_lines']} wrote no parseable line.\n")
    print("| filters | lines proposed | accepted | accepted / lines | accepted / proposals (as the run logs it) |")
    print("|---|---:|---:|---:|---:|")
    for name, c in (("before: length, copy, duplicate", before), ("after: + content check, answer check", after)):
        per_line = c["accepted"] / c["lines"] if c["lines"] else 0.0
        per_proposal = c["accepted"] / c["loop_proposed"] if c["loop_proposed"] else 0.0
        print(f"| {name} | {c['lines']} | {c['accepted']} | {per_line:.0%} | {per_proposal:.0%} |")
    for name, c in (("before", before), ("after", after)):
        reasons = {k: v for k, v in sorted(c.items()) if k not in ("lines", "loop_proposed", "accepted", "no_lines")}
        print(f"\nRejected lines {name}: {reasons}")
    rng = random.Random(args.seed)
    print(f"\nAccepted after ({len(accepted_examples)}; {min(args.examples, len(accepted_examples))} drawn with seed "
          f"{args.seed}):")
    for line in rng.sample(accepted_examples, min(args.examples, len(accepted_examples))):
        print(f"- {line}")
    print(f"\nAccepted before, rejected after ({len(rejected_examples)}; {min(args.examples, len(rejected_examples))} "
          f"drawn):")
    for line, reason in rng.sample(rejected_examples, min(args.examples, len(rejected_examples))):
        print(f"- `{reason}`: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="generate attempts and policy reflections into a JSONL file")
    c.add_argument("--out", default="/tmp/outcomes-run/reflections.jsonl")
    c.add_argument("--problems", type=int, default=32, help="training problems per task family (2 families)")
    c.add_argument("--attempts", type=int, default=4, help="sampled attempts per problem (num_generations)")
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--chunk", type=int, default=8, help="problems per chunk (attempts, then reflections, then saved)")
    c.add_argument("--threads", type=int, default=1, help="torch threads (more threads crawl on a shared CPU)")
    c.add_argument("--seed", type=int, default=0, help="sampling seed")
    c.add_argument("--env-seed", type=int, default=0, help="env.seed: which problems (another seed, other problems)")
    s = sub.add_parser("score", help="acceptance before/after the content check, with examples (markdown)")
    s.add_argument("path")
    s.add_argument("--examples", type=int, default=10)
    s.add_argument("--skip", type=int, default=0, help="score from this row on (e.g. past rows used to design rules)")
    s.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    collect(args) if args.cmd == "collect" else score(args)


if __name__ == "__main__":
    main()
