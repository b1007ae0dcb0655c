"""The GPU check's results as markdown (OUT/summary.md) and JSON (OUT/summary.json), from what run.sh left in OUT:
events.jsonl (probe.py, models.py, return codes) and each run's metrics.jsonl and summary.json.

  python benchmarks/gpu_check/summarize.py OUT [--into docs/benchmarks.md]

`--into` replaces the section between the GPU-check markers of that file with summary.md (run it here, on the
files the device call brought back). MFU counts 6N FLOPs per trained student token, 2N per teacher token and 2N
per generated token (N: parameters) against the dense bf16 peak in $CHECK_PEAK_TFLOPS (default 989: an H100 or H200 SXM).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"


def load(out: Path) -> dict:
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
    runs: dict[str, dict] = {}
    for e in events:
        if "label" in e:
            runs.setdefault(e["label"], {"steps": []})
            if e["event"] == "step":
                runs[e["label"]]["steps"].append(e)
            else:
                runs[e["label"]][e["event"]] = e
    for label, run in runs.items():
        folder = out / "runs" / label
        if (folder / "metrics.jsonl").is_file():
            run["metrics"] = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
                              if line.strip() and "loss" in line and "train_runtime" not in line]
        if (folder / "summary.json").is_file():
            run["summary"] = json.loads((folder / "summary.json").read_text())
        if (folder / "files.txt").is_file():
            run["files"] = (folder / "files.txt").read_text()
    models = {e["model"]: e for e in events if e.get("event") == "model"}
    versions = next((e for e in events if e.get("event") == "versions"), {})
    return {"runs": runs, "models": models, "versions": versions}


def step_stats(run: dict, params: int | None, peak_tflops: float) -> dict:
    steps = run["steps"][1:] or run["steps"]  # the first step warms up (allocator, kernels)
    metrics = run.get("metrics", [])[1:] or run.get("metrics", [])
    if not steps:
        return {}
    seconds = statistics.mean(s["seconds"] for s in steps)
    student = statistics.mean(s["tokens"]["student"] for s in steps)
    teacher = statistics.mean(s["tokens"]["teacher"] for s in steps)
    cfg = run.get("summary", {})
    out = {"step_s": seconds, "student_tokens": student, "teacher_tokens": teacher,
           "tokens_per_s": (student + teacher) / seconds,
           "peak_allocated_gib": max((s.get("peak_allocated_gib", 0) for s in steps), default=0)}
    phases = sorted({k for m in metrics for k in m if k.startswith("time/")})
    out["phases"] = {p[5:]: statistics.mean(m.get(p, 0.0) for m in metrics) for p in phases}
    generated = statistics.mean(m.get("completions/mean_length", 0) for m in metrics) if metrics else 0
    out["generated_tokens_per_sequence"] = generated
    if params:
        sequences = 64  # check.yaml: 8 prompts x 8 generations
        flops = 6 * params * student + 2 * params * teacher + 2 * params * generated * sequences
        out["tflops"] = flops / seconds / 1e12
        out["mfu"] = out["tflops"] / peak_tflops if peak_tflops else None
    del cfg
    return out


def render(data: dict) -> str:
    peak = float(os.environ.get("CHECK_PEAK_TFLOPS", "989"))
    models = data["models"]
    lines = ["## GPU check (benchmarks/gpu_check)", ""]
    v = data["versions"]
    lines.append(f"torch {v.get('torch')} (CUDA {v.get('cuda')}), transformers {v.get('transformers')}, trl "
                 f"{v.get('trl')}, accelerate {v.get('accelerate')}, peft {v.get('peft')}. Models: " + ", ".join(
                     f"{k} ({m['parameters'] / 1e9:.2f}B)" for k, m in models.items()) + ".")
    lines += ["", "| run | rc | parameters | optimizer state | EMA teacher | loss logits | autocast | "
              "autocast in forward (student/teacher) | weights changed | EMA changed |", "|" + "---|" * 10]
    for label, run in data["runs"].items():
        p = run.get("summary", {}).get("precision", {})
        end = run.get("train_end", {})
        auto = end.get("autocast_in_forward", {})
        lines.append(f"| {label} | {run.get('rc', {}).get('rc', '-')} | {p.get('parameters', '-')} | "
                     f"{p.get('optimizer_state', '-')} | {p.get('ema_teacher', '-')} | "
                     f"{', '.join(end.get('loss_logits', [])) or '-'} | {p.get('autocast', '-')} | "
                     f"{auto.get('student', '-')}/{auto.get('teacher', '-')} | "
                     f"{end.get('student_changed', float('nan')):.3f} | {end.get('teacher_changed', float('nan')):.3f} |")
    lines += ["", "| run | step (s) | tokens/s (student + teacher) | TFLOP/s | MFU | peak allocated (GiB) |",
              "|---|---|---|---|---|---|"]
    stats = {}
    for label, run in data["runs"].items():
        size = "1.5b" if "1.5b" in label else ("0.5b" if "0.5b" in models else next(iter(models), None))
        s = stats[label] = step_stats(run, models.get(size, {}).get("parameters"), peak)
        if s:
            mfu = f"{s['mfu']:.1%}" if s.get("mfu") is not None else "-"
            lines.append(f"| {label} | {s['step_s']:.2f} | {s['tokens_per_s']:.0f} | {s.get('tflops', 0):.1f} | "
                         f"{mfu} | {s['peak_allocated_gib']:.1f} |")
    if stats.get("sdpo") and stats.get("pmd"):
        a, b = stats["sdpo"], stats["pmd"]
        lines += ["", f"PMD / SDPO step time: **{b['step_s'] / a['step_s']:.2f}x**.", "",
                  "| phase | SDPO (s) | PMD (s) |", "|---|---|---|"]
        for phase in sorted(set(a["phases"]) | set(b["phases"]), key=lambda k: -b["phases"].get(k, 0)):
            lines.append(f"| {phase} | {a['phases'].get(phase, 0):.3f} | {b['phases'].get(phase, 0):.3f} |")
    for label in ("pmd", "pmd-fsdp2", "pmd-lora"):
        files = data["runs"].get(label, {}).get("files")
        if files:
            names = sorted({w for w in files.split() if not w.endswith(":")})
            lines += ["", f"{label}: checkpoint and final/ hold " + ", ".join(names) + "."]
    skipped = [k for k, r in data["runs"].items() if "skipped" in r]
    if skipped:
        lines += ["", "Skipped for time: " + ", ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    out = Path(sys.argv[1])
    data = load(out)
    text = render(data)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(data, indent=1, default=str))
    print(text)
    if "--into" in sys.argv:
        target = Path(sys.argv[sys.argv.index("--into") + 1])
        doc = target.read_text()
        head, _, rest = doc.partition(BEGIN)
        _, _, tail = rest.partition(END)
        target.write_text(f"{head}{BEGIN}\n{text}{END}{tail}" if rest else f"{doc}\n{BEGIN}\n{text}{END}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
