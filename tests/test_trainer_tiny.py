"""Training end to end on a tiny random Llama: each algorithm's wiring, PMD's memory loop and its ablations."""

import json

import pytest

from pmd.config import load_config
from pmd.envs import EnvironmentSuite
from pmd.memory.store import MemoryStore
from pmd.trainer import build_trainer, train

ARITH = ["env.tasks=[{name: basic_arithmetic, params: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}, "
         "{name: chain_sum, params: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}]"]


def make_cfg(tmp_path, *overrides):
    base = ARITH + ["env.train_size=4", "env.eval_size=2", "train.steps=2", "train.prompts_per_step=2",
                    "train.num_generations=2", "train.max_completion_length=6", "memory.reflect_every=1",
                    "memory.consolidate_every=1", f"run_dir={tmp_path / 'run'}"]
    return load_config(None, base + list(overrides))


def run(cfg, tiny_model_path):
    from pathlib import Path

    suite = EnvironmentSuite.from_config(cfg.env)
    return train(cfg, Path(cfg.run_dir), str(tiny_model_path), suite)


@pytest.mark.parametrize("algo", ["grpo", "sdpo", "pmd"])
def test_each_algorithm_trains_and_logs(tmp_path, tiny_model_path, algo):
    cfg = make_cfg(tmp_path, f"train.algo={algo}")
    summary = run(cfg, tiny_model_path)
    assert summary["steps"] == 2
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    if algo != "grpo":
        assert all("self_distillation/reprompt_sample_fraction" in r for r in rows if "loss" in r)
    if algo == "pmd":
        assert all("memory/experiences" in r for r in rows)
        assert summary["memory"]["experiences"] == 2 * 2 * 2  # steps x prompts x generations
    # every step's row times its phases (exclusive seconds, as verl's timing_s/*); the memory's only for PMD
    phases = {"generate", "reward", "prepare_batch", "loss_forward", "backward", "optimizer"}
    phases |= {"teacher_context", "plan", "render", "ema_sync"} if algo != "grpo" else set()
    phases |= {"retrieve", "record", "reflect", "consolidate"} if algo == "pmd" else set()
    for r in (r for r in rows if "loss" in r):
        assert {k[len("time/"):] for k in r if k.startswith("time/")} == phases, r
        assert all(r[f"time/{p}"] >= 0 for p in phases) and r["time/generate"] > 0


def test_pmd_memory_grows_all_three_levels(tmp_path, tiny_model_path):
    cfg = make_cfg(tmp_path, "train.algo=pmd", "train.steps=3", "train.prompts_per_step=4")
    run(cfg, tiny_model_path)
    with MemoryStore.open_existing(tmp_path / "run" / "memory.sqlite") as store:
        counts = store.counts()
        # a random model never writes 'Answer:' lines, so the format lesson recurs across problems -> a pattern
        assert counts["experiences"] == 3 * 4 * 2
        assert counts["lessons"] >= 2
        assert counts["patterns_active"] >= 1
        assert store.retrievals(step=2), "each teacher call's retrieval is logged"
        steps = {e.step for e in store.experiences()}
        assert steps == {0, 1, 2}


def test_memory_alone_activates_the_teacher(tmp_path, tiny_model_path):
    """With no successes and no feedback, SDPO's teacher is idle; PMD's is active once memory holds something."""
    common = ["train.include_environment_feedback=false", "train.steps=3", "train.prompts_per_step=4"]
    sdpo = make_cfg(tmp_path / "s", "train.algo=sdpo", *common)
    run(sdpo, tiny_model_path)
    s_rows = [json.loads(l) for l in (tmp_path / "s" / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert all(r["self_distillation/reprompt_sample_fraction"] == 0.0 for r in s_rows)

    pmd = make_cfg(tmp_path / "p", "train.algo=pmd", *common)
    run(pmd, tiny_model_path)
    p_rows = [json.loads(l) for l in (tmp_path / "p" / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert p_rows[0]["self_distillation/reprompt_sample_fraction"] == 0.0  # step 1: memory is still empty
    assert p_rows[-1]["self_distillation/reprompt_sample_fraction"] > 0.0
    assert p_rows[-1]["pmd/memory_only_active_fraction"] > 0.0
    assert all(r["pmd/sdpo_teacher_active_fraction"] == 0.0 for r in p_rows)  # SDPO's rule: no success, no feedback


def test_frozen_memory_stops_growing(tmp_path, tiny_model_path):
    cfg = make_cfg(tmp_path, "train.algo=pmd", "train.steps=3", "memory.mode=frozen", "memory.freeze_after_steps=1")
    summary = run(cfg, tiny_model_path)
    assert summary["memory"]["experiences"] == 1 * 2 * 2  # only step 0 was recorded


def test_frozen_teacher_uses_initial_weights(tmp_path, tiny_model_path):
    cfg = make_cfg(tmp_path, "train.algo=pmd", "train.teacher_model_kind=base")
    suite = EnvironmentSuite.from_config(cfg.env)
    from pathlib import Path

    trainer, loop = build_trainer(cfg, str(tiny_model_path), suite, Path(cfg.run_dir))
    assert trainer.args.teacher_model_kind == "base"
    assert trainer.teacher_model is not trainer.model
    live = make_cfg(tmp_path / "live", "train.algo=pmd")
    trainer2, _ = build_trainer(live, str(tiny_model_path), suite, Path(live.run_dir))
    assert trainer2.args.teacher_model_kind == "ema"
    loop.store.close()


def test_memory_load_from_seeds_a_copy(tmp_path, tiny_model_path):
    first = make_cfg(tmp_path / "a", "train.algo=pmd")
    run(first, tiny_model_path)
    src = tmp_path / "a" / "run" / "memory.sqlite"
    before = src.read_bytes()
    second = make_cfg(tmp_path / "b", "train.algo=pmd", "memory.mode=frozen", f"memory.load_from={src}")
    summary = run(second, tiny_model_path)
    assert summary["memory"]["experiences"] == 8  # loaded, then never grown
    assert src.read_bytes() == before


def test_code_and_sciknoweval_tasks_train_with_pmd(tmp_path, tiny_model_path):
    """The paper's environments plug into the same loop: HumanEval (sandboxed) and SciKnowEval rows."""
    import json as _json

    rows = [{"question": f"Which option is number {i}?", "choices": {"text": ["one", "two"], "label": ["A", "B"]},
             "answerKey": "A", "domain": "Physics", "type": "mcq-2-choices"} for i in range(8)]
    ske = tmp_path / "ske.jsonl"
    ske.write_text("\n".join(_json.dumps(r) for r in rows), encoding="utf-8")
    cfg = load_config(None, [
        "env.tasks=[{kind: code, name: humaneval, params: {max_problems: 4}}, "
        f"{{kind: sciknoweval, name: ske, params: {{path: '{ske}', eval_fraction: 0.25}}}}]",
        "train.algo=pmd", "train.steps=2", "train.prompts_per_step=2", "train.num_generations=2",
        "train.max_completion_length=6", "memory.reflect_every=1", "memory.consolidate_every=1",
        f"run_dir={tmp_path / 'run'}",
    ])
    summary = run(cfg, tiny_model_path)
    assert summary["memory"]["experiences"] == 8
    with MemoryStore.open_existing(tmp_path / "run" / "memory.sqlite") as store:
        families = {e.family for e in store.experiences()}
        feedback = [e.feedback for e in store.experiences()]
    assert families <= {"humaneval", "ske"} and families
    assert all(f for f in feedback)


def test_lora_trains_adapters_and_saves_merged_weights(tmp_path, tiny_model_path):
    from transformers import AutoModelForCausalLM

    cfg = make_cfg(tmp_path, "train.algo=pmd", "train.lora_r=4", "train.steps=1")
    suite = EnvironmentSuite.from_config(cfg.env)
    from pathlib import Path

    trainer, loop = build_trainer(cfg, str(tiny_model_path), suite, Path(cfg.run_dir))
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    loop.store.close()
    summary = run(make_cfg(tmp_path / "r", "train.algo=pmd", "train.lora_r=4", "train.steps=1"), tiny_model_path)
    merged = AutoModelForCausalLM.from_pretrained(summary["final_model"])
    assert not any("lora_" in n for n, _ in merged.named_parameters())


@pytest.mark.parametrize("reflector", ["policy", "separate"])
def test_model_reflection_runs_inside_training(tmp_path, tiny_model_path, reflector):
    """Reflection by the policy itself, or by a separate model named in the config, through batched generation."""
    name = "policy" if reflector == "policy" else str(tiny_model_path)
    cfg = make_cfg(tmp_path, "train.algo=pmd", f"memory.reflector={name}", "memory.reflection_max_tokens=8")
    summary = run(cfg, tiny_model_path)
    assert summary["reflector"] == name
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # a random model writes no parseable 'Strategy:'/'Lesson:' lines: everything proposed is rejected, and logged
    assert rows[-1]["memory/reflection_proposed_total"] >= 2  # one reflection per problem with new attempts
    assert rows[-1]["memory/reflection_acceptance_rate"] == 0.0
    assert summary["memory"]["insights"] == 0


def test_verdicts_travel_on_the_step_record_from_score_to_after_update():
    """`score` opens the step's record with this rank's verdicts; `teacher_context` reads it only for the same batch
    (a mismatch fails loudly rather than pairing rollouts with the wrong verdicts); `after_update` closes it."""
    from types import SimpleNamespace

    from pmd.config import EnvConfig, TaskConfig
    from pmd.step import Phases, PMDStep

    suite = EnvironmentSuite.from_config(EnvConfig(tasks=[TaskConfig(name="basic_arithmetic")], train_size=2, eval_size=1))
    uids = [p.uid for p in suite.problems("train")]
    step = PMDStep(suite, Phases.for_algo("sdpo"))
    reward = step.reward_function()
    assert reward.__name__ == "env_reward"  # TRL's rewards/env_reward metrics keep their name
    scores = reward(prompts=[None, None], completions=["Answer: 1", "no answer"], problem_uid=uids,
                    trainer_state=SimpleNamespace(global_step=5))
    rec = step.record
    assert rec.step == 5 and [j.problem.uid for j in rec.judged] == uids
    assert [j.verdict.reward for j in rec.judged] == scores
    with pytest.raises(RuntimeError, match="of 3 rollouts just scored, found 2"):
        step.teacher_context({}, [None] * 3, None, trl_rule=None)
    step.after_update(SimpleNamespace(global_step=6, max_steps=8), SimpleNamespace())
    assert step.record is None
    with pytest.raises(RuntimeError, match="found none"):  # the next step's teacher never reads this step's verdicts
        step.teacher_context({}, [None] * 2, None, trl_rule=None)


@pytest.mark.parametrize("algo, teacher, memory", [("grpo", False, False), ("sdpo", True, False), ("pmd", True, True)])
def test_every_algorithm_runs_the_same_step_with_phases_off(tmp_path, tiny_model_path, algo, teacher, memory):
    from pathlib import Path

    from pmd.step import PMDStep
    from pmd.teacher import StepTeacherContext
    from pmd.trainer import build_trainer

    cfg = make_cfg(tmp_path, f"train.algo={algo}")
    trainer, loop = build_trainer(cfg, str(tiny_model_path), EnvironmentSuite.from_config(cfg.env), Path(cfg.run_dir))
    step = trainer.pmd_step
    assert isinstance(step, PMDStep) and (step.phases.teacher, step.phases.memory) == (teacher, memory)
    assert (step.memory is loop) and ((loop is not None) == memory)
    assert trainer.reward_funcs[0].__name__ == "env_reward"
    assert isinstance(getattr(trainer, "teacher_context_builder", None), StepTeacherContext) == teacher
    assert trainer.distillation_normalization == cfg.train.distillation_normalization if teacher else True
    if loop is not None and loop.store is not None:
        loop.store.close()


def test_distillation_normalization_on_a_tiny_model(tmp_path, tiny_model_path):
    """Half the samples inactive: `active_tokens` gives the loss of the active samples alone (the SDPO reference's
    token mean), `all_samples` TRL's own value, half of it (inactive rows count as 0 in TRL's mean)."""
    from pathlib import Path

    import torch
    from trl.experimental.sdpo import SDPOTrainer as TRLSDPOTrainer

    cfg = make_cfg(tmp_path, "train.algo=sdpo")
    assert cfg.train.distillation_normalization == "active_tokens"  # the default
    trainer, _ = build_trainer(cfg, str(tiny_model_path), EnvironmentSuite.from_config(cfg.env), Path(cfg.run_dir))
    assert trainer.distillation_normalization == "active_tokens"
    trainer.model.eval()  # no gradient-accumulation scaling in compute_loss; the tiny Llama has no dropout
    torch.manual_seed(0)
    B, P, T = 4, 3, 5
    vocab = trainer.model.config.vocab_size
    inputs = {
        "prompt_ids": torch.randint(10, vocab, (B, P)), "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": torch.randint(10, vocab, (B, T)), "completion_mask": torch.ones(B, T, dtype=torch.long),
        "teacher_input_ids": torch.randint(10, vocab, (B, P + 2 + T)),
        "teacher_attention_mask": torch.ones(B, P + 2 + T, dtype=torch.long),
        "self_distillation_mask": torch.tensor([1.0, 0.0, 1.0, 0.0]),
    }
    inputs["teacher_input_ids"][:, -T:] = inputs["completion_ids"]
    active = {k: v[[0, 2]] for k, v in inputs.items()}

    def loss(normalization, batch):
        trainer.distillation_normalization = normalization
        with torch.no_grad():
            return trainer.compute_loss(trainer.model, batch).item()

    alone = loss("all_samples", active)
    assert alone > 0 and loss("active_tokens", active) == pytest.approx(alone, rel=1e-5)
    assert loss("active_tokens", inputs) == pytest.approx(alone, rel=1e-5)
    assert loss("all_samples", inputs) == pytest.approx(alone / 2, rel=1e-5)
    with torch.no_grad():
        logits = trainer._compute_teacher_student_logits(trainer.model, trainer.teacher_model, inputs)
        trl_value = TRLSDPOTrainer._compute_self_distillation_loss(trainer, trainer.model, inputs, logits).item()
    assert loss("all_samples", inputs) == pytest.approx(trl_value, rel=1e-6)


def test_sdpo_and_pmd_honour_the_new_sdpo_options(tmp_path, tiny_model_path):
    from pathlib import Path

    from pmd.prompts import REPROMPT_TEMPLATE

    suite = None
    for algo in ("sdpo", "pmd"):
        cfg = make_cfg(tmp_path / algo, f"train.algo={algo}", "train.remove_thinking_from_demonstration=true",
                       "train.distillation_normalization=all_samples")
        suite = suite or EnvironmentSuite.from_config(cfg.env)
        trainer, loop = build_trainer(cfg, str(tiny_model_path), suite, Path(cfg.run_dir))
        assert trainer.args.remove_thinking_from_demonstration is True
        assert trainer.distillation_normalization == "all_samples"
        assert (trainer.args.reprompt_template == REPROMPT_TEMPLATE) == (algo == "pmd")
        if loop is not None:
            loop.store.close()


def test_active_tokens_with_a_teacher_server_is_refused(tmp_path):
    """TRL's server loss is a second method the override does not cover: refused, in one line, before training."""
    from pmd.errors import ConfigError
    from pmd.trl_args import trl_config

    cfg = make_cfg(tmp_path, "train.algo=sdpo", "train.trl={use_teacher_server: true}")
    with pytest.raises(ConfigError, match="train.distillation_normalization: active_tokens is not implemented for "
                                          "train.trl.use_teacher_server"):
        trl_config(cfg, str(tmp_path / "out"))
    ok = make_cfg(tmp_path, "train.algo=sdpo", "train.distillation_normalization=all_samples",
                  "train.trl={use_teacher_server: true}")
    assert trl_config(ok, str(tmp_path / "out")).use_teacher_server
