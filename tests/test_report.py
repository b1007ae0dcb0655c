"""report.md from what a run recorded (hand-made files: no model needed)."""

import json

from pmd.evaluate import Sample, summarise
from pmd.report import read_metrics, write_report


def _eval(passed):
    samples = [Sample(f"p{i}", "fam", True, "r", float(p), p, True, p) for i, p in enumerate(passed)]
    return summarise(samples, k=0)


def test_report_has_accuracies_activity_and_memory(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"algo": "pmd", "steps": 2, "model": "m", "train_seconds": 5.0,
                                                       "eval_seconds": 2.0, "reflector": "feedback-stats"}))
    (tmp_path / "eval_base.json").write_text(json.dumps(_eval([True, False, False, False])))
    (tmp_path / "eval_trained.json").write_text(json.dumps(_eval([True, True, False, False])))
    rows = [{"step": s, "loss": 0.1, "self_distillation/teacher_active_fraction": a,
             "pmd/sdpo_teacher_active_fraction": b, "pmd/memory_only_active_fraction": a - b,
             "memory/experiences": 16.0 * s, "memory/insights": 2.0 * s, "memory/patterns_active": 1.0,
             "memory/patterns_retired": 0.0} for s, a, b in [(1, 0.5, 0.25), (2, 1.0, 0.25)]]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn line")
    text = write_report(tmp_path).read_text()
    assert "Greedy accuracy: base 0.250 -> trained 0.500" in text
    assert "Mean teacher-active fraction over the run: **0.750**" in text
    assert "same rollouts, sibling success or feedback: **0.250**" in text
    assert "| 2 | 32 | 4 | 1 | 0 |" in text
    assert "insight source (reflector): **feedback-stats**" in text
    assert len(read_metrics(tmp_path)) == 2  # the torn last line is skipped


def test_summarise_avg_and_pass_at_k():
    s = [Sample("a", "f", True, "", 1.0, True, True, True), Sample("a", "f", False, "", 0, False, True, False),
         Sample("a", "f", False, "", 1, True, True, True), Sample("b", "f", True, "", 0, False, False, False),
         Sample("b", "f", False, "", 0, False, False, False), Sample("b", "f", False, "", 0, False, False, False)]
    m = summarise(s, k=2)["overall"]
    assert m["greedy_accuracy"] == 0.5 and m["avg@2"] == 0.25 and m["pass@2"] == 0.5
    assert m["greedy_format_rate"] == 0.5 and m["sampled_format_rate"] == 0.5


def test_generate_pads_left_whatever_the_tokenizer_says(tiny_model_path):
    """Right padding silently corrupts batched generation; generate() must not depend on the caller's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pmd.evaluate import generate

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    tok.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    short = [{"role": "user", "content": "2"}]
    long = [{"role": "user", "content": "Calculate 2 + 3 + 4 + 5 ."}]
    torch.manual_seed(0)
    batched = generate(model, tok, [short, long], 4, 1.0, True, 2)
    alone = generate(model, tok, [short], 4, 1.0, True, 1)
    assert batched[0] == alone[0]
    assert tok.padding_side == "right"  # restored


def test_memory_at_inference_puts_memory_in_the_prompt_only_when_asked(monkeypatch):
    import pytest

    import pmd.evaluate as ev
    from pmd.config import EnvConfig, EvalConfig, TaskConfig
    from pmd.envs import EnvironmentSuite

    seen = []
    monkeypatch.setattr(ev, "generate", lambda model, tok, prompts, *a, **k: seen.extend(prompts) or ["Answer: 1"] * len(prompts))
    suite = EnvironmentSuite.from_config(EnvConfig(tasks=[TaskConfig(name="basic_arithmetic")], train_size=2, eval_size=2))
    problems = suite.problems("eval")
    memory = lambda p: "Lesson: add carefully."  # noqa: E731
    out = ev.evaluate(None, None, suite, problems, EvalConfig(num_samples=0, memory_at_inference=True), "",
                      memory_for=memory, show_progress=False)
    assert out["memory_at_inference"] is True
    assert all("Notes from your earlier practice on this and similar problems:\nLesson: add carefully."
               in p[-1]["content"] for p in seen)
    seen.clear()
    ev.evaluate(None, None, suite, problems, EvalConfig(num_samples=0), "", memory_for=memory, show_progress=False)
    assert seen and not any("Notes from" in p[-1]["content"] for p in seen)  # memory-free by default
    with pytest.raises(ValueError, match="needs a memory store"):
        ev.evaluate(None, None, suite, problems, EvalConfig(memory_at_inference=True), "", show_progress=False)
