"""bf16 autocast against fp32 on this CPU, in one run: the cost of an SDPO and a PMD step phase by phase, and the
learning parity of the distillation loss on one batch.

Speed. Each algorithm trains `--steps` steps of the quickstart config (SmolLM2-135M-Instruct, 4 problems x 4
rollouts) twice per precision, in the order fp32, bf16, bf16, fp32 (so a drift of the machine's speed falls on both),
each from the same seed. Seconds per phase come from the run's own `time/<phase>` logs (phases.py): generation,
rewards, teacher prompts, the loss's forward passes, backward, optimizer, EMA. The first step of each run is left
out (warm-up). Trajectories are not identical across precisions (sampling follows the logits), so the mean
completion length of each variant is printed beside its times.

Parity. On one batch (greedy-free rollouts sampled from the fp32 model, and a teacher prompt with a memory-like
note), the distillation loss (TRL's top-k loss with its tail, as pmd trains) and its gradient under bf16 autocast
are compared with fp32: relative loss difference and gradient cosine, with the logits upcast to fp32 before the
loss (what pmd does, sdpo_loss.fp32_logits) and without (the loss computed on bf16 logits, as a ZeRO-3 run got).

Usage: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/precision_step.py [--steps 4] [--algos sdpo,pmd]
       [--no-parity] [--no-speed] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}


def train_once(algo: str, mixed: str, steps: int, out: Path) -> list[dict]:
    """One short training run; its per-step metrics rows."""
    from pmd.config import load_config
    from pmd.envs import EnvironmentSuite
    from pmd.trainer import train

    cfg = load_config(str(ROOT / "configs" / "quickstart.yaml"),
                      [f"train.algo={algo}", f"train.steps={steps}", f"model.compute_dtype={mixed}",
                       f"run_dir={out}", "train.save_steps=0"])
    from pmd.models import resolve_model

    from pmd.report import read_metrics

    train(cfg, out, resolve_model(cfg.model.name_or_path), EnvironmentSuite.from_config(cfg.env))
    return [r for r in read_metrics(out) if "loss" in r and "train_runtime" not in r]


def speed(algos: list[str], steps: int) -> dict:
    results: dict = {}
    for algo in algos:
        runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
        for name in ("fp32", "bf16", "bf16", "fp32"):
            with tempfile.TemporaryDirectory() as tmp:
                rows = train_once(algo, PRECISIONS[name], steps, Path(tmp) / "run")
            runs[name].extend(rows[1:])  # the first step warms up
        results[algo] = {}
        for name, rows in runs.items():
            phases = sorted({k for r in rows for k in r if k.startswith("time/")})
            results[algo][name] = {
                "steps": len(rows),
                "phases": {p[5:]: statistics.mean(r.get(p, 0.0) for r in rows) for p in phases},
                "completion_length": statistics.mean(r.get("completions/mean_length", 0.0) for r in rows),
            }
            results[algo][name]["step"] = sum(results[algo][name]["phases"].values())
    return results


def parity() -> dict:
    """Loss and gradient of the top-k distillation loss on one batch: bf16 autocast against fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.sdpo.loss_utils import compute_topk_self_distillation_loss

    from pmd.models import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    batch, prompt_len, completion_len = 8, 64, 48
    questions = [f"What is {i} + {2 * i + 3}?" for i in range(batch)]

    def encode(texts, length):
        return tok.apply_chat_template([[{"role": "user", "content": t}] for t in texts], add_generation_prompt=True,
                                       return_tensors="pt", padding="max_length", max_length=length,
                                       return_dict=True)["input_ids"]

    prompts = encode(questions, prompt_len)
    teacher_prompts = encode(["Notes from earlier practice: add carefully, then end with 'Answer: <answer>'. " + q
                              for q in questions], prompt_len + 16)
    with torch.no_grad():
        rollouts = student.generate(prompts, attention_mask=prompts != tok.pad_token_id, max_new_tokens=completion_len,
                                    min_new_tokens=completion_len, do_sample=True, temperature=0.7,
                                    pad_token_id=tok.pad_token_id)[:, prompt_len:]

    def logits(model, prefix):
        ids = torch.cat([prefix, rollouts], 1)
        return model(input_ids=ids, attention_mask=ids != tok.pad_token_id).logits[:, -completion_len - 1:-1]

    def run(autocast: bool, upcast: bool):
        student.zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx:
            s = logits(student, prompts)
            with torch.no_grad():
                t = logits(teacher, teacher_prompts)
        if upcast:
            s, t = s.float(), t.float()
        per_token = compute_topk_self_distillation_loss(s, t, distillation_topk=20, distillation_alpha=0.5,
                                                        distillation_add_tail=True)
        loss = per_token.float().mean()
        loss.backward()
        grad = torch.cat([p.grad.flatten().double() for p in student.parameters() if p.grad is not None])
        return loss.item(), grad, (per_token < 0).float().mean().item()

    ref_loss, ref_grad, _ = run(False, True)
    out = {"fp32_loss": ref_loss, "same_work_seconds": same_work(student, teacher, run, prompts, tok)}
    for name, upcast in (("bf16, logits upcast to fp32 (pmd)", True), ("bf16, loss on bf16 logits", False)):
        loss, grad, negative = run(True, upcast)
        out[name] = {"loss_rel_diff": abs(loss - ref_loss) / abs(ref_loss),
                     "grad_cosine": torch.nn.functional.cosine_similarity(grad, ref_grad, 0).item(),
                     "negative_token_loss_fraction": negative}
    return out


def same_work(student, teacher, run, prompts, tok, repeats: int = 3) -> dict:
    """Seconds for the same work in both precisions (best of `repeats`): the loss's forward passes and backward on
    the parity batch, and sampling 48 tokens for its 8 prompts (every sequence generates all 48)."""
    import time

    import torch

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    def sample(autocast: bool):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            student.generate(prompts, attention_mask=prompts != tok.pad_token_id, max_new_tokens=48, min_new_tokens=48,
                             do_sample=True, temperature=0.7, pad_token_id=tok.pad_token_id)

    out = {}
    for name, autocast in (("fp32", False), ("bf16", True)):
        out[name] = {"loss forward + backward": best(lambda: run(autocast, True)),
                     "generation": best(lambda: sample(autocast))}
    return out


def print_speed(results: dict) -> None:
    for algo, variants in results.items():
        fp32, bf16 = variants["fp32"], variants["bf16"]
        print(f"\n{algo.upper()} step (s, mean of {fp32['steps']} / {bf16['steps']} steps after warm-up)")
        print(f"| phase | fp32 | bf16 autocast | fp32 / bf16 |\n|---|---|---|---|")
        for phase in sorted(set(fp32["phases"]) | set(bf16["phases"]), key=lambda p: -fp32["phases"].get(p, 0)):
            a, b = fp32["phases"].get(phase, 0.0), bf16["phases"].get(phase, 0.0)
            ratio = f"{a / b:.2f}x" if b > 0.005 else "-"
            print(f"| {phase} | {a:.2f} | {b:.2f} | {ratio} |")
        ratio = fp32["step"] / bf16["step"]
        print(f"| **step** | **{fp32['step']:.2f}** | **{bf16['step']:.2f}** | **{ratio:.2f}x** |")
        print(f"| completion length (tokens) | {fp32['completion_length']:.1f} | {bf16['completion_length']:.1f} | |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--algos", default="sdpo,pmd")
    parser.add_argument("--no-parity", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    from pmd.precision import cpu_supports_bf16

    print(f"CPU bf16 units (AVX512-BF16 / AMX-BF16): {cpu_supports_bf16()}")
    results: dict = {}
    if not args.no_parity:
        results["parity"] = parity()
        print("\nParity on one batch (SmolLM2, top-k distillation loss; fp32 loss "
              f"{results['parity']['fp32_loss']:.5f})\n"
              "| variant | loss rel. diff | grad cosine | tokens with loss < 0 |\n|---|---|---|---|")
        for name, r in results["parity"].items():
            if isinstance(r, dict) and "loss_rel_diff" in r:
                print(f"| {name} | {r['loss_rel_diff']:.2e} | {r['grad_cosine']:.4f} | "
                      f"{r['negative_token_loss_fraction']:.3f} |")
        same = results["parity"]["same_work_seconds"]
        print("\nThe same work in both precisions (s, best of 3)\n"
              "| work | fp32 | bf16 autocast | fp32 / bf16 |\n|---|---|---|---|")
        for work in same["fp32"]:
            a, b = same["fp32"][work], same["bf16"][work]
            print(f"| {work} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")
    if not args.no_speed:
        results["speed"] = speed(args.algos.split(","), args.steps)
        print_speed(results["speed"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
