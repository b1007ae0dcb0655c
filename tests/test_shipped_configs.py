"""Every config we ship validates: a typo in a committed YAML must fail here, not hours into a GPU job."""

from pathlib import Path

import pytest
import yaml

from pmd.config import load_config

ROOT = Path(__file__).parent.parent / "configs"
ACCELERATE = ROOT / "accelerate"  # accelerate launch configs, not pmd run configs
CONFIGS = sorted(p for p in ROOT.rglob("*.yaml") if ACCELERATE not in p.parents)
LAUNCH_CONFIGS = sorted(ACCELERATE.glob("*.yaml"))


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert "quickstart.yaml" in names
    assert {"qwen3-8b-livecodebench.yaml", "qwen3-8b-sciknoweval.yaml", "olmo3-7b-instruct-livecodebench.yaml",
            "olmo3-7b-instruct-sciknoweval.yaml"} <= names
    assert {p.name for p in LAUNCH_CONFIGS} == {"zero3.yaml", "fsdp.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.train.steps > 0 and cfg.env.tasks


@pytest.mark.parametrize("path", sorted((ROOT / "paper").glob("*.yaml")), ids=lambda p: p.name)
def test_paper_configs_split_their_step_over_one_8_gpu_node(path):
    """256 sequences per step over 8 ranks, in micro-batches that the YAML comment's memory arithmetic covers."""
    from pmd.trl_args import batch_layout

    t = load_config(path).train
    layout = batch_layout(t.prompts_per_step, t.num_generations, 8, t.per_device_batch_size,
                          t.gradient_accumulation_steps)
    assert layout.sequences_per_step == 256 and layout.sequences_per_rank == 32
    assert t.per_device_batch_size in (2, 4) and t.gradient_checkpointing


@pytest.mark.parametrize("path", LAUNCH_CONFIGS, ids=lambda p: p.name)
def test_accelerate_launch_configs_parse_as_accelerate_reads_them(path):
    from accelerate.commands.config.config_args import ClusterConfig

    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert {"distributed_type", "num_processes", "mixed_precision"} <= set(raw)
    cfg = ClusterConfig.from_yaml_file(str(path))  # accelerate's own loader: unknown keys are an error there
    assert cfg.num_processes == 8 and cfg.num_machines == 1 and cfg.mixed_precision == "bf16" and not cfg.use_cpu
    if path.name == "zero3.yaml":
        assert cfg.distributed_type.value == "DEEPSPEED"
        assert cfg.deepspeed_config["zero_stage"] == 3 and cfg.deepspeed_config["zero3_save_16bit_model"]
        # the Trainer fills accumulation in from pmd's batch layout; a second value here could disagree with it
        assert "gradient_accumulation_steps" not in cfg.deepspeed_config
    else:
        fsdp = cfg.fsdp_config
        assert cfg.distributed_type.value == "FSDP"
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert fsdp["fsdp_reshard_after_forward"] is True and fsdp["fsdp_version"] == 2  # FSDP2 (sharded.py)
        # keys FSDP2 has no use for (accelerate would warn and drop them): none
        assert not {"fsdp_backward_prefetch", "fsdp_forward_prefetch", "fsdp_use_orig_params",
                    "fsdp_sync_module_states"} & set(fsdp)
        assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        assert not fsdp["fsdp_activation_checkpointing"]  # pmd's train.gradient_checkpointing does it
