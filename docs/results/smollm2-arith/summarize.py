"""Summarise pmd compare folders: one row per (folder, variant), mean ± std over seeds."""
import json, statistics, sys
from pathlib import Path

def ms(xs):
    xs = [x for x in xs if x is not None]
    if not xs: return "n/a"
    if len(xs) == 1: return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"

def mean_over_steps(rows, key):
    v = [r[key] for r in rows if key in r]
    return statistics.mean(v) if v else None

print("| sweep | variant | seeds | final greedy acc | format rate | lenient acc | teacher active | memory in context | memory-only active | memory tokens | trunc | refl. accept | CPU-min | insight in ctx | pattern in ctx |")
print("|" + "---|" * 15)
for d in sys.argv[1:]:
    d = Path(d)
    for vdir in sorted(p for p in d.iterdir() if p.is_dir()):
        seeds = sorted(vdir.glob("seed-*/summary.json"))
        if not seeds: continue
        cols = {k: [] for k in ["acc", "fmt", "len", "ta", "mc", "mo", "mt", "tr", "ra", "cpu", "li", "lp"]}
        for s in seeds:
            summ = json.loads(s.read_text())
            rows = [json.loads(l) for l in (s.parent / "metrics.jsonl").read_text().splitlines() if l.strip()]
            ev = [r for r in rows if "eval/greedy_accuracy" in r][-1]
            cols["acc"].append(ev["eval/greedy_accuracy"]); cols["fmt"].append(ev["eval/greedy_format_rate"])
            cols["len"].append(ev.get("eval/greedy_lenient_accuracy"))
            cols["ta"].append(mean_over_steps(rows, "self_distillation/teacher_active_fraction"))
            cols["mc"].append(mean_over_steps(rows, "pmd/memory_context_fraction"))
            cols["mo"].append(mean_over_steps(rows, "pmd/memory_only_active_fraction"))
            cols["mt"].append(mean_over_steps(rows, "pmd/memory_tokens_mean"))
            cols["tr"].append(mean_over_steps(rows, "pmd/teacher_prompt_truncated_fraction"))
            ra = [r["memory/reflection_acceptance_rate"] for r in rows if "memory/reflection_acceptance_rate" in r]
            cols["ra"].append(ra[-1] if ra else None)
            cols["cpu"].append(summ.get("cpu_minutes"))
            # fraction of teacher prompts holding each memory level (logged since the level budget; None before)
            cols["li"].append(mean_over_steps(rows, "pmd/memory_level_frac/insight"))
            cols["lp"].append(mean_over_steps(rows, "pmd/memory_level_frac/pattern"))
        print(f"| {d.name} | {vdir.name} | {len(seeds)} | " + " | ".join(ms(cols[k]) for k in cols) + " |")
