"""`pmd probe`: the teacher-gap probe (probe.py) on the tiny random model, and its pure parts."""

import json
from pathlib import Path

import pytest

from pmd.cli import main
from pmd.config import load_config
from pmd.envs import EnvironmentSuite
from pmd.errors import PMDError
from pmd.memory.store import Experience, MemoryStore
from pmd.probe import (CONTEXTS, MEMORY_CONTEXTS, Templates, aggregate, answer_margin, build_memory,
                       check_held_out_absent, context_prompts, markdown_table, next_value, pick_problems,
                       question_expression, reply_logprobs, retrieve_contexts, run_probe, worked_prefix,
                       worked_reply)
from pmd.prompts import PLACEBO_MEMORY, memory_block, teacher_text
from conftest import snapshot

TASKS = ["env.tasks=[{name: basic_arithmetic, params: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}, "
         "{name: chain_sum, params: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}]"]


def make_cfg(tmp_path, model, *overrides):
    base = TASKS + [f"model.name_or_path={model}", "env.train_size=4", "env.eval_size=2", "train.steps=2",
                    "train.prompts_per_step=2", "train.num_generations=2", "train.max_completion_length=6",
                    "eval.max_new_tokens=6", "memory.reflect_every=1", "memory.consolidate_every=1",
                    f"run_dir={tmp_path / 'run'}"]
    return load_config(None, base + list(overrides))


# ------------------------------------------------------------------------------------------- pure parts


def test_margin_on_a_hand_built_case():
    """log p(right value) - log p(value + 1) after the prefix, from a hand-made scorer of whole reply texts."""
    logp = {"5 + 2 = 7": -0.25, "5 + 2 = 8": -3.0, "Answer: -3": -1.0, "Answer: -2": -0.5, "Answer: 2.5": -2.0,
            "Answer: 3.5": -2.0}
    assert answer_margin(logp.__getitem__, "5 + 2 =", "7") == pytest.approx(2.75)
    assert answer_margin(logp.__getitem__, "Answer:", "-3") == pytest.approx(-0.5)  # -3 + 1 = -2, not -4
    assert answer_margin(logp.__getitem__, "Answer:", "2.5") == pytest.approx(0.0)
    assert answer_margin(logp.__getitem__, "Answer:", "Paris") is None  # not a number: n/a, never scored
    assert [next_value(a) for a in ("7", "-1", "9", "0.25", " 12 ", "3/4", "x")] == ["8", "0", "10", "1.25", "13",
                                                                                      None, None]


def test_worked_prefix_and_reply():
    chain = "State the final answer to the following arithmetic problem: 5 + 2 ="
    assert question_expression(chain) == "5 + 2"
    assert worked_prefix(chain) == "5 + 2 ="
    assert worked_reply(chain, "7") == "5 + 2 = 7\nAnswer: 7"
    assert worked_reply(chain, "7", "boxed") == "5 + 2 = 7\n\\boxed{7}"
    assert question_expression("Calculate -3 * 5.") == "-3 * 5"
    gcd = "Find the Greatest Common Divisor (GCD) of these numbers: 26, 38."
    assert question_expression(gcd) is None
    assert worked_prefix(gcd) == "Answer:" and worked_reply(gcd, "2") == "Answer: 2"


def test_pick_problems_takes_families_in_turn():
    from pmd.envs import Problem

    ps = [Problem(f"a/{i}", "a", "q") for i in range(3)] + [Problem(f"b/{i}", "b", "q") for i in range(2)]
    assert [p.uid for p in pick_problems(ps, 3)] == ["a/0", "b/0", "a/1"]
    assert len(pick_problems(ps, None)) == 5 and len(pick_problems(ps, 99)) == 5


def test_aggregate_gap_is_teacher_minus_student():
    def row(fam, strict, content, fmt, margin, shown=True):
        return {"family": fam, "strict": strict, "content": content, "format": fmt, "margin": margin, "shown": shown}

    out = aggregate({"student": [row("a", False, True, False, 1.0, False), row("b", False, False, True, None, False)],
                     "same_demo": [row("a", True, True, True, 4.0), row("b", True, True, True, None)]})
    s, t = out["student"]["overall"], out["same_demo"]["overall"]
    assert (s["strict"], s["content"], s["format"], s["margin"], s["n_margin"]) == (0.0, 0.5, 0.5, 1.0, 1)
    assert t["gap"] == {"strict": 1.0, "content": 0.5, "format": 0.5, "margin": 3.0}
    assert out["same_demo"]["families"]["b"]["gap"]["margin"] is None  # no numeric answer: n/a, not 0
    assert "gap" not in s


def test_batched_reply_logprobs_match_explains_one_at_a_time(tiny_model_path):
    """The margin's scorer: right-padded batches give each reply's log-prob as one unpadded forward does."""
    from pmd.explain import completion_logprobs
    from pmd.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_path), device="cpu")
    pairs = [([{"role": "user", "content": "Calculate 2 + 3 ."}], "2 + 3 = 5"),
             ([{"role": "system", "content": "Solve the problem ."},
              {"role": "user", "content": "Calculate 7 - 1 - 2 ."}],
              "Answer : 4"),
             ([{"role": "user", "content": "Calculate 2 + 3 ."}], "2 + 3 = 6")]
    batched = reply_logprobs(model, tok, pairs, batch_size=2)
    one_by_one = [float(completion_logprobs(model, tok, chat, text)[1].sum()) for chat, text in pairs]
    assert batched == pytest.approx(one_by_one, abs=1e-4)
    assert batched[0] != pytest.approx(batched[2], abs=1e-6)  # the value matters


# ------------------------------------------------------------------------------------------- rendering


def test_placebo_and_same_problem_demo_render_as_specified(tmp_path, tiny_model_path):
    cfg = make_cfg(tmp_path, tiny_model_path)
    suite = EnvironmentSuite.from_config(cfg.env)
    problems = pick_problems(suite.problems("eval"), 2)
    memory = {name: [f"Lesson: {name} line."] * len(problems) for name in MEMORY_CONTEXTS}
    prompts = context_prompts(cfg, suite, problems, memory, Templates.of(cfg))
    assert list(prompts) == ["student", *CONTEXTS]
    for i, p in enumerate(problems):
        question = suite.format_prompt(p)
        user = {name: chats[i][0][-1]["content"] for name, chats in prompts.items()}
        assert user["student"] == question  # the student: the problem alone, no template
        assert user["problem"] == teacher_text(question, "", "", "")
        assert user["placebo"] == teacher_text(question, PLACEBO_MEMORY, "", "")
        assert memory_block(PLACEBO_MEMORY) in user["placebo"]
        demo = worked_reply(p.question, p.answer)
        assert demo.endswith(f"Answer: {p.answer}") and question_expression(p.question) in demo
        assert user["same_demo"] == teacher_text(question, "", f"\nCorrect solution:\n\n{demo}\n\n", "")
        assert user["memory"] == teacher_text(question, "Lesson: memory line.", "", "")
        other = user["other_demo"]
        assert "Correct solution" in other and f"{p.question}" in other and demo not in other
        assert [chats[i][1] for chats in prompts.values()] == [False, False] + [True] * (len(CONTEXTS) - 1)


def test_retrieval_per_level_from_a_runs_store(tmp_path, tiny_model_path):
    """A run's store: each level alone shows only its own lines; the full block is pmd's retrieval."""
    from pmd.memory.retrieve import retrieve

    cfg = make_cfg(tmp_path, tiny_model_path)
    suite = EnvironmentSuite.from_config(cfg.env)
    train = [p for p in suite.problems("train") if p.family == "basic_arithmetic"][:2]
    held_out = [p for p in suite.problems("eval") if p.family == "basic_arithmetic"]
    with MemoryStore(tmp_path / "memory.sqlite") as store:
        ids = [store.upsert_insight(p.uid, p.family, "lesson", "Recompute the sum before answering.", "t", [], 0,
                                    tag="wrong_value") for p in train]
        store.add_pattern("lesson", "In basic_arithmetic problems, recompute the result before answering.", ids, 2, 0)
        count = lambda text: len(text.split())  # noqa: E731
        texts = retrieve_contexts(store, suite, held_out, cfg.memory.retrieval, count)
        check_held_out_absent(store, held_out)
        assert texts["memory"] == [retrieve(store, p, count, cfg.memory.retrieval, prompt=suite.format_prompt(p)).text
                                   for p in held_out]
        for i in range(len(held_out)):
            assert texts["pattern"][i].startswith("Pattern across problems") and "\n" not in texts["pattern"][i]
            assert texts["similar"][i].startswith("Lesson from a similar problem")
            assert texts["experience"][i] == texts["insight"][i] == ""  # a held-out problem has no own past
            assert "Pattern across problems" in texts["memory"][i]


def test_a_store_holding_a_held_out_problem_is_refused(tmp_path, tiny_model_path):
    cfg = make_cfg(tmp_path, tiny_model_path)
    suite = EnvironmentSuite.from_config(cfg.env)
    held_out = suite.problems("eval")
    with MemoryStore(tmp_path / "memory.sqlite") as store:
        p = held_out[1]
        store.add_experiences([Experience(p.uid, p.family, "q", "Answer: 1", 1.0, True, "Correct.", 0, 0)])
        with pytest.raises(PMDError, match="held-out problems must never enter the memory"):
            check_held_out_absent(store, held_out)
        check_held_out_absent(store, [held_out[0]])  # only the probed problems count


# ------------------------------------------------------------------------------------------- end to end


def test_built_memory_holds_training_problems_only(tmp_path, tiny_model_path):
    from pmd.memory.retrieve import token_counter
    from pmd.models import load_model_and_tokenizer

    cfg = make_cfg(tmp_path, tiny_model_path)
    suite = EnvironmentSuite.from_config(cfg.env)
    model, tok = load_model_and_tokenizer(str(tiny_model_path), device="cpu")
    store = build_memory(cfg, suite, model, tok, tmp_path / "built.sqlite", token_counter(tok))
    try:
        train = {p.uid for p in suite.problems("train")}
        seen = {e.problem_uid for e in store.experiences()}
        assert seen and seen <= train
        assert len(store.experiences()) == 2 * 2 * 2  # steps x prompts_per_step x num_generations
        assert {i.problem_uid for i in store.insights(status=None)} <= train
        check_held_out_absent(store, suite.problems("eval"))
    finally:
        store.close()


def test_probe_end_to_end_on_the_tiny_model(tmp_path, tiny_model_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg(tmp_path, tiny_model_path)
    result = run_probe(cfg, n_problems=2)
    assert result["n"] == 2 and result["families"] == ["basic_arithmetic", "chain_sum"]
    assert list(result["contexts"]) == ["student", *CONTEXTS]
    assert "base model's own rollouts" in result["memory"]["source"] and result["memory"]["counts"]["experiences"] == 8
    for name, entry in result["contexts"].items():
        o = entry["overall"]
        assert o["n"] == 2 and set(entry["families"]) == {"basic_arithmetic", "chain_sum"}
        assert all(0.0 <= o[m] <= 1.0 for m in ("strict", "content", "format"))
        assert o["n_margin"] == 2 and isinstance(o["margin"], float)  # both answers are integers
        assert (name == "student") == ("gap" not in o)
    assert PLACEBO_MEMORY in result["examples"]["placebo"]
    assert "Correct solution" in result["examples"]["same_demo"]
    assert result["contexts"]["same_demo"]["overall"]["shown"] == 1.0
    table = markdown_table(result)
    assert table.count("\n| teacher: ") == len(CONTEXTS) and "| student (problem alone" in table

    # the command: a table on stdout, the JSON with --out
    _cfg_file(tmp_path, tiny_model_path)
    assert main(["probe", "cfg.yaml", "--problems", "2", "--no-memory", "--out", "probe.json"]) == 0
    out = capsys.readouterr().out
    assert "| teacher: placebo |" in out and "| teacher: pattern |" not in out
    saved = json.loads(Path("probe.json").read_text())
    assert list(saved["contexts"]) == ["student", "problem", "placebo", "other_demo", "same_demo"]
    assert saved["memory"]["counts"] is None


def _cfg_file(tmp_path, model):
    from pmd.config import save_config

    save_config(make_cfg(tmp_path, model), tmp_path / "cfg.yaml")


@pytest.mark.parametrize("argv, words", [
    (["probe", "cfg.yaml", "--out", "cfg.yaml"], ["--out cfg.yaml", "config file"]),
    (["probe", "cfg.yaml", "--memory", "nowhere"], ["--memory nowhere", "no memory store"]),
    (["probe", "cfg.yaml", "--memory", "run", "--no-memory"], ["--memory and --no-memory"]),
    (["probe", "cfg.yaml", "--out", "notes.txt"], ["--out notes.txt", "not an earlier pmd probe"]),
])
def test_bad_probe_input_is_one_line_and_writes_nothing(argv, words, tmp_path, tiny_model_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _cfg_file(tmp_path, tiny_model_path)
    (tmp_path / "notes.txt").write_text("my notes\n", encoding="utf-8")
    before = snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pmd: error: ")
    for word in words:
        assert word in err[0]
    assert snapshot(tmp_path) == before
