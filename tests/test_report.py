"""report.md from what a run recorded: hand-made files, and real runs of each algorithm on the tiny random Llama
(one per algorithm, shared by the module) whose reports must say only what those runs did."""

import json
import shutil

import pytest

from pmd.evaluate import Sample, summarise
from pmd.report import read_metrics, training_rows, write_report


def _eval(passed):
    samples = [Sample(f"p{i}", "fam", True, "r", float(p), p, True, p) for i, p in enumerate(passed)]
    return summarise(samples, k=0)


def test_report_has_accuracies_activity_and_memory(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"algo": "pmd", "steps": 2, "model": "m", "train_seconds": 5.0,
                                                       "eval_seconds": 2.0, "reflector": "feedback-stats",
                                                       "trained_greedy_accuracy": 0.5}))
    (tmp_path / "eval_base.json").write_text(json.dumps(_eval([True, False, False, False])))
    (tmp_path / "eval_trained.json").write_text(json.dumps({**_eval([True, True, False, False]), "step": 2}))
    rows = [{"step": s, "loss": 0.1, "self_distillation/reprompt_sample_fraction": a,
             "pmd/sdpo_teacher_active_fraction": b, "pmd/memory_only_active_fraction": a - b,
             "memory/experiences": 16.0 * s, "memory/insights": 2.0 * s, "memory/patterns_active": 1.0,
             "memory/patterns_retired": 0.0} for s, a, b in [(1, 0.5, 0.25), (2, 1.0, 0.25)]]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn line")
    text = write_report(tmp_path).read_text()
    assert "Greedy accuracy: base 0.250 -> trained (step 2) 0.500" in text
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


# --- reports of real tiny runs -----------------------------------------------------------------------------------

ARITH = "{min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}"


def tiny_cfg(model, run_dir, algo, steps=2):
    """Two steps on two arithmetic problems; a short greedy-only evaluation so the three runs stay in seconds."""
    from pmd.config import load_config

    return load_config(None, [f"env.tasks=[{{name: basic_arithmetic, params: {ARITH}}}]", "env.train_size=2",
                              "env.eval_size=2", f"train.steps={steps}", "train.save_steps=2",
                              "train.prompts_per_step=2", "train.num_generations=2", "train.max_completion_length=6",
                              "eval.num_samples=0", "eval.max_new_tokens=6", "memory.reflect_every=1",
                              "memory.consolidate_every=1", f"model.name_or_path={model}", f"train.algo={algo}",
                              f"run_dir={run_dir}"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_path):
    """`pmd train` (run_training: base eval, training, trained eval, report) once per algorithm."""
    from pmd.pipeline import run_training

    root = tmp_path_factory.mktemp("report-runs")
    out = {}
    for algo in ("grpo", "sdpo", "pmd"):
        run_training(tiny_cfg(tiny_model_path, root / algo, algo))
        out[algo] = root / algo
    return out


def copy_run(runs, algo, tmp_path):
    """A private copy of a shared run, for tests that change its files."""
    return shutil.copytree(runs[algo], tmp_path / algo)


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algo, reward_key", [("grpo", "reward"), ("sdpo", "self_distillation/reward_mean"),
                                              ("pmd", "self_distillation/reward_mean")])
def test_training_plot_has_reward_loss_and_teacher_curves_for_every_algorithm(runs, algo, reward_key):
    """Each algorithm logs its reward under its own key; the figure plots whichever the run logged."""
    from pmd.report import plot_training

    run_dir = runs[algo]
    assert all(reward_key in r and "loss" in r for r in training_rows(rows_of(run_dir)))
    plotted = plot_training(rows_of(run_dir), run_dir / "check.png")
    assert plotted["reward (mean over rollouts)"] == [reward_key]
    assert plotted["loss"] == ["loss"]
    teacher = plotted.get("teacher-active fraction of rollouts", [])
    assert ("self_distillation/reprompt_sample_fraction" in teacher) == (algo != "grpo")
    text = (run_dir / "report.md").read_text()
    assert "![training](training.png)" in text and (run_dir / "training.png").stat().st_size > 0
    assert f"reward (mean over rollouts) (`{reward_key}`); " in text and "; loss (`loss`); " in text


@pytest.mark.parametrize("algo", ["grpo", "sdpo", "pmd"])
def test_last_step_table_is_the_last_training_step(runs, algo, tmp_path):
    """Not the end-of-training row (train_runtime), and not a periodic-evaluation row logged after it."""
    from pmd.evaluate import append_eval

    run_dir = copy_run(runs, algo, tmp_path)
    rows = rows_of(run_dir)
    assert "train_runtime" in rows[-1]  # the row the table used to read, and find nothing in
    last = [r for r in rows if "loss" in r][-1]
    append_eval(run_dir / "metrics.jsonl", 2, json.loads((run_dir / "eval_base.json").read_text()))
    text = write_report(run_dir).read_text()
    assert "| metric (last training step: 2) | value |" in text
    assert f"| loss | {last['loss']:.3g} |" in text or f"| loss | {last['loss']:.3f} |" in text
    assert "train_runtime" not in text and "train_loss" not in text and "| eval/" not in text
    assert ("held-out accuracy (memory-free; step 0 = base model) (`eval/greedy_accuracy`, `eval/greedy_format_rate`, "
            "`eval/greedy_lenient_accuracy`)") in text


@pytest.mark.parametrize("algo", ["grpo", "sdpo", "pmd"])
def test_report_shows_where_a_step_s_time_goes(runs, algo):
    """Every phase the run timed is a row of report.md's phase table, in step order, with its mean seconds."""
    from pmd.report import phase_table

    steps = training_rows(rows_of(runs[algo]))
    timed = {k[len("time/"):] for r in steps for k in r if k.startswith("time/")}
    table = phase_table(rows_of(runs[algo]))
    assert table[0] == f"| phase (mean over {len(steps)} steps) | seconds per step | share |"
    shown = [line.split(" | ")[0][2:] for line in table[2:]]
    assert set(shown) == timed and shown[0] == "generate"
    assert ("retrieve" in shown) == ("record" in shown) == (algo == "pmd")
    assert ("teacher_context" in shown) == (algo != "grpo")
    if algo == "pmd":
        assert shown.index("retrieve") < shown.index("plan") < shown.index("render") < shown.index("record")
    mean = sum(r.get("time/generate", 0.0) for r in steps) / len(steps)
    assert f"| generate | {mean:.3f} |" in "\n".join(table)
    assert "\n".join(table) in (runs[algo] / "report.md").read_text()


def test_distillation_loss_is_shown_once(runs):
    run_dir = runs["sdpo"]
    last = training_rows(rows_of(run_dir))[-1]
    assert last["sdpo/distillation_loss"] == last["self_distillation/distillation_loss"]  # TRL logs it twice
    text = (run_dir / "report.md").read_text()
    assert text.count("distillation_loss |") == 1 and "sdpo/distillation_loss" not in text


def test_memory_table_has_one_row_per_step(runs):
    text = (runs["pmd"] / "report.md").read_text()
    table = text.split("| step | experiences |")[1].split("\n\n")[0]
    steps = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert steps == ["1", "2"]
    assert sum('"memory/experiences": 8.0' in line for line in (runs["pmd"] / "metrics.jsonl").open()) == 2


@pytest.mark.parametrize("algo", ["grpo", "sdpo", "pmd"])
def test_title_and_header_are_the_same_from_train_and_from_pmd_report(runs, algo, tmp_path, capsys):
    from pmd.cli import main

    run_dir = copy_run(runs, algo, tmp_path)
    written_by_train = (run_dir / "report.md").read_text()
    (run_dir / "report.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.md").read_text() == written_by_train
    summary = json.loads((run_dir / "summary.json").read_text())
    assert written_by_train.startswith(f"# {algo.upper()} training run\n\n"
                                       f"- algorithm: **{algo}**, steps: 2, model: `{summary['model']}`\n")
    assert "pmd pmd" not in written_by_train


def test_trained_names_the_evaluated_step(runs, tmp_path):
    """eval_trained.json's `step` against the steps trained: equal, older (training went on without evaluation),
    or not recorded (then the step is unknown)."""
    run_dir = copy_run(runs, "pmd", tmp_path)
    path = run_dir / "eval_trained.json"
    evaluated = {k: v for k, v in json.loads(path.read_text()).items() if k != "step"}
    acc = f"{evaluated['overall']['greedy_accuracy']:.3f}"

    path.write_text(json.dumps({**evaluated, "step": 2}))
    text = write_report(run_dir).read_text()
    assert f"-> trained (step 2) {acc}**" in text and "| trained (step 2) | (all) |" in text
    assert "Note:" not in text

    path.write_text(json.dumps(evaluated))
    text = write_report(run_dir).read_text()
    assert f"-> trained (step unknown) {acc}**" in text and "Note:" not in text

    path.write_text(json.dumps({**evaluated, "step": 1}))
    text = write_report(run_dir).read_text()
    assert "| trained (step 1; training continued to step 2 without evaluation) | (all) |" in text
    assert "so `final/` (step 2) has not been evaluated" in text


def test_resume_without_eval_does_not_call_the_old_model_trained(runs, tmp_path, tiny_model_path):
    """`pmd train --resume --no-eval` to step 3 keeps the step-2 eval_trained.json; the report must say so."""
    from pmd.pipeline import run_training

    run_dir = copy_run(runs, "pmd", tmp_path)
    stale = json.loads((run_dir / "eval_trained.json").read_text())
    run_training(tiny_cfg(tiny_model_path, run_dir, "pmd", steps=3), evaluate_models=False, resume=True)
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 3
    assert json.loads((run_dir / "eval_trained.json").read_text()) == stale
    text = (run_dir / "report.md").read_text()
    assert "- algorithm: **pmd**, steps: 3," in text
    # run.py records the evaluated step in eval_trained.json once it writes `step`; until then it is unknown
    label = ("trained (step 2; training continued to step 3 without evaluation)" if "step" in stale
             else "trained (step unknown; training continued to step 3 without evaluation)")
    assert f"| {label} | (all) |" in text
    assert "| trained | " not in text and "| trained (step 3)" not in text
    assert "so `final/` (step 3) has not been evaluated" in text
    assert "| metric (last training step: 3) | value |" in text


# issue 27: memory files and run dir

def test_every_file_the_report_replaces_is_checked_before_any_is_written(tmp_path):
    """Was: training.png replaced, then an error at report.md (a directory). Pure decision, then the whole check."""
    from pmd.errors import PMDError
    from pmd.report import REPORT_FILES, check_inputs, target_problem

    (tmp_path / "file.md").write_text("x")
    (tmp_path / "link.md").symlink_to(tmp_path / "file.md")
    assert target_problem(tmp_path / "new.md") is None
    assert target_problem(tmp_path / "file.md") is None
    assert target_problem(tmp_path / "link.md") is None  # a rename replaces the link itself
    for name in REPORT_FILES:
        run = tmp_path / name.replace(".", "_")
        run.mkdir()
        (run / name).mkdir()
        with pytest.raises(PMDError, match=f"{name}: is a directory"):
            check_inputs(run)


def test_an_older_run_s_teacher_active_fraction_reads_under_trl_s_name(tmp_path):
    """pmd logged TRL's reprompt fraction a second time as teacher_active_fraction; it logs it once now, and an
    older run's rows read as a new run's (the report and pmd compare read both through read_metrics)."""
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "self_distillation/teacher_active_fraction": 0.5})
                                            + "\n" + json.dumps({"step": 2, "self_distillation/reprompt_sample_fraction": 0.25,
                                                                  "self_distillation/teacher_active_fraction": 0.25}) + "\n")
    assert [r for r in read_metrics(tmp_path)] == [{"step": 1, "self_distillation/reprompt_sample_fraction": 0.5},
                                                   {"step": 2, "self_distillation/reprompt_sample_fraction": 0.25}]


def test_read_metrics_skips_lines_that_are_not_utf8(tmp_path):
    from pmd.report import read_metrics

    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1, "loss": 0.5}\n{"step": 2, "note": "caf\xe9"}\n'
                                             b'{"step": 3, "loss": 0.25}\n')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 3]
