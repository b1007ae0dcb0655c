"""Shared fixtures: a tiny randomly-initialised Llama built in-process (no downloads, seconds to train)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _build_tiny_model(path: Path) -> Path:
    """A 2-layer Llama with a word-level tokenizer over a small vocabulary, saved as a normal HF folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    import torch

    words = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant", "Answer", ":", "Calculate",
             "Solve", "the", "problem", ".", "'", "<answer>", "End", "your", "reply", "with", "a", "final", "line", "of",
             "form", "+", "-", "*", "/", "(", ")", "=", "is", "Notes", "from", "earlier", "practice", "on", "this",
             "and", "similar", "problems", "Correctly", "solve", "original", "question", "\n"]
    words += [str(i) for i in range(-20, 100)]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=vocab["<pad>"], eos_token_id=vocab["<|im_end|>"], bos_token_id=vocab["<|im_start|>"],
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    return _build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The real embedded model (integration tests only); skipped with the install command if it is missing."""
    from pmd.errors import ModelNotFoundError
    from pmd.models import resolve_model

    try:
        return resolve_model("smollm2-135m-instruct")
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under `root` with its mtime and content hash: what "wrote nothing" is checked against (the
    bad-input, CLI-error and run-dir tests and benchmarks/reliability.py share it)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}
