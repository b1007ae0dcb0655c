"""`pmd probe CONFIG`: is there anything to distil? The teacher-gap probe, forward-only, no training.

Self-distillation can only move the student towards what its teacher does better. So before training, this measures
on held-out problems, greedily and with the task's own verifier, what the base model does as the student (the
problem alone, memory-free: the student's prompt) and as the teacher under each context PMD or SDPO could give it:

- `problem`: the teacher's template with nothing in it (the problem alone, reprompted);
- `experience`, `insight`, `pattern`, `similar`: one memory level alone, retrieved as the teacher retrieves
  (`memory.retrieve`, the run's `memory.retrieval`, its whole token budget for that level);
- `memory`: the full memory block, exactly as the teacher would be shown it;
- `placebo`: `prompts.PLACEBO_MEMORY`, a memory block that carries no information;
- `other_demo`: a training problem's correct worked reply, same family (does the teacher copy its numbers?);
- `same_demo`: this problem's reference answer as a worked, formatted reply, as SDPO's successful sibling would be.

Each context gets strict accuracy (`passed`), content accuracy (`lenient_correct`), the strict-format rate
(`format_ok`), and for numeric answers the margin log p(right value) - log p(value + 1) after a canonical worked
prefix (`worked_prefix`), in nats; the gap is teacher(context) - student. A context with no gap over the student
has nothing to teach, whatever training does with it.

Memory. `--memory RUN` probes a finished run's store (read-only), retrieved with that run's `memory.retrieval`
(its config.yaml, else CONFIG's). Without it the probe builds one: the base model's own sampled rollouts on the
training split, `train.steps` steps of `train.prompts_per_step` x `train.num_generations`, recorded, reflected
(feedback-stats) and consolidated (deterministic) on the run's schedule by pmd's own memory loop: the memory an
untrained policy would have written. `--no-memory` skips the memory contexts. Either way a store that holds any
held-out problem is refused: held-out problems never enter the memory.

On a held-out problem the teacher never has its own attempts or insights (those are training problems'), so the
`experience` and `insight` levels are empty there by construction; `shown` reports the fraction of problems whose
context was non-empty, and an empty context is scored as the teacher would see it (the problem alone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .config import RunConfig, load_config
from .envs import EnvironmentSuite, Problem
from .errors import PMDError
from .prompts import PLACEBO_MEMORY, REPROMPT_TEMPLATE, WORKED_ANSWER, WORKED_STEP, student_messages, teacher_text

LEVELS = ("experience", "insight", "pattern", "similar")
CONTEXTS = ("problem", *LEVELS, "memory", "placebo", "other_demo", "same_demo")
MEMORY_CONTEXTS = (*LEVELS, "memory")
# RetrievalConfig changes that leave one level on alone (the budget and every other setting are the run's)
LEVEL_ONLY: dict[str, dict[str, Any]] = {
    "experience": {"include_experience": True, "include_insights": False, "include_patterns": False},
    "insight": {"include_experience": False, "include_insights": True, "include_patterns": False,
                "max_similar_problems": 0},
    "pattern": {"include_experience": False, "include_insights": False, "include_patterns": True},
    "similar": {"include_experience": False, "include_insights": True, "include_patterns": False,
                "max_own_insights": 0},
}
METRICS = ("strict", "content", "format", "margin")


# ------------------------------------------------------------------------------------------- pure parts


_EXPRESSION = re.compile(r"\(?-?\d+(?:\.\d+)?\)?(?:\s*[-+*/×÷]\s*\(?-?\d+(?:\.\d+)?\)?)+")


def question_expression(question: str) -> str | None:
    """The longest arithmetic expression the question states ('5 + 2' in '... problem: 5 + 2 ='), or None."""
    found = [m.group(0).strip() for m in _EXPRESSION.finditer(question)]
    return max(found, key=len) if found else None


def worked_prefix(question: str) -> str:
    """The canonical worked prefix the margin is read after: the question's calculation up to '=', else the
    strict answer line's label. The value follows it after one space."""
    expression = question_expression(question)
    return WORKED_STEP.format(expression=expression, answer="").rstrip() if expression else "Answer:"


def worked_reply(question: str, answer: str, form: str | None = None) -> str:
    """`answer` as a worked, formatted reply: the calculation when the question states one, then the answer in the
    strict form `form` ('answer_line' when None), as a correct sibling would write it."""
    final = WORKED_ANSWER[form or "answer_line"].format(answer=answer)
    expression = question_expression(question)
    return f"{WORKED_STEP.format(expression=expression, answer=answer)}\n{final}" if expression else final


def next_value(answer: str) -> str | None:
    """The wrong value the margin compares against: the answer + 1, written as the answer is (integers and decimals
    only; None for anything else, whose margin is n/a)."""
    text = (answer or "").strip()
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", text):
        return None
    try:
        return format(Decimal(text) + 1, "f")
    except InvalidOperation:  # pragma: no cover (the pattern admits only numbers)
        return None


def answer_margin(logprob_of: Callable[[str], float], prefix: str, answer: str) -> float | None:
    """log p(prefix + ' ' + answer) - log p(prefix + ' ' + (answer + 1)): with the shared prefix scored alike, this
    is log p(right value | prefix) - log p(value + 1 | prefix), in nats. `logprob_of(text)` is the log-probability
    of a whole reply text. None when the answer is not a number."""
    wrong = next_value(answer)
    if wrong is None:
        return None
    return logprob_of(f"{prefix} {answer.strip()}") - logprob_of(f"{prefix} {wrong}")


def pick_problems(problems: Sequence[Problem], n: int | None) -> list[Problem]:
    """The first `n` held-out problems taken family by family in turn (so a few still cover every family); all
    when `n` is None."""
    by_family: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        by_family[p.family].append(p)
    queues = list(by_family.values())
    out: list[Problem] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out if n is None else out[:n]


def other_problem(problem: Problem, pool: Sequence[Problem], index: int) -> Problem | None:
    """A problem of the same family from `pool` (training problems), rotating with `index`; None when none."""
    same = [p for p in pool if p.family == problem.family and p.uid != problem.uid and p.answer]
    return same[index % len(same)] if same else None


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over per-problem rows (`strict`, `content`, `format` booleans; `margin` float or None; `shown`)."""
    def mean(values: list) -> float | None:
        return float(sum(values)) / len(values) if values else None

    margins = [r["margin"] for r in rows if r["margin"] is not None]
    return {"n": len(rows), "strict": mean([r["strict"] for r in rows]), "content": mean([r["content"] for r in rows]),
            "format": mean([r["format"] for r in rows]), "margin": mean(margins), "n_margin": len(margins),
            "shown": mean([r["shown"] for r in rows])}


def gap(teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, float | None]:
    """teacher - student, metric by metric (None where either is n/a)."""
    return {m: None if teacher[m] is None or student[m] is None else teacher[m] - student[m] for m in METRICS}


def aggregate(per_problem: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per context (and 'student'): overall and per-family means, and each teacher context's gap over the student."""
    out: dict[str, Any] = {}
    for name, rows in per_problem.items():
        families = sorted({r["family"] for r in rows})
        out[name] = {"overall": summarise(rows),
                     "families": {f: summarise([r for r in rows if r["family"] == f]) for f in families}}
    student = out.get("student")
    if student is not None:
        for name, entry in out.items():
            if name == "student":
                continue
            entry["overall"]["gap"] = gap(entry["overall"], student["overall"])
            for f, fam in entry["families"].items():
                fam["gap"] = gap(fam, student["families"][f])
    return out


def markdown_table(result: dict[str, Any]) -> str:
    """The probe as markdown: the student, then each teacher context with its gap over the student; then per family."""
    def num(x: float | None, signed: bool = False) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else (f"{x:+.3f}" if signed
                                                                                       else f"{x:.3f}")

    lines = [f"n = {result['n']} held-out problems ({', '.join(result['families'])}), greedy; memory: "
             f"{result['memory']['source']}", "",
             "| context | strict | content | format | margin (nats) | Δ strict | Δ content | Δ format | Δ margin | "
             "shown |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in result["contexts"].items():
        o = entry["overall"]
        d = o.get("gap") or dict.fromkeys(METRICS)
        label = "student (problem alone, student prompt)" if name == "student" else f"teacher: {name}"
        lines.append(f"| {label} | {num(o['strict'])} | {num(o['content'])} | {num(o['format'])} | "
                     f"{num(o['margin'])} | {num(d['strict'], True)} | {num(d['content'], True)} | "
                     f"{num(d['format'], True)} | {num(d['margin'], True)} | "
                     f"{'n/a' if name == 'student' else num(o['shown'])} |")
    for family in result["families"]:
        lines += ["", f"{family}: strict / content / format / margin (Δ content over the student)", "",
                  "| context | strict | content | format | margin | Δ content |", "|---|---|---|---|---|---|"]
        for name, entry in result["contexts"].items():
            f = entry["families"].get(family)
            if f is None:
                continue
            dc = (f.get("gap") or {}).get("content")
            lines.append(f"| {name} | {num(f['strict'])} | {num(f['content'])} | {num(f['format'])} | "
                         f"{num(f['margin'])} | {num(dc, True)} |")
    return "\n".join(lines)


def check_held_out_absent(store, held_out: Sequence[Problem]) -> None:
    """Refuse a store that holds attempts at or insights of any held-out problem: probing a teacher on a problem
    its memory has seen measures recall, not teaching."""
    uids = {p.uid for p in held_out}
    seen = {e.problem_uid for e in store.experiences()} | {i.problem_uid for i in store.insights(status=None)}
    leaked = sorted(uids & seen)
    if leaked:
        raise PMDError(f"the memory holds {len(leaked)} held-out problems (e.g. {leaked[0]}); the probe's held-out "
                       "problems must never enter the memory")


# ------------------------------------------------------------------------------------------- prompts


@dataclasses.dataclass(frozen=True)
class Templates:
    """The run's teacher templates: `reprompt_template` (with {memory}) and SDPO's `solution_template`."""

    reprompt: str
    solution: str

    @classmethod
    def of(cls, cfg: RunConfig) -> Templates:
        from trl.experimental.sdpo import SDPOConfig

        default = SDPOConfig.__dataclass_fields__["solution_template"].default
        return cls(cfg.train.trl.get("reprompt_template", REPROMPT_TEMPLATE),
                   cfg.train.trl.get("solution_template", default))


def teacher_messages(system_prompt: str, prompt: str, memory: str, demo: str | None,
                     templates: Templates) -> list[dict[str, str]]:
    """The teacher's chat for one context, as `teacher.TeacherRenderer.prompt` builds it (no feedback: the probe
    shows what memory or a demonstration alone gives)."""
    solution = "" if demo is None else templates.solution.format(successful_previous_attempt=demo)
    return student_messages(system_prompt, teacher_text(prompt, memory, solution, "", templates.reprompt))


def context_prompts(cfg: RunConfig, suite: EnvironmentSuite, problems: Sequence[Problem],
                    memory: dict[str, list[str]] | None, templates: Templates
                    ) -> dict[str, list[tuple[list[dict[str, str]], bool]]]:
    """Per context ('student' first), per problem: the chat the model answers and whether the context showed
    anything. `memory`: per memory context, the retrieved text per problem (None: no memory contexts)."""
    from .memory.retrieve import advised_answer_form

    train = suite.problems("train")
    out: dict[str, list[tuple[list[dict[str, str]], bool]]] = {"student": [], **{c: [] for c in CONTEXTS
                                                                              if memory or c not in MEMORY_CONTEXTS}}
    for i, p in enumerate(problems):
        system = suite.system_prompt(p, cfg.env.system_prompt)
        prompt = suite.format_prompt(p)
        form = advised_answer_form(prompt)
        other = other_problem(p, train, i)
        demos = {"same_demo": worked_reply(p.question, p.answer, form) if p.answer else None,
                 "other_demo": worked_reply(other.question, other.answer or "", form) if other else None}
        out["student"].append((student_messages(system, prompt), False))
        for name in out:
            if name == "student":
                continue
            if name in demos:
                chat = teacher_messages(system, prompt, "", demos[name], templates)
                out[name].append((chat, demos[name] is not None))
            else:
                text = PLACEBO_MEMORY if name == "placebo" else memory[name][i] if name in MEMORY_CONTEXTS else ""
                out[name].append((teacher_messages(system, prompt, text, None, templates), bool(text)))
    return out


# ------------------------------------------------------------------------------------------- memory


def retrieval_config(cfg: RunConfig, memory_db: Path | None):
    """The retrieval settings the run's teacher used: RUN/config.yaml's when the store sits in a run directory,
    else CONFIG's."""
    run_config = memory_db.parent / "config.yaml" if memory_db is not None else None
    if run_config is not None and run_config.is_file():
        return load_config(run_config).memory.retrieval
    return cfg.memory.retrieval


def retrieve_contexts(store, suite: EnvironmentSuite, problems: Sequence[Problem], retrieval,
                      count_tokens: Callable[[str], int]) -> dict[str, list[str]]:
    """Per memory context, the text the teacher would be shown for each problem (`memory.retrieve.retrieve`)."""
    from .memory.retrieve import retrieve

    configs = {"memory": retrieval, **{lvl: dataclasses.replace(retrieval, **LEVEL_ONLY[lvl]) for lvl in LEVELS}}
    return {name: [retrieve(store, p, count_tokens, c, prompt=suite.format_prompt(p)).text for p in problems]
            for name, c in configs.items()}


def build_memory(cfg: RunConfig, suite: EnvironmentSuite, model, tokenizer, path: Path,
                 count_tokens: Callable[[str], int]):
    """A memory written by the base model's own practice on the training split (no training): `train.steps` steps
    of `prompts_per_step` problems (in turn) x `num_generations` sampled rollouts, recorded, reflected
    (feedback-stats) and consolidated (deterministic) by pmd's memory loop on the run's schedule."""
    import torch

    from .evaluate import generate
    from .memory.loop import MemoryLoop
    from .memory.reflect import FeedbackStatsReflector
    from .memory.retrieve import RetrievedMemory
    from .memory.store import MemoryStore
    from .rewards import Judged

    t = cfg.train
    mem_cfg = dataclasses.replace(cfg.memory, reflector="feedback-stats", mode="evolving",
                                  consolidation=dataclasses.replace(cfg.memory.consolidation, mode="deterministic"))
    train = suite.problems("train")
    if not train:
        raise PMDError("the probe builds its memory on the training split, which is empty here; pass --memory RUN or "
                       "--no-memory")
    steps = [[train[(s * t.prompts_per_step + i) % len(train)] for i in range(t.prompts_per_step)]
             for s in range(t.steps)]
    flat = [p for step in steps for p in step for _ in range(t.num_generations)]
    torch.manual_seed(t.seed)
    responses = generate(model, tokenizer, [student_messages(suite.system_prompt(p, cfg.env.system_prompt),
                                                             suite.format_prompt(p)) for p in flat],
                         t.max_completion_length, t.temperature, False, cfg.eval.batch_size, top_p=t.top_p)
    verdicts = suite.verify_batch(flat, responses)
    store = MemoryStore(path)
    loop = MemoryLoop(store, mem_cfg, suite, count_tokens, FeedbackStatsReflector())
    per_step = t.prompts_per_step * t.num_generations
    for s in range(t.steps):
        part = slice(s * per_step, (s + 1) * per_step)
        judged = [Judged(p, r, v) for p, r, v in zip(flat[part], responses[part], verdicts[part], strict=True)]
        loop.record(s, judged, [RetrievedMemory("", [], 0, False)] * len(judged))
        loop.maybe_reflect(s)
        loop.maybe_consolidate(s)
    return store


@contextlib.contextmanager
def memory_store(cfg: RunConfig, suite: EnvironmentSuite, memory_db: Path | None, model, tokenizer,
                 count_tokens: Callable[[str], int]) -> Iterator[tuple[Any, str]]:
    """(the store to retrieve from, what it is) for the probe: a run's, opened read-only, or one built from the
    base model's rollouts in a temporary directory that is removed afterwards."""
    from .memory.store import MemoryStore

    if memory_db is not None:
        with MemoryStore.open_existing(memory_db, read_only=True) as store:
            yield store, f"the run's store {memory_db}"
        return
    with tempfile.TemporaryDirectory(prefix="pmd-probe-") as tmp:
        store = build_memory(cfg, suite, model, tokenizer, Path(tmp) / "memory.sqlite", count_tokens)
        try:
            yield store, (f"built from the base model's own rollouts on the training split ({cfg.train.steps} steps x "
                          f"{cfg.train.prompts_per_step} problems x {cfg.train.num_generations} rollouts, "
                          "feedback-stats reflection, deterministic consolidation, no training)")
        finally:
            store.close()


# ------------------------------------------------------------------------------------------- scoring


def reply_logprobs(model, tokenizer, pairs: Sequence[tuple[list[dict[str, str]], str]],
                   batch_size: int) -> list[float]:
    """log p(reply | chat) for each (chat, reply), as `explain.completion_logprobs` sums it (the chat template with
    the generation prompt, then the reply's own tokens), in right-padded batches (a causal model's positions before
    the padding are unaffected by it)."""
    import torch

    device = next(model.parameters()).device
    rows = []
    for chat, reply in pairs:
        prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
        rows.append((list(prompt), tokenizer(reply, add_special_tokens=False)["input_ids"]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(p) + len(r) for p, r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (p, r) in enumerate(chunk):
            ids[i, :len(p) + len(r)] = torch.tensor(p + r)
            mask[i, :len(p) + len(r)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for i, (p, r) in enumerate(chunk):  # log-softmax only where a reply token is predicted
                at = torch.log_softmax(logits[i, len(p) - 1:len(p) + len(r) - 1].float(), dim=-1)
                out.append(float(at.gather(1, torch.tensor(r, device=at.device).unsqueeze(1)).sum()) if r else 0.0)
    return out


def score_prompts(model, tokenizer, suite: EnvironmentSuite, cfg: RunConfig, problems: Sequence[Problem],
                  prompts: dict[str, list[tuple[list[dict[str, str]], bool]]]) -> dict[str, list[dict[str, Any]]]:
    """Per context, per problem: greedy reply scored by the verifier, and the answer margin. A chat that several
    contexts share (an empty memory level is the problem alone) is answered and scored once."""
    from .evaluate import generate

    unique: dict[str, tuple[list[dict[str, str]], Problem]] = {}
    for chats in prompts.values():
        for (chat, _), p in zip(chats, problems, strict=True):
            unique.setdefault(json.dumps(chat), (chat, p))
    keys = list(unique)
    replies = generate(model, tokenizer, [unique[k][0] for k in keys], cfg.eval.max_new_tokens, cfg.eval.temperature,
                       True, cfg.eval.batch_size)
    verdicts = suite.verify_batch([unique[k][1] for k in keys], replies)
    # the margin's texts, scored in batches: each chat's canonical prefix + the right value, then + (value + 1)
    texts: dict[tuple[str, str], float] = {}
    for k in keys:
        chat, p = unique[k]
        answer_margin(lambda text, k=k: texts.setdefault((k, text), 0.0), worked_prefix(p.question), p.answer or "")
    scores = reply_logprobs(model, tokenizer, [(unique[k][0], text) for k, text in texts], cfg.eval.batch_size)
    texts = dict(zip(texts, scores))
    scored: dict[str, dict[str, Any]] = {}
    for k, reply, v in zip(keys, replies, verdicts, strict=True):
        p = unique[k][1]
        scored[k] = {"strict": bool(v.passed), "content": bool(v.details.get("lenient_correct", v.passed)),
                     "format": bool(v.format_ok), "reply": reply,
                     "margin": answer_margin(lambda text, k=k: texts[(k, text)], worked_prefix(p.question),
                                             p.answer or "")}
    return {name: [{"uid": p.uid, "family": p.family, "shown": shown, **scored[json.dumps(chat)]}
                   for (chat, shown), p in zip(chats, problems, strict=True)]
            for name, chats in prompts.items()}


def run_probe(cfg: RunConfig, memory_db: Path | None = None, n_problems: int | None = None,
              use_memory: bool = True, model=None, tokenizer=None) -> dict[str, Any]:
    """The probe (see the module docstring). Returns the JSON-ready result: per context ('student' first) overall
    and per-family numbers with the gap over the student, n, the memory's source, and each context's first
    rendered teacher prompt. `model`/`tokenizer` default to `cfg.model` loaded as evaluation loads it."""
    import time

    import torch

    from .memory.retrieve import token_counter
    from .precision import autocast, run_precision

    start = time.time()
    suite = EnvironmentSuite.from_config(cfg.env)
    problems = pick_problems(suite.problems("eval"), n_problems)
    if not problems:
        raise PMDError("no held-out problems to probe (env.eval_size, or the task's eval split, is empty)")
    precision = run_precision(cfg)
    if model is None:
        from .models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(cfg.model.name_or_path, precision.storage)
    templates = Templates.of(cfg)
    count = token_counter(tokenizer)
    with contextlib.ExitStack() as stack:
        stack.enter_context(autocast(precision, next(model.parameters()).device))
        stack.enter_context(torch.no_grad())
        memory, source, counts = None, "none (--no-memory: memory contexts skipped)", None
        if use_memory:
            store, source = stack.enter_context(memory_store(cfg, suite, memory_db, model, tokenizer, count))
            check_held_out_absent(store, problems)
            memory = retrieve_contexts(store, suite, problems, retrieval_config(cfg, memory_db), count)
            counts = store.counts()
        prompts = context_prompts(cfg, suite, problems, memory, templates)
        per_problem = score_prompts(model, tokenizer, suite, cfg, problems, prompts)
    return {
        "model": cfg.model.name_or_path,
        "n": len(problems),
        "families": sorted({p.family for p in problems}),
        "memory": {"source": source, "counts": counts},
        "contexts": aggregate(per_problem),
        "examples": {name: tokenizer.apply_chat_template(chats[0][0], add_generation_prompt=True, tokenize=False)
                     for name, chats in prompts.items()},
        "per_problem": per_problem,
        "definitions": {
            "strict": "greedy reply passed the task's verifier (strict format and correct value)",
            "content": "the verifier's lenient_correct (correct value in any format)",
            "format": "the verifier's format_ok (strict answer format)",
            "margin": "log p(right value) - log p(value + 1) after a canonical worked prefix, nats (numeric only)",
            "gap": "teacher(context) - student, the student being the problem alone in the student's prompt",
            "shown": "fraction of problems whose context was non-empty (an empty one is the problem alone)",
        },
        "wall_s": round(time.time() - start, 1),
    }


def _is_probe(out: Path, head: bytes) -> bool:
    """Whether `out` holds an earlier probe (a JSON object with 'contexts' and 'definitions')."""
    try:
        earlier = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(earlier, dict) and {"contexts", "definitions"} <= earlier.keys()


def out_refusal(out: Path, config: Path | None, memory: Path | None) -> str | None:
    """Why `pmd probe --out OUT` must not write `out`, or None: `pmd eval --out`'s rules, for a probe's JSON (the
    config, the memory store and its sidecars, a SQLite file, or an existing file that is not an earlier probe)."""
    from .memory.dbfile import sidecars
    from .outpaths import _existing_file_refusal, _same_file

    if config is not None and _same_file(out, config):
        return "is the config file of this probe; writing the result there would destroy it (choose a .json path)"
    if memory is not None and any(_same_file(out, own) for own in (memory, *sidecars(memory))):
        return "is the memory store this probe reads (choose a .json path)"
    return _existing_file_refusal(out, _is_probe, "an earlier pmd probe", "writing the result there would destroy it",
                                  "a .json")
