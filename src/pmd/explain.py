"""`pmd explain RUN_DIR`: which tokens of a rollout the retrieved memory moved, and by how much.

For logged teacher calls, re-score the rollout that call distilled under two teacher prompts that differ only in
the memory block (problem + memory vs problem alone, same template) and report the per-token log-prob change.
Positive = memory made the teacher prefer that token. The weights are the ones given (by default the run's
final model), not the exact policy at that step, so this is an after-the-fact inspection tool, not a replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import load_config
from .envs import EnvironmentSuite
from .errors import PMDError
from .memory.inspection import shown_step
from .memory.store import MemoryStore
from .models import load_model_and_tokenizer
from .precision import run_precision
from .prompts import REPROMPT_TEMPLATE, student_messages, teacher_text


@dataclass
class TokenShift:
    token: str
    delta: float  # log p(token | problem + memory) - log p(token | problem), in nats


@dataclass
class Explanation:
    problem_uid: str
    step: int
    memory: str
    response: str
    reward: float
    total_delta: float
    top: list[TokenShift]


def completion_logprobs(model, tokenizer, messages: list[dict], completion: str) -> tuple[list[int], torch.Tensor]:
    """Token ids of `completion` and their log-probs after the chat prompt `messages`."""
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + completion_ids], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt_ids):].unsqueeze(1)).squeeze(1)
    return completion_ids, logps.cpu()


def check_run(run_dir: Path, model_name: str | None = None) -> None:
    """Raise PMDError unless `run_dir` is a run directory `explain` can read: its config and memory store, and its
    final weights unless `model_name` names others. Checked before anything loads (a model takes minutes)."""
    if not (run_dir / "memory.sqlite").is_file() or not (run_dir / "config.yaml").is_file():
        raise PMDError(f"{run_dir}: not a PMD run directory (expected config.yaml and memory.sqlite)")
    if not model_name and not (run_dir / "final").is_dir():
        raise PMDError(f"{run_dir / 'final'}: no final weights (the run has not finished); pass --model PATH, e.g. a "
                       f"checkpoint under {run_dir / 'checkpoints'}")


def why_nothing(run_dir: Path) -> str:
    """Why `explain` found no teacher call to explain, in one line: memory never reached a teacher (none logged,
    or every logged call was shown no memory), or the attempts those calls distilled were not kept. Reads only."""
    with MemoryStore.open_existing(run_dir / "memory.sqlite", read_only=True) as store:
        calls = store.retrievals()
        shown = [r for r in calls if r.text]
        experiences = store.counts().get("experiences", 0)
    if not calls:
        return (f"{run_dir}: memory never fired: no teacher call was logged in this run (a PMD run logs one per "
                "rollout; was it trained with train.algo pmd?), so there is nothing to explain")
    if not shown:
        return (f"{run_dir}: memory never fired: all {len(calls)} logged teacher calls were shown no memory "
                f"(the store holds {experiences} experiences; nothing had been retrieved yet), so there is nothing "
                "to explain")
    return (f"{run_dir}: {len(shown)} teacher calls were shown memory, but the attempts they distilled are not in "
            "the store (with memory.mode: frozen, attempts after the freeze are not recorded; empty ones are "
            "skipped), so there is nothing to re-score")


def explain(run_dir: Path, model_name: str | None = None, limit: int = 3, top: int = 8) -> list[Explanation]:
    """Up to `limit` of the latest teacher calls that were shown memory (one per problem), each with the `top`
    tokens memory moved most. Empty when memory never fired (`why_nothing` says why)."""
    cfg = load_config(run_dir / "config.yaml")
    suite = EnvironmentSuite.from_config(cfg.env)
    out: list[Explanation] = []
    seen: set[str] = set()
    template = cfg.train.trl.get("reprompt_template", REPROMPT_TEMPLATE)  # the run's template, as its teacher read it
    # the store first (read-only: explaining never writes it), so a foreign or corrupt one fails before a model loads
    with MemoryStore.open_existing(run_dir / "memory.sqlite", read_only=True) as store:
        model, tok = load_model_and_tokenizer(model_name or str(run_dir / "final"), run_precision(cfg).storage)
        model.eval()
        records = [r for r in reversed(store.retrievals()) if r.text]
        for rec in records:
            if rec.problem_uid in seen or len(out) >= limit:
                continue
            match = [e for e in store.experiences(problem_uid=rec.problem_uid)
                     if e.step == rec.step and e.sample_index == rec.sample_index]
            if not match or not match[0].response.strip():
                continue
            seen.add(rec.problem_uid)
            exp = match[0]
            prompt = suite.format_prompt(suite.problem(rec.problem_uid))
            with_memory = student_messages(cfg.env.system_prompt, teacher_text(prompt, rec.text, "", "", template))
            without = student_messages(cfg.env.system_prompt, teacher_text(prompt, "", "", "", template))
            ids, lp_mem = completion_logprobs(model, tok, with_memory, exp.response)
            _, lp_plain = completion_logprobs(model, tok, without, exp.response)
            delta = lp_mem - lp_plain
            order = torch.argsort(delta.abs(), descending=True)[:top].tolist()
            shifts = [TokenShift(tok.decode([ids[i]]), float(delta[i])) for i in sorted(order)]
            out.append(Explanation(rec.problem_uid, rec.step, rec.text, exp.response, exp.reward,
                                   float(delta.sum()), shifts))
    return out


def format_explanations(items: list[Explanation]) -> str:
    lines = []
    for e in items:
        # the step as metrics.jsonl numbers it (memory stores it 0-based: memory.inspection.shown_step)
        lines += [f"## {e.problem_uid} (step {shown_step(e.step)}, reward {e.reward:.2f})", "",
                  "Memory the teacher saw:", "",
                  *[f"> {ln}" for ln in e.memory.splitlines()], "", f"Rollout: `{' '.join(e.response.split())[:200]}`",
                  "", f"Sum of per-token log-prob change from memory: {e.total_delta:+.2f} nats. Largest shifts:", "",
                  "| token | Δ log p (nats) |", "|---|---|",
                  *[f"| `{s.token!r}` | {s.delta:+.2f} |" for s in e.top], ""]
    return "\n".join(lines)
