"""Per-sample evaluation rows (<eval>.samples.jsonl beside every evaluation JSON), the progress bar that names an
evaluation's cost, and the last step evaluated once when periodic evaluation is on (tiny random model, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pmd.evaluate as ev
from pmd.config import EnvConfig, EvalConfig, TaskConfig, load_config
from pmd.envs import EnvironmentSuite

ARITH = "{min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}"


def _suite(n_eval=3):
    return EnvironmentSuite.from_config(EnvConfig(tasks=[TaskConfig(name="basic_arithmetic")], train_size=2,
                                                  eval_size=n_eval))


def _fake_generate(answers):
    """generate() replaced: every prompt gets the next of `answers` (cycled); the prompts are recorded."""
    seen = []

    def gen(model, tok, prompts, max_new_tokens, temperature, greedy, batch_size, progress=None, **k):
        seen.extend(prompts)
        out = [answers[i % len(answers)] for i in range(len(prompts))]
        if progress is not None:
            progress(len(prompts))
        return out
    return gen, seen


def test_every_answer_becomes_one_row_with_prompt_reference_verdict_and_answer(monkeypatch, tmp_path, tiny_model_path):
    from transformers import AutoTokenizer

    suite = _suite()
    problems = suite.problems("eval")
    right = f"Answer: {problems[0].answer}"
    gen, _ = _fake_generate([right, "no idea", "Answer: -999"])
    monkeypatch.setattr(ev, "generate", gen)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    result = ev.evaluate(None, tok, suite, problems, EvalConfig(num_samples=2), "", show_progress=False)
    rows = result[ev.SAMPLES]
    assert len(rows) == 3 * (1 + 2)
    # problem order, the greedy answer (sample 0) first, then the sampled ones
    assert [(r["problem_id"], r["sample"], r["greedy"]) for r in rows[:3]] == [
        (problems[0].uid, 0, True), (problems[0].uid, 1, False), (problems[0].uid, 2, False)]
    first = rows[0]
    assert first["reference"] == problems[0].answer and first["response"] == right
    assert first["passed"] is True and first["format_ok"] is True and first["extracted"] == problems[0].answer
    assert first["reward"] == 1.0 and first["lenient_correct"] is True
    # the prompt as the model read it: the chat template rendered, the question in it, the generation prompt last
    assert problems[0].question in first["prompt"] and first["prompt"].endswith("<|im_start|>assistant\n")
    assert first["messages"][-1]["role"] == "user"
    vague = next(r for r in rows if r["response"] == "no idea")
    assert vague["passed"] is False and vague["extracted"] is None and vague["format_ok"] is False
    # the aggregate is unchanged by the rows: its examples keep their shape, without prompt or messages
    assert set(result["examples"][0]) == {"problem_uid", "family", "greedy", "response", "reward", "passed",
                                          "format_ok", "lenient_correct"}

    ev.write_eval(tmp_path / "eval_x.json", result)
    written = json.loads((tmp_path / "eval_x.json").read_text())
    assert ev.SAMPLES not in written and written["overall"] == result["overall"]
    lines = (tmp_path / "eval_x.samples.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_x.json", "eval_x.samples.jsonl"]  # no temp left


def test_dataset_reward_terms_reach_the_rows(monkeypatch, tmp_path):
    """A dataset task scores each reward term; each row says what every term gave."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(6)))
    fn = tmp_path / "r.py"
    fn.write_text("def short(completions, **kw):\n    return [0.5 for c in completions]\n")
    env = EnvConfig(tasks=[TaskConfig(kind="dataset", name="mine", params={
        "path": str(data), "eval_fraction": 0.5,
        "rewards": [{"verifier": "exact"}, {"function": f"{fn}:short", "weight": 0.5}]})], train_size=3, eval_size=3)
    suite = EnvironmentSuite.from_config(env)
    gen, _ = _fake_generate(["Answer: 1"])
    monkeypatch.setattr(ev, "generate", gen)
    rows = ev.evaluate(None, None, suite, suite.problems("eval"), EvalConfig(), "", show_progress=False)[ev.SAMPLES]
    assert len(rows) == 3 and all(r["prompt"] is None for r in rows)  # no tokenizer: nothing rendered
    assert all(set(r["reward_terms"]) == {"exact", "short"} and r["reward_terms"]["short"] == 0.5 for r in rows)


def test_progress_bar_names_the_cost_and_counts_every_answer(monkeypatch, capsys):
    suite = _suite(n_eval=2)
    gen, _ = _fake_generate(["Answer: 0"])
    monkeypatch.setattr(ev, "generate", gen)
    ev.evaluate(None, None, suite, suite.problems("eval"), EvalConfig(num_samples=3), "", show_progress=True,
                desc="eval step 4")
    err = capsys.readouterr().err
    assert "eval step 4 (2 problems x (1 greedy + 3 sampled))" in err and "8/8" in err
    ev.evaluate(None, None, suite, suite.problems("eval"), EvalConfig(num_samples=3), "", show_progress=False)
    assert "eval" not in capsys.readouterr().err
    assert ev._progress_bar(4, "eval", True, is_main=False) is None  # other ranks draw none


def test_eval_default_is_greedy_only():
    """One generation per problem unless asked: a periodic evaluation costs what a greedy pass costs."""
    assert EvalConfig().num_samples == 0


def _overrides(model, run_dir) -> list[str]:
    return [f"env.tasks=[{{name: basic_arithmetic, params: {ARITH}}}]", "env.train_size=2", "env.eval_size=2",
            "train.steps=2", "train.save_steps=2", "train.prompts_per_step=2", "train.num_generations=2",
            "train.max_completion_length=4", "eval.max_new_tokens=4", "train.algo=grpo",
            f"model.name_or_path={model}", f"run_dir={run_dir}"]


def _cfg(model, run_dir, **eval_):
    return load_config(None, [*_overrides(model, run_dir), *(f"eval.{k}={v}" for k, v in eval_.items())])


def test_a_run_writes_samples_for_every_evaluation_and_evaluates_the_last_step_once(tiny_model_path, tmp_path,
                                                                                     monkeypatch, capfd):
    from pmd.pipeline import run_training

    calls = []
    real = ev.evaluate_policy

    def counted(trainer, *a, **k):
        calls.append(trainer.state.global_step)
        return real(trainer, *a, **k)
    monkeypatch.setattr("pmd.step.evaluate_policy", counted)
    monkeypatch.setattr("pmd.trainer.evaluate_policy", counted)
    run = tmp_path / "run"
    run_training(_cfg(tiny_model_path, run, num_samples=1, every_steps=1))
    assert calls == [1, 2]  # steps 1 and 2 by the periodic evaluation; the final one reuses step 2's
    err = capfd.readouterr().err  # a progress bar for every evaluation, naming its cost
    assert "eval (2 problems x (1 greedy + 1 sampled)): 100%" in err  # the base model's, left on screen
    for desc in ("eval step 1", "eval step 2"):  # periodic ones clear themselves when done (leave=False)
        assert f"{desc} (2 problems x (1 greedy + 1 sampled)):" in err, desc
    assert "eval trained" not in err
    for name in ("eval_base", "evals/eval-step-1", "evals/eval-step-2", "eval_trained"):
        rows = [json.loads(line) for line in (run / f"{name}.samples.jsonl").read_text().splitlines()]
        assert len(rows) == 2 * (1 + 1), name
        assert all(r["reference"] is not None and r["prompt"].startswith("<|im_start|>") for r in rows), name
        assert ev.SAMPLES not in json.loads((run / f"{name}.json").read_text())
    trained = json.loads((run / "eval_trained.json").read_text())
    last = json.loads((run / "evals/eval-step-2.json").read_text())
    assert trained["step"] == 2 and trained["overall"] == last["overall"]
    assert (run / "eval_trained.samples.jsonl").read_text() == (run / "evals/eval-step-2.samples.jsonl").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trained_greedy_accuracy"] == last["overall"]["greedy_accuracy"]


def test_pmd_eval_out_writes_samples_beside_and_keeps_them_off_stdout(tiny_model_path, tmp_path, capsys):
    from pmd.cli import main

    out = tmp_path / "e.json"
    rc = main(["eval", "--model", str(tiny_model_path), "--set", "env.eval_size=2", "--set", "eval.max_new_tokens=2",
               "--set", f"env.tasks=[{{name: basic_arithmetic, params: {ARITH}}}]", "--out", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert ev.SAMPLES not in printed and json.loads(out.read_text()) == printed
    assert len((tmp_path / "e.samples.jsonl").read_text().splitlines()) == 2
    # a file beside it that is not earlier samples is never overwritten: refused before the model loads
    (tmp_path / "e.samples.jsonl").write_text("my notes\n")
    assert main(["eval", "--model", str(tiny_model_path), "--set", "env.eval_size=2", "--out", str(out)]) == 2
    assert "e.samples.jsonl beside it exists" in capsys.readouterr().err
    assert (tmp_path / "e.samples.jsonl").read_text() == "my notes\n"


def test_disable_tqdm_turns_every_evaluation_bar_off(tiny_model_path, tmp_path, capfd):
    from pmd.pipeline import run_training

    run_training(load_config(None, [*_overrides(tiny_model_path, tmp_path / "run"), "eval.every_steps=1",
                                    "train.trl.disable_tqdm=true"]))
    err = capfd.readouterr().err
    assert "problems x (1 greedy" not in err and (tmp_path / "run" / "eval_trained.samples.jsonl").is_file()
