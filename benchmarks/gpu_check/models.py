"""Random Qwen3-shape causal LMs for the GPU check (the device has no network and SmolLM2's GGUF cannot travel):
ordinary HF folders (config.json, safetensors, the carried tokenizer) that `pmd train` loads like any local model.

  python benchmarks/gpu_check/models.py TOKENIZER_DIR OUT_ROOT NAME [NAME ...]   names: 0.5b 1.5b tiny

Shapes are Qwen3-0.6B's and Qwen3-1.7B's (GQA, head_dim 128, tied embeddings) with SmolLM2's 49,152-token
vocabulary. Weights are saved in fp32: pmd's default stores fp32 master weights and computes in bf16.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, head_dim
    "0.5b": (1024, 3072, 28, 16, 8, 128),
    "1.5b": (2048, 6144, 28, 16, 8, 128),
    "tiny": (64, 128, 2, 4, 2, 16),  # the CPU smoke test of the check itself (tests/test_gpu_check.py)
}


def build(name: str, tokenizer: Path, root: Path) -> dict:
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    hidden, inter, layers, heads, kv, head_dim = SHAPES[name]
    config = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
                         max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # GPU init: seconds, not minutes
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out = root / name
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    info = {"model": name, "parameters": sum(p.numel() for p in model.parameters()), "layers": layers,
            "hidden": hidden, "vocab": len(tok), "path": str(out)}
    (out / "gpu_check_model.json").write_text(json.dumps(info))
    return info


if __name__ == "__main__":
    tokenizer, root = Path(sys.argv[1]), Path(sys.argv[2])
    for name in sys.argv[3:]:
        print(json.dumps({"event": "model", **build(name, tokenizer, root)}), flush=True)
